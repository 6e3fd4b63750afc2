"""The scenarios module and its demo, small and fast; the bars are in tests/stress."""

from __future__ import annotations

import pytest

from ftmap import UnsafeMap
from ftmap._threads import run_together
from ftmap.scenarios import SCENARIOS, demo, hot_reload_demo, run_scenario


@pytest.mark.parametrize("sync", ["lock", "queue", "join"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_synchronized_scenarios_do_no_damage(scenario, sync) -> None:  # type: ignore[no-untyped-def]
    for map_type in (dict, UnsafeMap):
        outcome = run_scenario(scenario, map_type, sync, 500, pin=False)
        assert (outcome.damage, outcome.races, outcome.errors) == (0, [], []), outcome.damage_text


def test_unknown_sync_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="sync must be one of"):
        run_scenario(SCENARIOS[0], dict, "spinlock")


def test_ftmap_fixes_do_no_damage_and_only_scenarios_with_one_accept_the_mode() -> None:
    for scenario in SCENARIOS:
        if scenario.fix is None:
            with pytest.raises(ValueError, match="no ftmap fix yet"):
                run_scenario(scenario, dict, "ftmap", 10)
        else:
            outcome = run_scenario(scenario, scenario.fix.map_type, "ftmap", 500, pin=False)
            assert (outcome.damage, outcome.errors) == (0, [])


@pytest.mark.ftmap_races_expected
@pytest.mark.thread_unsafe(reason="pins threads to CPUs")
def test_demo_prints_one_row_per_scenario() -> None:
    table = demo(ops=300).splitlines()
    assert len(table) == 2 + len(SCENARIOS)
    assert all(f"| {s.number} | {s.title} |" in row for s, row in zip(SCENARIOS, table[2:], strict=True))
    assert all("damage 0, 0 races" in row for row in table[2:])
    assert "SyncMap.load_or_store: damage 0" in table[3]
    assert "ShardedMap.merge: damage 0" in table[4] and "ShardedMap.compute: damage 0" in table[6]
    assert "SnapshotMap: damage 0" in table[2] and "SnapshotMap: damage 0" in table[5]


def test_run_together_returns_results_in_order_and_collects_every_error() -> None:
    assert run_together([lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]
    assert run_together([lambda: "a", lambda: "b"], sequential=True) == ["a", "b"]

    def fail(message: str) -> None:
        raise ValueError(message)

    with pytest.raises(ExceptionGroup) as caught:
        run_together([lambda: fail("x"), lambda: 1, lambda: fail("y")])
    assert sorted(str(e) for e in caught.value.exceptions) == ["x", "y"]


@pytest.mark.thread_unsafe(reason="changes the ftmap logger's level and pins threads")
def test_hot_reload_demo_publishes_reloads_and_nothing_torn() -> None:
    row = hot_reload_demo(rewrites=30).splitlines()[2]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert int(cells[1]) >= 2  # the initial load and at least the final rewrite
    assert int(cells[3]) > 0 and cells[4] == "0"  # snapshots were read, none torn
