"""UnsafeMap's detection bars, with real threads released together by a Barrier.

- Every racy scenario (2 threads, 20,000 operations each) is detected in at
  least 99 of 100 runs.
- The same scenarios correctly synchronised (a shared lock, a queue.Queue
  hand-off, reads after join) give zero detections in 1,000 runs.

Each racing thread is pinned to its own CPU (ftmap._threads.pin_to_own_cpu):
UnsafeMap sees races that overlap in time, and the scheduler sometimes puts
two fresh threads on one core, where they take turns and never overlap.
FTMAP_STRESS_FULL=1 runs the synchronised bar at full size for every mode.
"""

from __future__ import annotations

import os
import random
import threading

import pytest

from ftmap import ConcurrentMapError, UnsafeMap
from ftmap._threads import run_together
from ftmap.scenarios import SCENARIOS, Scenario, run_scenario

FULL = os.environ.get("FTMAP_STRESS_FULL") == "1"
SYNCED = ("lock", "queue", "join")


@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_racy_scenario_is_detected_in_99_of_100_runs(scenario: Scenario) -> None:
    # A run counts when its race was detected, or when the two threads really ran at
    # the same time (Outcome.parallel) and it was missed. A missed run in which they
    # took turns on one core (a busy machine) had no overlap to detect: it is left
    # out, reported, and replaced. With no parallel time at all to be had, the bar
    # cannot be measured and the test says so instead of blaming the detector.
    counted, missed, unmeasurable = 0, [], 0
    for run in range(400):
        outcome = run_scenario(scenario, UnsafeMap, "none", 20_000)
        assert all(isinstance(e, ConcurrentMapError) for e in outcome.races)
        if outcome.races:
            counted += 1
        elif outcome.parallel:
            counted += 1
            missed.append(run)
        else:
            unmeasurable += 1
        if counted == 100:
            break
    print(
        f"{scenario.name}: detected in {counted - len(missed)}/{counted} runs; missed runs {missed}; "
        f"{unmeasurable} runs left out (the threads took turns on one core)"
    )
    if counted < 100:
        pytest.skip(f"only {counted} of 400 runs had the two threads running at once: a busy machine")
    assert len(missed) <= 1, f"missed in runs {missed}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_synchronized_scenario_never_reports_in_1000_runs(scenario: Scenario) -> None:
    # The modes take turns run by run; FTMAP_STRESS_FULL=1 runs 1,000 of each at full size.
    runs = (
        [(sync, 20_000) for sync in SYNCED for _ in range(1000)]
        if FULL
        else [(SYNCED[i % 3], 2_000) for i in range(1000)]
    )
    for run, (sync, ops) in enumerate(runs):
        outcome = run_scenario(scenario, UnsafeMap, sync, ops)
        assert not outcome.races, f"run {run} ({sync}): {outcome.races[0]}"
        assert outcome.damage == 0, f"run {run} ({sync}): {outcome.damage_text}"
        assert not outcome.errors, f"run {run} ({sync}): {outcome.errors}"


@pytest.mark.parametrize("sync", SYNCED)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_synchronized_scenario_at_full_size(scenario: Scenario, sync: str) -> None:
    for run in range(10):
        outcome = run_scenario(scenario, UnsafeMap, sync, 20_000)
        assert not outcome.races, f"run {run}: {outcome.races[0]}"
        assert outcome.damage == 0, f"run {run}: {outcome.damage_text}"


def test_random_operations_under_one_lock_never_report_and_match_a_dict() -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    m: UnsafeMap[int, int] = UnsafeMap()
    model: dict[int, int] = {}
    lock = threading.Lock()

    def worker(index: int) -> None:
        rng = random.Random(seed + index)
        for _ in range(20_000):
            key, value, op = rng.randrange(64), rng.randrange(1000), rng.randrange(6)
            with lock:
                if op == 0:
                    m[key] = model[key] = value
                elif op == 1:
                    assert m.pop(key, None) == model.pop(key, None)
                elif op == 2:
                    assert m.get(key) == model.get(key)
                elif op == 3:
                    assert m.setdefault(key, value) == model.setdefault(key, value)
                elif op == 4:
                    assert list(m.items()) == list(model.items())
                else:
                    assert (key in m) == (key in model) and len(m) == len(model)

    run_together([lambda i=i: worker(i) for i in range(4)], pin=True)
    assert m == model
    assert m.reports == []


def test_each_thread_with_its_own_map_never_reports() -> None:
    def worker() -> list[ConcurrentMapError]:
        m: UnsafeMap[int, int] = UnsafeMap()
        for i in range(20_000):
            m[i % 50] = i
            m.get(i % 7)
            if i % 100 == 0:
                list(m.items())
        return m.reports

    assert run_together([worker] * 4, pin=True) == [[], [], [], []]
