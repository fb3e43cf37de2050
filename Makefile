# make demo | make test | make bench | make lint: each installs what it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A native llama.cpp build segfaults on these VMs (AMX); build it portably.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install test demo lint bench clean docs

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet -e ".[dev,engine]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src

docs: install
	$(PY) scripts/gen_cli_docs.py

demo: install
	./scripts/demo.sh

# One benchmark module at a time (2 cores: never measure two things at once), then the report.
bench: install
	$(PY) -m bench.serving
	$(PY) -m bench.startup
	$(PY) -m bench.run
	$(PY) -m bench.pull
	$(PY) -m bench.api
	$(PY) -m bench.reliability
	$(PY) -m bench.report

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
