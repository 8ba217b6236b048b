# msiforge: set-up and entry points.  `make run` and `make test` do all set-up
# themselves (Debian packages as root, the Python venv), idempotently.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
DEBS   := qemu-system-x86 busybox-static cpio kmod gcc-12 make flex bison bc \
          libelf-dev libssl-dev dwarves dpkg-dev xz-utils perl python3-venv \
          gcc-aarch64-linux-gnu qemu-system-arm device-tree-compiler
# Commands that prove the packages above are present.
NEEDED := qemu-system-x86_64 busybox cpio depmod x86_64-linux-gnu-gcc-12 make flex bison bc \
          dpkg-deb apt-get xz perl pahole aarch64-linux-gnu-gcc qemu-system-aarch64 dtc
# arm64 boards: the guest's static busybox is Debian's busybox-static:arm64,
# downloaded into msiforge's cache (never installed).
FOREIGN := arm64 busybox-static

.PHONY: all setup deps run test test-fast bench clean

all: setup

setup: deps $(STAMP)

deps:
	@./.ci/ensure-debs $(DEBS) -- $(NEEDED)
	@./.ci/ensure-arch $(FOREIGN)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,vng]'
	@touch $@

run: setup
	$(VENV)/bin/msiforge run

test: setup
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not vm and not build"

bench: setup
	$(VENV)/bin/python bench/bench.py

clean:
	rm -rf $(VENV) runs build *.egg-info
