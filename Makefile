# make test: everything CI runs. make demo: the five map races, shown.
# make tsan: the stress tests against the C core under ThreadSanitizer (also part of make test).
# make wheel: sdist + wheel, the wheel installed into a fresh free-threaded venv and checked.
# make bench: the comparison matrix (python -m ftmap.bench) into docs/bench/, in its own
# venv with the optional C maps and matplotlib; make bench-bars: the issues' speed bars;
# make bench-scaling: issue 12's bars through per-thread handles; make bench-handles: their curves.
# The interpreters are found or built by ci/free-threaded-python and ci/build-cpython
# (cached outside the repo, ~/.cache/ftmap); the GIL build for pure Python is the machine's python3.
#
# The test matrix (docs/c-core.md):
#   test-ft            3.13t, C core        unit + stress
#   test-ft-pure       3.13t, pure Python   unit + stress   (FTMAP_PURE_PYTHON=1)
#   test-parallel      3.13t, C core        unit, --parallel-threads=4
#   test-parallel-pure 3.13t, pure Python   unit, --parallel-threads=4
#   test-gil           3.11,  pure Python   unit
#   test-gil313        3.13 (GIL), C core   unit
#   tsan               3.13t + TSan, C core stress (the C-core ones; see TSAN_TESTS)
# Every run states what it expects (FTMAP_EXPECT_IMPLEMENTATION): a C core that fails to build
# or import fails the session at start-up instead of silently testing pure Python twice.

GIL_PYTHON   ?= python3
FT_VENV      := .venv-ft
GIL_VENV     := .venv-gil
GIL313_VENV  := .venv-gil313
TSAN_VENV    := .venv-tsan
WHEEL_VENV   := .venv-wheel
BENCH_VENV   := .venv-bench
FT           := $(FT_VENV)/bin/python
GIL          := $(GIL_VENV)/bin/python
GIL313       := $(GIL313_VENV)/bin/python
TSAN         := $(TSAN_VENV)/bin/python
BENCH        := $(BENCH_VENV)/bin/python
PIP_FLAGS    := --quiet --disable-pip-version-check -c ci/constraints.txt --only-binary=watchfiles,hypothesis
PYTEST       := -m pytest -p no:cacheprovider
CSRC         := $(wildcard csrc/*.c csrc/*.h) setup.py MANIFEST.in
# Our own builds of the C core: warnings are errors, the test hooks are compiled in, and a
# failed build fails (a user's pip install sets none of this and falls back to pure Python).
DEV_BUILD    := FTMAP_DEV_BUILD=1
# The editable install that (re)builds the C core in place, after the venv has its deps.
CORE_INSTALL := -m pip install $(PIP_FLAGS) --no-build-isolation --no-deps -e .
EXPECT_C     := FTMAP_EXPECT_IMPLEMENTATION=c FTMAP_EXPECT_TEST_HOOKS=1
EXPECT_PY    := FTMAP_PURE_PYTHON=1 FTMAP_EXPECT_IMPLEMENTATION=python
# make tsan runs these (the stress tests of the C core; every C map adds its stress file here).
TSAN_TESTS   ?= tests/stress/test_core_ref_stress.py tests/stress/test_sync_stress.py tests/stress/test_sync_uaf_stress.py tests/stress/test_unsafe_c_stress.py tests/stress/test_sharded_stress.py tests/stress/test_sharded_c_stress.py tests/stress/test_snapshot_uaf.py tests/stress/test_snapshot_stress.py tests/stress/test_unsafe_handle_stress.py tests/stress/test_sync_handle_stress.py tests/stress/test_sharded_handle_stress.py tests/stress/test_snapshot_handle_stress.py
# TSan in CI: set to 0 to leave it out of make test (docs/c-core.md has its cost).
CI_TSAN      ?= 1

.PHONY: test lint test-ft test-ft-pure test-parallel test-parallel-pure test-gil test-gil313 \
        tsan wheel core demo bench bench-quick bench-bars bench-scaling bench-handles clean etcd \
        fleet-demo

test: lint test-ft test-ft-pure test-parallel test-parallel-pure test-gil test-gil313 \
      $(if $(filter 1,$(CI_TSAN)),tsan)

$(FT_VENV)/.installed: pyproject.toml ci/constraints.txt ci/free-threaded-python
	rm -rf $(FT_VENV)
	"$$(ci/free-threaded-python)" -m venv $(FT_VENV)
	$(FT) -m pip install $(PIP_FLAGS) setuptools
	$(DEV_BUILD) $(FT) -m pip install $(PIP_FLAGS) --no-build-isolation -e '.[test]'
	touch $@

# Rebuilds the C core in place whenever a C source, setup.py or the venv changes.
$(FT_VENV)/.core: $(FT_VENV)/.installed $(CSRC)
	$(DEV_BUILD) $(FT) $(CORE_INSTALL)
	touch $@

$(GIL_VENV)/.installed: pyproject.toml ci/constraints.txt
	rm -rf $(GIL_VENV)
	$(GIL_PYTHON) -m venv $(GIL_VENV)
	$(GIL) -m pip install $(PIP_FLAGS) setuptools
	$(GIL) -m pip install $(PIP_FLAGS) --no-build-isolation -e '.[test,lint]'
	touch $@

$(GIL313_VENV)/.installed: pyproject.toml ci/constraints.txt ci/build-cpython
	rm -rf $(GIL313_VENV)
	"$$(ci/build-cpython gil)" -m venv $(GIL313_VENV)
	$(GIL313) -m pip install $(PIP_FLAGS) setuptools
	$(DEV_BUILD) $(GIL313) -m pip install $(PIP_FLAGS) --no-build-isolation -e '.[test]'
	touch $@

$(GIL313_VENV)/.core: $(GIL313_VENV)/.installed $(CSRC)
	$(DEV_BUILD) $(GIL313) $(CORE_INSTALL)
	touch $@

core: $(FT_VENV)/.core $(GIL313_VENV)/.core

# Wheels only: the C maps must come as cp313t wheels, never built here. ftmap's own C core is
# built in place like .venv-ft's (the same flags: both venvs share src/ftmap/_core.*.so).
$(BENCH_VENV)/.installed: pyproject.toml ci/constraints.txt ci/free-threaded-python
	rm -rf $(BENCH_VENV)
	"$$(ci/free-threaded-python)" -m venv $(BENCH_VENV)
	$(BENCH) -m pip install $(PIP_FLAGS) setuptools
	$(DEV_BUILD) $(BENCH) -m pip install $(PIP_FLAGS) --only-binary=:all: --no-build-isolation -e '.[bench]'
	touch $@

# ruff, ruff format and mypy --strict on the Python; the C is compiled with warnings as errors
# by every $(...)/.core step (FTMAP_DEV_BUILD=1).
lint: $(GIL_VENV)/.installed
	$(GIL_VENV)/bin/ruff check src tests benchmarks setup.py
	$(GIL_VENV)/bin/ruff format --check src tests benchmarks setup.py
	$(GIL_VENV)/bin/mypy

# The whole suite, stress tests included, on the free-threaded build (GIL asserted off), C core.
test-ft: $(FT_VENV)/.core etcd
	$(EXPECT_C) $(FT) $(PYTEST) tests

# The whole suite again with the pure-Python maps (the reference implementation).
test-ft-pure: $(FT_VENV)/.core etcd
	$(EXPECT_PY) $(FT) $(PYTEST) tests

# The unit tests again, each run by 4 threads at once (pytest-run-parallel), both implementations.
test-parallel: $(FT_VENV)/.core
	$(EXPECT_C) $(FT) $(PYTEST) tests/unit --parallel-threads=4

test-parallel-pure: $(FT_VENV)/.core
	$(EXPECT_PY) $(FT) $(PYTEST) tests/unit --parallel-threads=4

# The unit tests on the GIL build (3.11): ftmap must be correct there too, in pure Python.
test-gil: $(GIL_VENV)/.installed
	FTMAP_EXPECT_IMPLEMENTATION=python $(GIL) $(PYTEST) tests/unit -n 2

# The unit tests on CPython 3.13's default (GIL) build, with the C core.
test-gil313: $(GIL313_VENV)/.core
	$(EXPECT_C) $(GIL313) $(PYTEST) tests/unit -n 2

# ThreadSanitizer: a free-threaded CPython 3.13.5 built with --with-thread-sanitizer (cached),
# the C core built with -fsanitize=thread, the C core's stress tests, CPython's own suppressions;
# fails on any report with a frame in ftmap's C code (ci/tsan-check).
# Populated by the free-threaded venv's pip (--prefix): pip under TSan takes minutes to set up
# a venv. The TSan venv gets pip too (the same version ensurepip bundles) for ci/tsan-run.
$(TSAN_VENV)/.installed: pyproject.toml ci/constraints.txt ci/build-cpython $(FT_VENV)/.installed
	rm -rf $(TSAN_VENV)
	"$$(ci/build-cpython tsan)" -m venv --without-pip $(TSAN_VENV)
	$(FT) -m pip install $(PIP_FLAGS) --prefix $(TSAN_VENV) --ignore-installed --no-warn-script-location \
	    pip==25.1.1 setuptools pytest pytest-timeout hypothesis
	touch $@

tsan: $(TSAN_VENV)/.installed
	ci/tsan-run $(TSAN) $(TSAN_TESTS)

# An sdist, a wheel built from it, the wheel installed into a fresh free-threaded venv:
# implementation "c", GIL off, the right tags (ci/wheel-check).
wheel: $(FT_VENV)/.installed
	ci/wheel-check "$$(ci/free-threaded-python)"

# A real etcd for tests/etcd (Debian's etcd-server, installed when missing; its service never runs).
etcd:
	@ci/etcd-server >/dev/null

demo: $(FT_VENV)/.core
	$(FT) -m ftmap.scenarios

# Processes watching one etcd prefix while a writer commits multi-key transactions.
fleet-demo: $(FT_VENV)/.core etcd
	$(FT) -m ftmap.fleet_demo --timings

bench: $(BENCH_VENV)/.installed
	$(BENCH) -m ftmap.bench --out docs/bench

bench-quick: $(BENCH_VENV)/.installed
	$(BENCH) -m ftmap.bench --quick --out ftmap-bench

# Issue 12's scaling bars through per-thread handles (both implementations), with PASS/FAIL.
bench-scaling: $(FT_VENV)/.core
	$(FT) -m ftmap.bench.scaling
	$(FT) -m ftmap.bench.scaling --values small

# The scaling curves through handles beside dict and the C peers: docs/bench/handles/.
bench-handles: $(BENCH_VENV)/.installed
	$(BENCH) -m ftmap.bench --keys 1000 --maps 'handles,dict,cereggii,ft_utils' \
	    --workloads read-only,read-mostly,balanced,disjoint --out docs/bench/handles

bench-bars: $(FT_VENV)/.core
	$(FT) benchmarks/unsafe_overhead.py
	$(FT) benchmarks/syncmap.py
	$(FT) benchmarks/shardedmap.py
	$(FT) benchmarks/snapshotmap.py
	$(FT) benchmarks/core_fnv.py
	$(FT) benchmarks/core_ref.py

clean:
	rm -rf $(FT_VENV) $(GIL_VENV) $(GIL313_VENV) $(TSAN_VENV) $(WHEEL_VENV) $(BENCH_VENV) build dist \
	       src/*.egg-info src/ftmap/*.so src/ftmap/_core_build_failure*.txt
