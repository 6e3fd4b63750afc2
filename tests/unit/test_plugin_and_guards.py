"""The pytest plugin that fails a test for a swallowed race, and the GIL guard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FREE_THREADED

pytest_plugins = ["pytester"]

RACE_IN_A_WORKER = """
import threading
import pytest
from ftmap import UnsafeMap

class Blocking:
    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()
    def __hash__(self):
        self.entered.set()
        self.release.wait(10)
        return 1

def provoke():
    m, key = UnsafeMap(), Blocking()
    writer = threading.Thread(target=m.__setitem__, args=(key, 1))
    writer.start()
    key.entered.wait(10)
    def worker():
        try:
            m["x"] = 2
        except Exception:
            pass  # swallowed, as worker threads often do
    other = threading.Thread(target=worker)
    other.start()
    other.join()
    key.release.set()
    writer.join()

def test_swallowed():
    provoke()

@pytest.mark.ftmap_races_expected
def test_expected():
    provoke()

def test_clean():
    m = UnsafeMap(a=1)
    t = threading.Thread(target=m.__setitem__, args=("b", 2))
    t.start()
    t.join()
    assert m["b"] == 2
"""


@pytest.mark.thread_unsafe(reason="pytester changes the working directory")
def test_plugin_fails_a_test_whose_worker_swallowed_a_race(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(RACE_IN_A_WORKER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_swallowed*", "*UnsafeMap detected 1 concurrent map misuse*"])


@pytest.mark.skipif(not FREE_THREADED, reason="the GIL guard applies to free-threaded builds")
@pytest.mark.thread_unsafe(reason="starts a whole pytest session")
def test_session_fails_at_once_when_the_gil_is_forced_on(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [
            sys.executable,
            "-X",
            "gil=1",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(root),
            "-c",
            str(root / "pyproject.toml"),
            str(tmp_path / "test_nothing.py"),
            "--confcutdir",
            str(root / "tests"),
            "-p",
            "tests.conftest",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert run.returncode == 3, run.stdout + run.stderr
    assert "the GIL is enabled on a free-threaded build" in run.stdout + run.stderr
    assert "PYTHON_GIL=1 or -X gil=1" in run.stdout + run.stderr


SEEDED = """
from ftmap.testing import run_threads

def test_seeded(ftmap_seed):
    run = run_threads(lambda index, rng: rng.randrange(10**9), threads=2, seed=ftmap_seed)
    print("draws", [t.results for t in run.threads])
    assert False
"""


@pytest.mark.thread_unsafe(reason="pytester changes the working directory")
def test_ftmap_seed_is_reported_on_failure_and_replays_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SEEDED)
    first = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    first.assert_outcomes(failed=1)
    seed_line = next(line for line in first.outlines if "replay with --ftmap-seed=" in line)
    seed = seed_line.rsplit("=", 1)[1]
    draws = next(line for line in first.outlines if line.startswith("draws"))
    again = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--ftmap-seed={seed}")
    assert draws in again.outlines
    assert f"ftmap_seed was {seed}: replay with --ftmap-seed={seed}" in again.outlines
