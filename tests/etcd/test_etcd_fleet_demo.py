"""The fleet demo (ftmap.fleet_demo), small: reader processes on one prefix across an etcd restart and a
leader kill. The timing bars are measured by `make fleet-demo`, never asserted here."""

from __future__ import annotations

from ftmap.fleet_demo import run_fleet, table


def test_fleet_never_torn_every_revision_once_in_order_across_faults() -> None:
    result = run_fleet("faults", processes=2, transactions=60, threads=1, rate=40.0)
    assert result.torn == 0 and result.bad_publishes == 0
    assert result.exact, "a process missed, repeated or reordered a revision"
    assert result.published_per_process == [60, 60]
    assert len(result.faults) == 3 and result.reads > 0
    assert "| faults | 2 | 60 at" in table([result])
