# One-command set-up: every target creates/updates the virtual environment it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.memagent-installed

.PHONY: run test lint bench bench-deps bench-quick suite-quick clean-venv

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

BENCHMARKS := dnc_speed copy_task vec_env replay ppo_dnc continual maml_sinusoid

## Benchmarks (not tests): each prints a Markdown table and writes benchmarks/results/<name>.md.
## They need the reference packages of the `bench` extra (cpprb). `make bench` is the full set
## (hours on 2 cores); `make bench-quick` runs every benchmark's --quick smoke mode.
bench-deps: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"

bench: bench-deps
	for b in $(BENCHMARKS); do OMP_NUM_THREADS=1 $(PY) benchmarks/$$b.py || exit 1; done

bench-quick: bench-deps
	for b in $(BENCHMARKS); do OMP_NUM_THREADS=1 $(PY) benchmarks/$$b.py --quick || exit 1; done

## The benchmark suite of agents against baselines (quick: 3 seeds, small budgets).
suite-quick: $(STAMP)
	$(PY) -m memagent.bench benchmarks/suites/quick.yml --n-jobs 2

clean-venv:
	rm -rf $(VENV)
