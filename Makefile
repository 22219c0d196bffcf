# Two entry points: `make demo` and `make test`. Both create/reuse .venv and are quiet once set up.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOG := $(VENV)/install.log
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: demo test bench venv clean gpu-data gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the project into $(VENV) (first time: a few minutes; log in $(LOG))"
	@($(PIP) --upgrade "pip>=24" "setuptools>=68,<81" wheel && $(PIP) -e ".[test,detection]" \
		&& $(PY) tools/install_detectron2.py) > $(LOG) 2>&1 \
		|| { tail -n 40 $(LOG); exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	@$(PY) tools/demo.py $(ARGS)

test: $(STAMP)
	@$(PY) -m pytest -q tests

bench: $(STAMP)
	@$(PY) tools/bench_core.py

clean:
	rm -rf $(VENV) build *.egg-info

# A lent GPU machine: copy the CIFAR archive into the ignored gpu_data/ here (make gpu-data), carry it,
# and run `make gpu-check OUT=$OUT` there (its own python3, no install; see docs/benchmarks.md "GPU check").
GPU_PYTHON ?= python3
OUT ?= outputs/gpu_check

gpu-data:
	mkdir -p gpu_data && cp ../shared/data/cifar10-jpeg.tar.gz gpu_data/

gpu-check:
	PYTHONPATH=. $(GPU_PYTHON) tools/gpu_check.py --out $(OUT) --data gpu_data/cifar10-jpeg.tar.gz $(ARGS)

# Mutation check of the core tests (tests/mutants.py): plant each bug in a subprocess, run its test files,
# print mutant -> killed / survived and the total. ARGS="--jobs 2" runs two at a time, ARGS="--list" lists them.
.PHONY: mutants
mutants: $(STAMP)
	@$(PY) tests/mutants.py $(ARGS)
