"""run_threads: a stress runner with real threads, seeded, bounded in time."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .._threads import run_together

__all__ = ["RunResult", "ThreadResult", "run_threads"]

R = TypeVar("R")


@dataclass
class ThreadResult(Generic[R]):
    """What one thread did: its index, the values its calls returned, how long it ran."""

    index: int
    results: list[R] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def calls(self) -> int:
        return len(self.results)


@dataclass
class RunResult(Generic[R]):
    """The seed that replays the run, and each thread's ThreadResult in index order."""

    seed: int
    threads: list[ThreadResult[R]]

    @property
    def calls(self) -> int:
        return sum(t.calls for t in self.threads)


def run_threads(
    fn: Callable[[int, random.Random], R],
    threads: int = 4,
    *,
    iterations: int | None = None,
    duration: float | None = None,
    seed: int | None = None,
    timeout: float = 120.0,
    pin: bool = False,
) -> RunResult[R]:
    """Call ``fn(index, rng)`` on ``threads`` real threads released together by a Barrier.

    Each thread gets its index and its own ``random.Random`` seeded from
    ``seed`` (random when None; it is in the result and in every error, so a
    failure can be replayed). ``fn`` is called ``iterations`` times per
    thread, or repeatedly until ``duration`` seconds have passed, or once when
    neither is given. Every exception from every thread is collected and
    raised together as an ExceptionGroup once all threads ended; a thread
    still running after ``timeout`` seconds is reported as a TimeoutError.
    ``pin`` puts each thread on its own CPU where the machine allows.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    if iterations is not None and duration is not None:
        raise ValueError("give iterations or duration, not both")
    if iterations is not None and iterations < 0:
        raise ValueError(f"iterations must be >= 0, not {iterations}")
    if seed is None:
        seed = random.randrange(2**32)
    outcomes: list[ThreadResult[R]] = [ThreadResult(i) for i in range(threads)]
    stop = threading.Event()

    def body(outcome: ThreadResult[R]) -> None:
        rng = random.Random(seed * 1_000_003 + outcome.index)
        started = time.perf_counter()

        # After a failure elsewhere, a thread finishes the call it is in and makes no more.
        # The loops live in their own functions: on 3.13 a loop's back-edge inside a `try` can
        # fall outside the exception table (python/cpython#130279), and an asynchronous
        # exception delivered there would skip the handler that stops the other threads.
        def timed() -> None:
            deadline = started + (duration or 0.0)
            while time.perf_counter() < deadline and not stop.is_set():
                outcome.results.append(fn(outcome.index, rng))

        def counted() -> None:
            for call in range(1 if iterations is None else iterations):
                if call and stop.is_set():
                    break
                outcome.results.append(fn(outcome.index, rng))

        try:
            (counted if duration is None else timed)()
        except BaseException:
            stop.set()
            raise
        finally:
            outcome.seconds = time.perf_counter() - started

    def bind(outcome: ThreadResult[R]) -> Callable[[], None]:
        return lambda: body(outcome)

    try:
        run_together([bind(o) for o in outcomes], pin=pin, timeout=timeout)
    except BaseExceptionGroup as group:
        stop.set()
        raise BaseExceptionGroup(f"{group.message} (seed {seed})", list(group.exceptions)) from None
    return RunResult(seed, outcomes)
