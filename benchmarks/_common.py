"""What the bar scripts share: the keys, the interpreter line, the timed thread loop, in_thread."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ftmap.bench._report import environment, interpreter_line
from ftmap.testing import run_threads

KEYS = [sys.intern(f"key-{i}") for i in range(1000)]
ROUNDS = 100
T = TypeVar("T")


def in_thread(fn: Callable[[], T], timeout: float = 600) -> T:
    """fn() run on a new thread (one that made none of what fn measures); its exception re-raised."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as error:  # handed to the caller below
            errors.append(error)

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise SystemExit(f"the other thread did not finish in {timeout:.0f} s")
    if errors:
        raise errors[0]
    return result[0]


def start(doc: str | None, default_repeat: int = 5) -> int:
    """Parse --repeat, print the interpreter line; return the number of repetitions."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=default_repeat, help="repetitions; the best is kept")
    repeat: int = parser.parse_args().repeat
    print(interpreter_line(environment()))
    return repeat


def rate(body: Callable[[int], None], threads: int, repeat: int) -> float:
    """Million operations per second over all threads, best of ``repeat`` (ROUNDS x KEYS a thread)."""
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        run_threads(lambda index, rng: body(index), threads=threads, pin=threads > 1)
        best = max(best, threads * ROUNDS * len(KEYS) / (time.perf_counter() - started) / 1e6)
    return best


def per_key(fn: Callable[[str], Any]) -> Callable[[int], None]:
    """A thread body calling fn(key) for every key, ROUNDS times: reads or increments."""

    def body(thread: int) -> None:
        keys = list(KEYS)
        for _ in range(ROUNDS):
            for k in keys:
                fn(k)

    return body
