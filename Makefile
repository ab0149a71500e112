# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv if missing and (re)installs the package when setup.cfg changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist spreads test files over the cores; JAX compiles are mostly single-threaded.
PYTEST_WORKERS ?= 2
RUN_WORKDIR ?= runs/default

.PHONY: run test test-all test-cluster clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python launch.py --config=configs/default.py --workdir=$(RUN_WORKDIR)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not slow and not cluster"

test-all: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not cluster"

test-cluster: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m cluster

clean-venv:
	rm -rf $(VENV)
