# msiforge: set-up and entry points.  `make run` and `make test` do all set-up
# themselves (Debian packages as root, the Python venv), idempotently.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
# Host programs and their Debian packages: one registry, msiforge/hostprogs.py
# (run with the system python3: it needs nothing outside the standard library).
HOSTPROGS := $(PYTHON) -P msiforge/hostprogs.py

.PHONY: all setup deps deps-test run test test-all test-fast check-fresh bench mutants clean

all: setup

setup: deps $(STAMP)

deps:
	@$(HOSTPROGS) ensure

# What only some tests run (a headless browser, dkms): installed for the suites, not for `make run`.
deps-test: deps
	@$(HOSTPROGS) ensure --tests

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,vng]'
	@touch $@

run: setup
	$(VENV)/bin/msiforge run

# make test: the suite CI runs (one real boot per capability); make test-all adds
# the slow variants (marked slow).
test: setup deps-test
	$(VENV)/bin/pytest -q -m "not slow" --durations=15

test-all: setup deps-test
	$(VENV)/bin/pytest -q --durations=25

# The whole `make test` of a clean clone in a throw-away Debian 12 root with an empty cache.
check-fresh: deps
	./.ci/check-fresh

test-fast: setup
	$(VENV)/bin/pytest -q -m "not vm and not build"

bench: setup
	$(VENV)/bin/python bench/bench.py

# Mutation testing: every shipped mutant of the drivers must be killed by a scenario.
mutants: setup
	$(VENV)/bin/msiforge mutants --out runs/mutants

clean:
	rm -rf $(VENV) runs build *.egg-info
