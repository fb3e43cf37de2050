# make demo | make test | make bench | make lint: each installs what it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ENGINE := $(VENV)/bin/llama-server
ENGINE_BUILD := src/kamiwaza_cli/server/engines/build.py

.PHONY: install test durations coverage demo lint bench bench-install clean docs

# The Python packages and the engine build side by side: pip mostly waits on the network.
install:
	@$(MAKE) --no-print-directory -j2 $(STAMP) $(ENGINE)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# llama.cpp's llama-server, built from pinned sources for this machine (Metal, CUDA or the
# CPU; see the file's docstring), cached in ~/.cache/kamiwaza so a rebuild is a copy. The
# build needs only the standard library, so it runs before the venv has its packages.
$(ENGINE): $(ENGINE_BUILD) | $(PY)
	$(PYTHON) $(ENGINE_BUILD) --bin-dir $(VENV)/bin

# Two phases: everything without a bound in time on three workers (one test module per worker, so
# a module's shared server and deployment are set up once; a third worker uses the cores the others
# leave while they wait on sleeps and sockets), then the `timing` tests alone, as the machine they
# assert about. `pytest` on its own runs everything in one process.
TEST_WORKERS ?= 3
# Slowest modules first (tests/ordering.py, from tests/durations.json), not xdist's most-tests-first.
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not timing"

# Python's bytecode caches on, even where the environment turns them off: every server, CLI and
# pytest process would otherwise compile the package again, and pytest rewrite every test module's
# asserts (2 s of CPU per pytest process).
test durations coverage: export PYTHONDONTWRITEBYTECODE =

# The timing phase collects only the files that mark a test `timing` (collecting them all costs seconds).
TIMING_FILES = $$(grep -rl --include="*.py" "mark\.timing" tests)

# The ten slowest steps are printed, to see where a slow run spent its time.
test: install
	$(PY) -m pytest -q $(PYTEST_PARALLEL) --durations=10
	$(PY) -m pytest -q -m timing $(TIMING_FILES)

# Measure how long each module takes in the parallel phase, for the order of the next runs.
durations: install
	$(PY) -m pytest -q $(PYTEST_PARALLEL) --store-durations

# Line and branch coverage of the same two phases, servers and CLI subprocesses included.
# (An absolute data file: servers and engines' parents do not share the test's working directory.)
coverage: export COVERAGE_FILE := $(CURDIR)/.coverage-data/coverage
coverage: install
	rm -rf .coverage-data && mkdir .coverage-data
	$(PY) -m coverage run -m pytest -q $(PYTEST_PARALLEL)
	$(PY) -m coverage run -m pytest -q -m timing $(TIMING_FILES)
	$(PY) -m coverage combine -q
	$(PY) -m coverage report --format=total
	$(PY) -m coverage json -q -o .coverage-data/coverage.json
	$(PY) scripts/coverage_summary.py .coverage-data/coverage.json

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
	$(PY) -m bench.shared_cores
	$(PY) -m bench.report

# Two clean-clone installs with cold caches (this tree and the last llama-cpp-python one): ~15 min.
bench-install: install
	$(PY) -m bench.install
	$(PY) -m bench.report

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage-data
