# The two commands a newcomer needs: `make demo` and `make test`.
# Both create the pinned environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv demo test test-all lint docs bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c requirements-dev.lock -e ".[dev]"
	touch $@

demo: venv
	$(PY) examples/sine_maml.py

test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile

test-all: venv
	$(PY) -m pytest -q -m "slow or not slow"

lint: venv
	$(PY) -m ruff check src tests examples benchmarks
	$(PY) -m ruff format --check src tests examples benchmarks

docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
