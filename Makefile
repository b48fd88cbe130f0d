# The README's two commands: `make demo` (the main job) and `make test` (the tests).
# Both bootstrap .venv on a fresh machine; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench soak clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m raylite demo

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks docs
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

bench: $(VENV)/.bench
	$(PY) benchmarks/run.py

# 2-3 min on 2 cores: 1,000,000 tasks, 100,000 actor calls, 10,000 puts of 1 MB; fails if
# memory grows or the store is not empty at the end (CI runs it scaled: tests/test_soak.py).
soak: $(VENV)/.installed
	$(PY) benchmarks/soak.py --scale 1.0

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
