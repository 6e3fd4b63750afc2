# make test: everything CI runs. make demo: the five map races, shown.
# make bench: the comparison matrix (python -m ftmap.bench) into docs/bench/, in its own
# venv with the optional C maps and matplotlib; make bench-bars: the issues' speed bars.
# The free-threaded interpreter is found or built by ci/free-threaded-python
# (cached outside the repo); the GIL build is the machine's python3.

GIL_PYTHON ?= python3
FT_VENV    := .venv-ft
GIL_VENV   := .venv-gil
BENCH_VENV := .venv-bench
FT         := $(FT_VENV)/bin/python
GIL        := $(GIL_VENV)/bin/python
BENCH      := $(BENCH_VENV)/bin/python
PIP_FLAGS  := --quiet --disable-pip-version-check -c ci/constraints.txt --only-binary=watchfiles,hypothesis
PYTEST     := -m pytest -p no:cacheprovider

.PHONY: test lint test-ft test-parallel test-gil demo bench bench-quick bench-bars clean

test: lint test-ft test-parallel test-gil

$(FT_VENV)/.installed: pyproject.toml ci/constraints.txt ci/free-threaded-python
	rm -rf $(FT_VENV)
	"$$(ci/free-threaded-python)" -m venv $(FT_VENV)
	$(FT) -m pip install $(PIP_FLAGS) -e '.[test]'
	touch $@

$(GIL_VENV)/.installed: pyproject.toml ci/constraints.txt
	rm -rf $(GIL_VENV)
	$(GIL_PYTHON) -m venv $(GIL_VENV)
	$(GIL) -m pip install $(PIP_FLAGS) -e '.[test,lint]'
	touch $@

# Wheels only: the C maps must come as cp313t wheels, never built here.
$(BENCH_VENV)/.installed: pyproject.toml ci/constraints.txt ci/free-threaded-python
	rm -rf $(BENCH_VENV)
	"$$(ci/free-threaded-python)" -m venv $(BENCH_VENV)
	$(BENCH) -m pip install $(PIP_FLAGS) --only-binary=:all: -e '.[bench]'
	touch $@

lint: $(GIL_VENV)/.installed
	$(GIL_VENV)/bin/ruff check src tests benchmarks
	$(GIL_VENV)/bin/ruff format --check src tests benchmarks
	$(GIL_VENV)/bin/mypy

# The whole suite, stress tests included, on the free-threaded build (GIL asserted off).
test-ft: $(FT_VENV)/.installed
	$(FT) $(PYTEST) tests

# The unit tests again, each run by 4 threads at once (pytest-run-parallel).
test-parallel: $(FT_VENV)/.installed
	$(FT) $(PYTEST) tests/unit --parallel-threads=4

# The unit tests on the GIL build: ftmap must be correct there too.
test-gil: $(GIL_VENV)/.installed
	$(GIL) $(PYTEST) tests/unit -n 2

demo: $(FT_VENV)/.installed
	$(FT) -m ftmap.scenarios

bench: $(BENCH_VENV)/.installed
	$(BENCH) -m ftmap.bench --out docs/bench

bench-quick: $(BENCH_VENV)/.installed
	$(BENCH) -m ftmap.bench --quick --out ftmap-bench

bench-bars: $(FT_VENV)/.installed
	$(FT) benchmarks/unsafe_overhead.py
	$(FT) benchmarks/syncmap.py
	$(FT) benchmarks/shardedmap.py
	$(FT) benchmarks/snapshotmap.py

clean:
	rm -rf $(FT_VENV) $(GIL_VENV) $(BENCH_VENV) build src/*.egg-info
