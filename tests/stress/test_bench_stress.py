"""ftmap.bench's correctness checks on real parallel threads: they catch what they claim to."""

from __future__ import annotations

import pytest

from ftmap.bench import WORKLOADS, Settings, measure
from ftmap.bench._contenders import builtin_contenders
from ftmap.bench._workloads import make_keys

SETTINGS = Settings(duration=0.1, warmup=0.0, repeat=2, memory=False, seed=3)
KEYS = make_keys(200)
BY_NAME = {c.name: c for c in builtin_contenders()}
SAFE = ["dict + Lock", "SyncMap", "ShardedMap(16)", "SnapshotMap", "SnapshotMap reader()"]
LOAD = {w.name: w for w in WORKLOADS}


@pytest.mark.timeout(120)
def test_the_counter_workload_catches_a_plain_dict_losing_increments() -> None:
    cell = measure(LOAD["hot-counter"], BY_NAME["dict"], KEYS, 2, settings=SETTINGS)
    print(f"dict on 2 threads: {cell.lost_updates} of {cell.operations} increments lost")
    assert cell.error is None and cell.lost_updates is not None and cell.lost_updates > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", SAFE)
def test_no_increment_is_lost_by_the_safe_maps(name: str) -> None:
    cell = measure(LOAD["hot-counter"], BY_NAME[name], KEYS, 2, settings=SETTINGS)
    assert cell.error is None and cell.operations > 0 and cell.lost_updates == 0


@pytest.mark.timeout(120)
def test_iterating_a_plain_dict_during_writes_fails_and_is_reported() -> None:
    cell = measure(LOAD["iterate-write"], BY_NAME["dict"], KEYS, 2, settings=SETTINGS)
    assert cell.ops_per_second is None
    assert cell.error == "RuntimeError: dictionary changed size during iteration"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", SAFE)
def test_the_safe_maps_iterate_during_writes(name: str) -> None:
    cell = measure(LOAD["iterate-write"], BY_NAME[name], KEYS, 2, settings=SETTINGS)
    assert cell.error is None and cell.ops_per_second
