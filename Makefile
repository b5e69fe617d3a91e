# Two entry points on a fresh machine: `make run` and `make test` (see README).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYX    := $(shell find sip media ivr engine -name '*.pyx' 2>/dev/null)
CONFIG ?= examples/demo.toml

.PHONY: run test test-fast test-pure bench build install system-deps clean

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "Cython>=3.0,<3.3" "numpy>=1.26"
	$(PIP) install -q --no-build-isolation -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Compile every .pyx in place (no-op when up to date).
build: install
	$(PY) setup.py -q build_ext --inplace -j 2

system-deps:
	bash scripts/install-system-deps.sh

run: build
	mkdir -p var
	$(VENV)/bin/ctiengine run $(CONFIG)

# Whole suite on the compiled modules, then the twin-marked tests again on the
# pure-Python twins (pytest exit 5 = no tests collected is not a failure).
test: system-deps build
	$(PY) -m pytest -q -p no:cacheprovider tests
	CTIENGINE_PUREPYTHON=1 $(PY) -m pytest -q -p no:cacheprovider -m twin tests || test $$? -eq 5

test-fast: build
	$(PY) -m pytest -q -x -m "not interop" tests

bench: system-deps build
	mkdir -p bench/results
	$(PY) -m pytest -q -p no:cacheprovider bench --benchmark-json=bench/results/micro.json
	$(PY) -m bench.report

clean:
	rm -rf build $(VENV) *.egg-info
	find sip media ivr engine -name '*.so' -delete -o -name '*.c' -delete
