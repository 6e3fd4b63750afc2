"""run_threads: real threads, seeded generators, every error collected, bounded in time."""

from __future__ import annotations

import random
import subprocess
import sys
import threading

import pytest

from ftmap.testing import run_threads


def test_each_thread_gets_its_index_and_a_generator_replayed_by_the_seed() -> None:
    def draw(index: int, rng: random.Random) -> tuple[int, int]:
        return index, rng.randrange(10**9)

    first = run_threads(draw, threads=3, iterations=5, seed=42)
    again = run_threads(draw, threads=3, iterations=5, seed=42)
    assert first.seed == 42
    assert [t.results for t in first.threads] == [t.results for t in again.threads]
    assert [t.index for t in first.threads] == [0, 1, 2]
    assert all(r[0] == t.index for t in first.threads for r in t.results)
    assert first.calls == 15 and all(t.calls == 5 and t.seconds >= 0 for t in first.threads)
    draws = {r[1] for t in first.threads for r in t.results}
    assert len(draws) == 15  # the threads' generators differ


def test_threads_really_run_at_once() -> None:
    # Each thread waits for all the others: this only finishes if they all run together.
    arrived = threading.Barrier(4, timeout=10)
    result = run_threads(lambda index, rng: arrived.wait(), threads=4)
    assert sorted(t.results[0] for t in result.threads) == [0, 1, 2, 3]


def test_duration_bounds_the_run() -> None:
    result = run_threads(lambda index, rng: None, threads=2, duration=0.05)
    assert all(t.calls > 0 and 0.04 < t.seconds < 5 for t in result.threads)


def test_every_exception_is_collected_with_the_seed() -> None:
    def fail_odd(index: int, rng: random.Random) -> None:
        if index % 2:
            raise ValueError(f"thread {index}")

    with pytest.raises(ExceptionGroup, match=r"2 of 4 threads failed \(seed 7\)") as caught:
        run_threads(fail_odd, threads=4, seed=7)
    assert sorted(str(e) for e in caught.value.exceptions) == ["thread 1", "thread 3"]


def test_a_failure_stops_the_other_threads_early() -> None:
    def work(index: int, rng: random.Random) -> None:
        if index == 0:
            raise RuntimeError("stop")

    with pytest.raises(ExceptionGroup):
        run_threads(work, threads=2, duration=30)  # would run 30 s if the failure did not stop it


@pytest.mark.thread_unsafe(reason="leaves a thread blocked until it is released")
def test_a_thread_that_overruns_the_timeout_is_reported() -> None:
    release = threading.Event()
    with pytest.raises(ExceptionGroup) as caught:
        run_threads(lambda index, rng: release.wait(10), threads=1, timeout=0.1)
    release.set()
    assert isinstance(caught.value.exceptions[0], TimeoutError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threads": 0}, "at least 1"),
        ({"iterations": 1, "duration": 1.0}, "not both"),
        ({"iterations": -1}, ">= 0"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_threads(lambda index, rng: None, **kwargs)  # type: ignore[arg-type]


@pytest.mark.thread_unsafe(reason="starts an interpreter")
def test_ftmap_testing_imports_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"  # any import of pytest now fails
        "import ftmap, ftmap.testing\n"
        "assert ftmap.testing.check_linearizable([]).ok\n"
        "assert 'pytest' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
