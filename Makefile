# msiforge: set-up and entry points.  `make run` and `make test` do all set-up
# themselves (Debian packages as root, the Python venv), idempotently.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
DEBS   := qemu-system-x86 busybox-static cpio kmod gcc-12 make flex bison bc \
          libelf-dev libssl-dev dwarves dpkg-dev xz-utils perl python3-venv
# Commands that prove the packages above are present.
NEEDED := qemu-system-x86_64 busybox cpio depmod x86_64-linux-gnu-gcc-12 make flex bison bc \
          dpkg-deb apt-get xz perl pahole

.PHONY: all setup deps run test test-fast bench clean

all: setup

setup: deps $(STAMP)

deps:
	@./.ci/ensure-debs $(DEBS) -- $(NEEDED)

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
