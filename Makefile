# One-command set-up: every target creates/updates the virtual environment it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.memagent-installed

.PHONY: run test lint bench clean-venv

# The venv is (re)built when pyproject.toml changes. torch is pinned to 2.13.0 first so that the
# CPU wheel is taken and the package's `torch>=2.2` installs nothing more.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

## The main job.
run: $(STAMP)
	$(PY) train.py

## The test suite (what CI runs): lint, then pytest.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

## Benchmarks need the reference packages of the `bench` extra.
bench: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) benchmarks/dnc_speed.py

clean-venv:
	rm -rf $(VENV)
