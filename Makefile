# The README's two commands: `make demo` (the main job) and `make test` (the tests).
# Both bootstrap .venv on a fresh machine; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint compat bench soak clean

# make test: raylite and the dev toolchain (pytest, ruff, mypy, ray, playwright: ~650 MB).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# make demo: only what the demo runs, raylite and numpy (~60 MB, seconds), so the first line
# comes quickly on a fresh clone; no pip upgrade (the venv's own pip installs these fine).
$(VENV)/.demo: pyproject.toml
	@echo "make demo: installing raylite and numpy into $(VENV) (first run only)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[numpy]'
	touch $@

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

demo: $(VENV)/.demo
	$(PY) -m raylite demo

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks docs
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

# Only the Ray programs of tests/compat, each run three ways (`make test` runs them too).
compat: $(VENV)/.installed
	$(PY) -m pytest -q tests/compat

# Every contender in 5 interleaved rounds, then the drop-ins (14 min on the 2 loaded cores
# here). Exits 1, naming them, if raylite's ratios to multiprocessing.Pool or Ray fell below
# the record (benchmarks/recorded.json) by more than the noise; else rewrites the record.
bench: $(VENV)/.bench
	$(PY) benchmarks/run.py

# 2-3 min on 2 cores: 1,000,000 tasks, 100,000 actor calls, 10,000 puts of 1 MB; fails if
# memory grows or the store is not empty at the end (CI runs it scaled: tests/test_soak.py).
soak: $(VENV)/.installed
	$(PY) benchmarks/soak.py --scale 1.0

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
