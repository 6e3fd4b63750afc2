"""Asynchronous-exception injection: an exception thrown into a thread at a random moment.

CPython delivers an exception set by ``PyThreadState_SetAsyncExc`` (and a
KeyboardInterrupt from a signal, in the main thread) at the next point where
the interpreter checks for pending work. In CPython 3.13 that is at a
function's entry (RESUME), at a loop's back-edge (JUMP_BACKWARD) and right
after a call returns (the CALL family, calls to C functions included): so
between any two of a pure-Python operation's calls. C code runs between
those points; an exception can only come out of it through a call it makes
to Python code (a key's ``__eq__`` or ``__hash__``, a callback).

``inject_rounds`` runs a batch of operations per round on a victim thread
while the calling thread throws ``Injected`` into it after a random delay
within the batch's usual duration, so most rounds land inside one of the
operations. After every round the test's ``check`` learns exactly how many
operations returned before the exception arrived (their effects must all be
visible) and whether the exception came out of the next one (which may have
stopped anywhere, or completed just before it arrived), and asserts what the
map must still promise: consistent content, no lock held, no completed write
lost. The victim thread ends after every round, so a thread-bound state
(a lock owner, a write claim) is also tested against its owner's exit.
"""

from __future__ import annotations

import ctypes
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Injected", "InjectionStats", "inject_rounds", "throw_into"]

S = TypeVar("S")


class Injected(BaseException):
    """The exception thrown into the victim: a BaseException, as KeyboardInterrupt is,
    so that no ``except Exception`` in the code under test can swallow it."""


def throw_into(ident: int, exception: type[BaseException]) -> bool:
    """Make ``exception`` pending in the thread with this ident; False if there is no such thread."""
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
    set_async_exc.restype = ctypes.c_int
    return bool(set_async_exc(ident, exception) == 1)


@dataclass
class InjectionStats(Generic[S]):
    """Where the exceptions landed, over all rounds."""

    seed: int
    rounds: int = 0
    inside: int = 0  # the exception came out of an operation
    between: int = 0  # it arrived between two operations, or after the last

    def __str__(self) -> str:
        return (
            f"seed {self.seed}: {self.rounds} rounds, {self.inside} exceptions out of an "
            f"operation, {self.between} between operations"
        )


def _spin_until(flag: list[bool], deadline: float) -> None:
    # A busy loop: each back-edge is a point where a pending exception is delivered.
    while not flag[0]:
        if time.monotonic() > deadline:
            raise TimeoutError("the other side of the round never came")


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _batch_duration(setup: Callable[[], S], operation: Callable[[S, int], object], batch: int) -> float:
    """The median time of a few uninterrupted batches."""
    samples = []
    for _ in range(5):
        state = setup()
        start = time.perf_counter()
        for i in range(batch):
            operation(state, i)
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def inject_rounds(
    setup: Callable[[], S],
    operation: Callable[[S, int], object],
    check: Callable[[S, int, bool], None],
    *,
    rounds: int,
    seed: int,
    batch: int = 20,
    round_timeout: float = 10.0,
) -> InjectionStats[S]:
    """Per round: state = setup(); operation(state, i) for i in range(batch) on a new victim
    thread, with ``Injected`` thrown into it at a random moment; then check(state, done, inside).

    ``done``: how many operations returned before the exception arrived; each of them
    completed and its effects must be visible. ``inside``: the exception came out of
    operation number ``done``, which may have stopped anywhere or completed just before
    (the state must be consistent either way); False when it arrived between two
    operations or after the last. ``setup`` and ``check`` run on the calling thread
    with nothing pending. The first failing check raises AssertionError naming the seed
    and round; a victim that stops answering (a deadlock) fails after ``round_timeout``.
    """
    rng = random.Random(seed)
    stats: InjectionStats[S] = InjectionStats(seed)
    duration = max(2e-6, _batch_duration(setup, operation, batch))
    # Both sides spin, so they must run on two CPUs: on one, each spin would wait out the
    # other's time slice. The caller's own affinity is restored at the end.
    original = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else None
    cpus = sorted(original or ())
    victim_cpu, injector_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)
    try:
        _pin(injector_cpu)
        for number in range(rounds):
            _round(
                setup=setup,
                operation=operation,
                check=check,
                rng=rng,
                stats=stats,
                number=number,
                duration=duration,
                batch=batch,
                round_timeout=round_timeout,
                victim_cpu=victim_cpu,
            )
    finally:
        if original is not None:
            os.sched_setaffinity(0, original)
    return stats


def _round(
    *,
    setup: Callable[[], S],
    operation: Callable[[S, int], object],
    check: Callable[[S, int, bool], None],
    rng: random.Random,
    stats: InjectionStats[S],
    number: int,
    duration: float,
    batch: int,
    round_timeout: float,
    victim_cpu: int | None,
) -> None:
    state = setup()
    delay = rng.uniform(0.0, duration)
    # inside[0] is True only while an operation runs; done[0] counts those that
    # returned. Stores to a list item are no delivery point, so the record is exact,
    # except that "inside" also covers the instant right after an operation returned.
    started, go, fired, inside, done = [False], [False], [False], [False], [0]
    outcome: dict[str, object] = {}

    def victim() -> None:
        deadline = time.monotonic() + round_timeout
        try:
            try:
                _pin(victim_cpu)
                started[0] = True
                _spin_until(go, deadline)
                for i in range(batch):
                    inside[0] = True
                    operation(state, i)
                    inside[0] = False
                    done[0] = i + 1
                _spin_until(fired, deadline)
                while time.monotonic() < deadline:  # delivered at the next back-edge at the latest
                    pass
                outcome["error"] = TimeoutError("the injected exception was never delivered")
            except Injected:
                outcome["inside"] = inside[0]
                _spin_until(fired, deadline)
        except BaseException as error:  # the operation's own failure, reported below
            outcome["error"] = error

    thread = threading.Thread(target=victim, name=f"inject-victim-{number}", daemon=True)
    thread.start()
    _spin_until(started, time.monotonic() + round_timeout)  # never throw into its start-up
    go[0] = True
    end = time.perf_counter() + delay
    while time.perf_counter() < end:  # a busy wait: sleep() cannot be this short
        pass
    throw_into(thread.ident or 0, Injected)  # a victim that already failed is reported below
    fired[0] = True
    thread.join(round_timeout)
    where = f"{stats} (round {number}, delay {delay * 1e6:.1f} us)"
    if thread.is_alive():
        raise AssertionError(f"the victim is stuck (deadlock?): {where}")
    if "error" in outcome:
        raise AssertionError(f"the operation raised: {where}") from outcome["error"]  # type: ignore[misc]
    stats.rounds += 1
    landed_inside = bool(outcome.get("inside", False))
    if landed_inside:
        stats.inside += 1
    else:
        stats.between += 1
    try:
        check(state, done[0], landed_inside)
    except BaseException as error:
        raise AssertionError(
            f"inconsistent after an injected exception ({done[0]} operations done, "
            f"{'inside' if landed_inside else 'between'}): {where}"
        ) from error
