"""Run functions on real threads released together, and collect what they raise."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["pin_to_own_cpu", "run_together", "usable_cpus"]

R = TypeVar("R")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pin_to_own_cpu(index: int) -> None:
    """Pin the calling thread to CPU ``index`` modulo the CPUs it may use (Linux only).

    Two threads started together are often placed on one core by the scheduler
    (Linux wakes a thread on its waker's CPU), and threads that take turns on
    one core never overlap in time: there is then no concurrency to observe.
    Pinning each to its own CPU makes them run in parallel when the machine can.
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})


def run_together(
    fns: Sequence[Callable[[], R]],
    *,
    pin: bool = False,
    sequential: bool = False,
    timeout: float = 120.0,
) -> list[R]:
    """Run each function on its own thread, all released by one Barrier; return their results.

    Every exception a function raises is collected; if any did, they are raised
    together as an ExceptionGroup once all threads ended. ``pin`` puts each
    thread on its own CPU (see pin_to_own_cpu). ``sequential`` runs them one
    after another instead, each started after the previous one was joined.
    A thread still running ``timeout`` seconds after the start is reported as
    a TimeoutError (and left running: a thread cannot be stopped from outside).
    """
    results: list[R | None] = [None] * len(fns)
    errors: list[BaseException] = []
    barrier = threading.Barrier(1 if sequential else len(fns))

    def body(index: int, fn: Callable[[], R]) -> None:
        try:
            if pin:
                pin_to_own_cpu(index)
            barrier.wait()
            results[index] = fn()
        except BaseException as error:  # collected, re-raised by the caller's thread
            errors.append(error)

    threads = [
        threading.Thread(target=body, args=(i, fn), name=f"ftmap-worker-{i}", daemon=True)
        for i, fn in enumerate(fns)
    ]
    if not sequential:
        for thread in threads:
            thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        if sequential:
            thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            errors.append(TimeoutError(f"{thread.name} still running after {timeout} s"))
    if errors:
        raise BaseExceptionGroup(f"{len(errors)} of {len(fns)} threads failed", errors)
    return results  # type: ignore[return-value]
