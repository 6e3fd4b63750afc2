"""The five classic map races, as Python code, and the demo table that shows them.

Each scenario is a pair of thread bodies sharing one map, and a measure of
the damage they did. It runs with a plain dict (the damage), with UnsafeMap
(the detection) and with a fix (zero damage). Each fix is run with UnsafeMap
too, so it is shown to be synchronised, not merely lucky:

1. iterate-while-write: one thread iterates the map while another writes it.
2. check-then-act: ``if k not in m: m[k] = v`` from two threads claims keys twice.
3. shared-counter: ``self.counts[k] = self.counts.get(k, 0) + 1`` loses counts.
4. finalizer-read: a weakref callback (it runs on whichever thread drops the
   last reference) iterates the map while another thread writes it; the
   errors it raises are swallowed, as the interpreter swallows them.
5. set-churn: threads toggle the same keys in a set-style map (values None).

Synchronisation modes: "none" (the race), "lock" (one shared lock around
each compound step; an RLock for scenario 4, whose callback may run on a
thread that holds it), "queue" (the same steps, ownership handed off through
a queue.Queue), "join" (the threads run one after another, each joined
before the next starts: reads after join), and "ftmap" (no lock at all: the
scenario rewritten with an atomic operation of an ftmap map, where one fits:
scenarios 1 and 4 with SnapshotMap (the same code, no lock: iteration walks
one snapshot), 2 with SyncMap.load_or_store, 3 with ShardedMap.merge, 5 with
ShardedMap.compute).

    python -m ftmap.scenarios        # the demo table (make demo)
"""

from __future__ import annotations

import argparse
import json
import logging
import operator
import os
import queue
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

# The selected implementations (C when ftmap.implementation == "c").
from . import ShardedMap, SnapshotMap, SyncMap, UnsafeMap
from ._config import ConfigWatcher
from ._errors import ConcurrentMapError
from ._markers import DELETE, MISSING
from ._threads import run_together

__all__ = ["SCENARIOS", "SYNC_MODES", "Outcome", "Scenario", "run_scenario"]

SYNC_MODES = ("none", "lock", "queue", "join", "ftmap")
AnyMap = MutableMapping[Any, Any]
Guard = AbstractContextManager[Any]


class QueueHandoff:
    """A mutex made of a one-slot queue.Queue: holding the token is owning the map."""

    def __init__(self) -> None:
        self._token: queue.Queue[None] = queue.Queue(maxsize=1)
        self._token.put(None)

    def __enter__(self) -> None:
        self._token.get()

    def __exit__(self, *exc_info: object) -> None:
        self._token.put(None)


@dataclass
class Tally:
    """What one thread saw: counters for the damage measure, and the races it caught."""

    counts: dict[str, int] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    # (wall start, wall end, CPU seconds) of the thread's whole run
    span: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


@dataclass
class Outcome:
    """One run of a scenario: the damage measured, the races detected, the errors raised."""

    damage: int
    damage_text: str
    races: list[ConcurrentMapError]
    errors: list[BaseException]
    seconds: float
    parallel: bool  # the threads really ran at the same time (see _ran_in_parallel)


Worker = Callable[[AnyMap, Guard, int, Tally], None]


@dataclass(frozen=True)
class Fix:
    """A scenario rewritten to need no lock: an atomic operation of an ftmap map."""

    label: str
    map_type: Callable[[dict[Any, Any]], AnyMap]
    workers: tuple[Worker, Worker]


@dataclass(frozen=True)
class Scenario:
    number: int
    name: str
    title: str
    initial: Callable[[], dict[Any, Any]]
    workers: tuple[Worker, Worker]
    measure: Callable[[AnyMap, list[Tally], int], tuple[int, str]]
    needs_reentrant_lock: bool = False
    fix: Fix | None = None


def _stop_on_race(body: Callable[[], None], tally: Tally) -> None:
    # A worker stops at the first race it detects, as a Go program stops at the fatal error;
    # KeyError and RuntimeError are the damage a plain dict shows, counted and carried on.
    try:
        body()
    except ConcurrentMapError as error:
        tally.errors.append(error)


# -- 1. iterate while another thread writes -------------------------------------


def _writer_churn(m: AnyMap, guard: Guard, ops: int, tally: Tally) -> None:
    def body() -> None:
        for i in range(ops):
            key = 10_000 + i % 64
            with guard:
                if i % 2:
                    m.pop(key, None)
                else:
                    m[key] = i

    _stop_on_race(body, tally)


def _iterator(m: AnyMap, guard: Guard, ops: int, tally: Tally) -> None:
    # Each iteration step counts as one operation.
    def body() -> None:
        steps = 0
        while steps < ops:
            try:
                with guard:
                    for _ in m:
                        steps += 1
                    steps += 1
            except RuntimeError as error:
                if isinstance(error, ConcurrentMapError):
                    raise
                tally.add("broken iterations")
                steps += 1

    _stop_on_race(body, tally)


def _measure_iteration(m: AnyMap, tallies: list[Tally], ops: int) -> tuple[int, str]:
    broken = sum(t.counts.get("broken iterations", 0) for t in tallies)
    return broken, f"{broken} iterations broke (dict changed size)"


# -- 2. check-then-act --------------------------------------------------------------


def _claimer(m: AnyMap, guard: Guard, ops: int, tally: Tally) -> None:
    def body() -> None:
        for key in range(ops):
            with guard:
                if key not in m:
                    m[key] = threading.get_ident()
                    tally.add("claims")

    _stop_on_race(body, tally)


def _claimer_load_or_store(m: AnyMap, guard: Guard, ops: int, tally: Tally) -> None:
    for key in range(ops):
        _, loaded = m.load_or_store(key, threading.get_ident())  # type: ignore[attr-defined]
        if not loaded:
            tally.add("claims")


def _measure_claims(m: AnyMap, tallies: list[Tally], ops: int) -> tuple[int, str]:
    claims = sum(t.counts.get("claims", 0) for t in tallies)
    lost = claims - len(m)
    return lost, f"{lost} keys claimed twice (lost updates)"


# -- 3. a dict attribute of a shared object used as a counter ------------------------


class _Stats:
    def __init__(self, counts: AnyMap) -> None:
        self.counts = counts

    def hit(self, key: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1


def _counter(m: AnyMap, guard: Guard, ops: int, tally: Tally) -> None:
    stats = _Stats(m)

    def body() -> None:
        for i in range(ops):
            with guard:
                stats.hit(i % 8)
            tally.add("increments")

    _stop_on_race(body, tally)


def _counter_merge(m: AnyMap, guard: Guard, ops: int, tally: Tally) -> None:
    for i in range(ops):
        m.merge(i % 8, 1, operator.add)  # type: ignore[attr-defined]
        tally.add("increments")


def _measure_counts(m: AnyMap, tallies: list[Tally], ops: int) -> tuple[int, str]:
    expected = sum(t.counts.get("increments", 0) for t in tallies)
    lost = expected - sum(m.values())
    return lost, f"{lost} of {expected} increments lost"


# -- 4. a map read from a finalizer --------------------------------------------------


class _Resource:
    """An object whose weakref callback reads the shared map when it dies."""


def _registry_writer(m: AnyMap, guard: Guard, ops: int, tally: Tally) -> None:
    def body() -> None:
        for i in range(ops):
            with guard:
                if i % 2:
                    m.pop(i % 16, None)
                else:
                    m[i % 16] = i

    _stop_on_race(body, tally)


def _finalizer_reader(m: AnyMap, guard: Guard, ops: int, tally: Tally) -> None:
    # Each iteration step counts as one operation.
    def on_collect() -> None:
        # Runs on whichever thread drops the last reference. An exception here would
        # be printed and ignored by the interpreter: count it instead.
        steps = 1
        try:
            with guard:
                for _ in m.items():
                    steps += 1
        except RuntimeError as error:
            if isinstance(error, ConcurrentMapError):
                tally.errors.append(error)
            else:
                tally.add("finalizer errors")
        tally.add("steps", steps)

    while tally.counts.get("steps", 0) < ops and not tally.errors:
        resource = _Resource()
        weakref.finalize(resource, on_collect)
        del resource  # the callback runs here, on this thread


def _measure_finalizers(m: AnyMap, tallies: list[Tally], ops: int) -> tuple[int, str]:
    failed = sum(t.counts.get("finalizer errors", 0) for t in tallies)
    return failed, f"{failed} finalizer errors (swallowed in real code)"


# -- 5. high-churn set-style use -------------------------------------------------------


def _toggler(m: AnyMap, guard: Guard, ops: int, tally: Tally) -> None:
    def body() -> None:
        for i in range(ops):
            key = i % 32
            try:
                with guard:
                    if key in m:
                        del m[key]
                        tally.add("removed")
                    else:
                        m[key] = None
                        tally.add("added")
            except KeyError:
                tally.add("key errors")

    _stop_on_race(body, tally)


def _toggler_compute(m: AnyMap, guard: Guard, ops: int, tally: Tally) -> None:
    def toggle(old: Any) -> Any:
        return None if old is MISSING else DELETE

    for i in range(ops):
        # compute returns the new value (None: added) or MISSING (removed): one atomic step.
        now = m.compute(i % 32, toggle)  # type: ignore[attr-defined]
        tally.add("removed" if now is MISSING else "added")


def _measure_churn(m: AnyMap, tallies: list[Tally], ops: int) -> tuple[int, str]:
    added = sum(t.counts.get("added", 0) for t in tallies)
    removed = sum(t.counts.get("removed", 0) for t in tallies)
    key_errors = sum(t.counts.get("key errors", 0) for t in tallies)
    drift = abs(len(m) - (added - removed))
    return drift + key_errors, f"{key_errors} KeyErrors, size off by {drift}"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        1,
        "iterate-while-write",
        "One thread iterates while another writes",
        lambda: {i: i for i in range(1024)},
        (_writer_churn, _iterator),
        _measure_iteration,
        # The same code, no lock: iteration walks one immutable snapshot.
        fix=Fix("SnapshotMap", SnapshotMap, (_writer_churn, _iterator)),
    ),
    Scenario(
        2,
        "check-then-act",
        "Check-then-act: if k not in m: m[k] = v",
        dict,
        (_claimer, _claimer),
        _measure_claims,
        fix=Fix("SyncMap.load_or_store", SyncMap, (_claimer_load_or_store, _claimer_load_or_store)),
    ),
    Scenario(
        3,
        "shared-counter",
        "Counter dict on a shared object: m[k] = m.get(k, 0) + 1",
        dict,
        (_counter, _counter),
        _measure_counts,
        fix=Fix("ShardedMap.merge", ShardedMap, (_counter_merge, _counter_merge)),
    ),
    Scenario(
        4,
        "finalizer-read",
        "A weakref callback reads the map while another thread writes",
        lambda: {i: i for i in range(256)},
        (_registry_writer, _finalizer_reader),
        _measure_finalizers,
        needs_reentrant_lock=True,
        fix=Fix("SnapshotMap", SnapshotMap, (_registry_writer, _finalizer_reader)),
    ),
    Scenario(
        5,
        "set-churn",
        "Set-style churn: threads toggle the same keys",
        dict,
        (_toggler, _toggler),
        _measure_churn,
        fix=Fix("ShardedMap.compute", ShardedMap, (_toggler_compute, _toggler_compute)),
    ),
)


def _guard(scenario: Scenario, sync: str) -> Guard:
    if sync == "lock":
        return threading.RLock() if scenario.needs_reentrant_lock else threading.Lock()
    if sync == "queue":
        return QueueHandoff()
    return nullcontext()


def run_scenario(
    scenario: Scenario,
    map_type: Callable[[dict[Any, Any]], AnyMap] = UnsafeMap,
    sync: str = "none",
    ops: int = 20_000,
    *,
    pin: bool = True,
) -> Outcome:
    """Run one scenario once on two threads released together; measure what happened.

    ``map_type`` builds the shared map from the initial content (dict,
    UnsafeMap, or for "ftmap" the map the fix is written for); ``sync`` is one
    of SYNC_MODES; ``ops`` is each thread's number of operations. ``pin`` puts
    the two threads on separate CPUs where the machine allows, so that they
    really run at the same time.
    """
    if sync not in SYNC_MODES:
        raise ValueError(f"sync must be one of {SYNC_MODES}, not {sync!r}")
    workers = scenario.workers
    if sync == "ftmap":
        if scenario.fix is None:
            raise ValueError(f"scenario {scenario.name!r} has no ftmap fix yet")
        workers = scenario.fix.workers
    shared = map_type(scenario.initial())
    guard = _guard(scenario, sync)
    tallies = [Tally() for _ in workers]

    def bind(worker: Worker, tally: Tally) -> Callable[[], None]:
        def body() -> None:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                worker(shared, guard, ops, tally)
            finally:
                tally.span = (wall, time.perf_counter(), time.thread_time() - cpu)

        return body

    started = time.perf_counter()
    run_together(
        [bind(w, t) for w, t in zip(workers, tallies, strict=True)],
        pin=pin,
        sequential=sync == "join",
    )
    seconds = time.perf_counter() - started
    damage, text = scenario.measure(shared, tallies, ops)
    races = list(getattr(shared, "reports", []))
    errors = [e for t in tallies for e in t.errors if not isinstance(e, ConcurrentMapError)]
    return Outcome(damage, text, races, errors, seconds, _ran_in_parallel([t.span for t in tallies]))


def _ran_in_parallel(spans: list[tuple[float, float, float]]) -> bool:
    """Whether two threads really ran at the same time, not taking turns on one core.

    Each must have been on a CPU for at least 80% of its own wall-clock span,
    and the spans must overlap by at least half of the shorter one: then the
    threads ran side by side for much of the overlap. A busy machine, or a
    scheduler that puts both on one core, fails this; races there leave
    nothing for an overlap-based detector to see.
    """
    (start_a, end_a, cpu_a), (start_b, end_b, cpu_b) = spans
    wall_a, wall_b = end_a - start_a, end_b - start_b
    if min(wall_a, wall_b) <= 0:
        return False
    overlap = min(end_a, end_b) - max(start_a, start_b)
    return cpu_a >= 0.8 * wall_a and cpu_b >= 0.8 * wall_b and overlap >= 0.5 * min(wall_a, wall_b)


# -- the demo ---------------------------------------------------------------------------


def _first_line(error: BaseException, width: int) -> str:
    text = str(error).split("\n", 1)[0]
    return text if len(text) <= width else text[: width - 3] + "..."


def demo(ops: int = 20_000, width: int = 70) -> str:
    """Run every scenario with a dict, with UnsafeMap and with its fix; return a markdown table."""
    rows = [
        "| # | scenario | plain dict: damage | UnsafeMap: detection | fix (lock): damage, races "
        "| fix (ftmap, no lock): damage |",
        "|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        plain = run_scenario(scenario, dict, "none", ops)
        detected = run_scenario(scenario, UnsafeMap, "none", ops)
        fixed = run_scenario(scenario, UnsafeMap, "lock", ops)
        detection = _first_line(detected.races[0], width) if detected.races else "not detected this run"
        lock = "RLock" if scenario.needs_reentrant_lock else "Lock"
        if scenario.fix is None:
            ftmap_fix = "(a later map)"
        else:
            ftmap_fixed = run_scenario(scenario, scenario.fix.map_type, "ftmap", ops)
            ftmap_fix = f"{scenario.fix.label}: damage {ftmap_fixed.damage}"
        rows.append(
            f"| {scenario.number} | {scenario.title} | {plain.damage_text} | {detection} | "
            f"{lock}: damage {fixed.damage}, {len(fixed.races)} races | {ftmap_fix} |"
        )
    return "\n".join(rows)


def hot_reload_demo(rewrites: int = 100) -> str:
    """Readers hammer a config store while its file is rewritten, badly and well; a markdown table."""

    def validate(config: dict[str, Any]) -> list[str]:
        return [] if config.get("b") == 2 * config.get("a", -1) else ["b must be 2 * a"]

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "app.json")
        with open(path, "w") as file:
            json.dump({"a": 0, "b": 0}, file)
        failures: dict[str, int] = {}
        watcher = ConfigWatcher(
            SnapshotMap(),
            path,
            validate=validate,
            interval=0.002,
            quiet=0.004,
            on_error=lambda e: failures.__setitem__(type(e).__name__, failures.get(type(e).__name__, 0) + 1),
        )
        done = threading.Event()
        torn = [0, 0]  # torn snapshots seen, snapshots read

        def rewrite() -> None:
            try:
                for i in range(1, rewrites + 1):
                    last = i == rewrites  # always good, so the demo can wait for it
                    bad, rejected = i % 7 == 0 and not last, i % 5 == 0 and not last
                    text = '{"a": 1, "b":' if bad else json.dumps({"a": i, "b": i if rejected else 2 * i})
                    with open(path + ".tmp", "w") as file:
                        file.write(text)
                    os.replace(path + ".tmp", path)
                    time.sleep(0.005)  # a config edited over time: the scenario, not synchronisation
            finally:
                done.set()

        def read() -> None:
            while not done.is_set():
                snap = watcher.store.snapshot()
                torn[0] += snap["b"] != 2 * snap["a"]
                torn[1] += 1

        quiet_log = logging.getLogger("ftmap")
        level = quiet_log.level
        quiet_log.setLevel(logging.ERROR)  # each refused version is a logged warning: not for the table
        try:
            with watcher:
                run_together([rewrite, read], pin=True)
                watcher.wait_for(lambda s: watcher.store.get("a") == rewrites, timeout=10)
        finally:
            quiet_log.setLevel(level)
        status = watcher.status
    rows = [
        "| file rewrites | reloads published | refused (kept the last good) | snapshots read | torn |",
        "|---|---|---|---|---|",
        f"| {rewrites} (1 in 7 bad JSON, 1 in 5 failing validation) | {status.reloads} | "
        f"{', '.join(f'{n} {k}' for k, n in sorted(failures.items())) or 'none'} | {torn[1]} | {torn[0]} |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="The five map races: damage, detection and fix.")
    parser.add_argument("--ops", type=int, default=20_000, help="operations per thread (default 20000)")
    args = parser.parse_args()
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"Python {sys.version.split()[0]}, GIL {'on' if gil else 'off'}; 2 threads x {args.ops} ops each\n")
    started = time.perf_counter()
    print(demo(args.ops))
    print("\nConfig hot reload: readers check b == 2 * a on every snapshot while the file changes\n")
    print(hot_reload_demo())
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
