# Two entry points: `make demo` and `make test`. Both create/reuse .venv and are quiet when set up.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade "pip>=24" "setuptools>=68,<81" wheel
	@$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	@$(PY) tools/demo.py

test: $(STAMP)
	@$(PY) -m pytest -q tests

bench: $(STAMP)
	@$(PY) tools/bench_core.py

clean:
	rm -rf $(VENV) build *.egg-info
