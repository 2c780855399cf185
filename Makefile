# The README's two commands. Each builds .venv from nothing but Python.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU torch build the tests were run with; pip takes a local wheel where one is provided.
TORCH ?= torch==2.13.0

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# jax-cuda13-plugin matching jaxlib, without its CUDA libraries: its Triton module lets jax-triton
# lower the kernels for CUDA in the tests (jax.devices() stays CPU).
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps "torch-fidelity==0.4.0"
	$(BIN)/python -m pip install -q --no-deps "jax-cuda13-plugin==$$($(BIN)/python -c 'import jaxlib; print(jaxlib.__version__)')"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python main.py --config configs/digits.py --workdir runs/digits

# pytest's exit code 5 ("no tests collected") fails too: a suite that runs nothing checks nothing.
# Two worker processes (pytest-xdist), each taking whole test files, so a module's fixture is built
# once: the suite is mostly single-threaded XLA compiles, and CI has 2 cores and 30 minutes.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) runs
