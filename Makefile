# Two entry points: `make demo` and `make test`. Both create/reuse .venv and are quiet once set up.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOG := $(VENV)/install.log
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the project into $(VENV) (first time: a few minutes; log in $(LOG))"
	@($(PIP) --upgrade "pip>=24" "setuptools>=68,<81" wheel && $(PIP) -e ".[test,detection]" \
		&& $(PY) tools/install_detectron2.py) > $(LOG) 2>&1 \
		|| { tail -n 40 $(LOG); exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	@$(PY) tools/demo.py

test: $(STAMP)
	@$(PY) -m pytest -q tests

bench: $(STAMP)
	@$(PY) tools/bench_core.py

clean:
	rm -rf $(VENV) build *.egg-info
