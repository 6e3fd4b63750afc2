"""SnapshotMapHandle against the map, and the C handle against the pure one: the same random
operations (tests/unit/test_snapshot_differential.py's: writes, reads, rollbacks, transforms
that read or write, subscribers, keys whose __hash__/__eq__ raise or re-enter the map through
the handle, unhashable keys, NaN, misused arguments) give the same results, the same
exceptions with the same messages, and the same final state.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftmap import _impl
from tests.unit.test_snapshot_differential import OPERATIONS, Driven, state
from tests.unit.test_snapshot_differential import outcome as _outcome

HANDLES = _impl.variants("SnapshotMapHandle")
MAPS = _impl.variants("SnapshotMap")


class ThroughHandle(Driven):
    """Driven through a handle: every operation (and every re-entrant key's read or write) goes
    through ``m.handle()``; the state is read through it too."""

    def __init__(self, cls: Any) -> None:
        super().__init__(cls)
        self.owner = self.map
        self.map = self.owner.handle()


def outcome(driven: Driven, operation: tuple[Any, ...]) -> tuple[str, str]:
    found = _outcome(driven, operation)
    # A handle adds a frame to every call: where re-entrant keys recurse without end, the
    # limit is reached at another point, whose message may differ (3.11: "in comparison").
    return ("RecursionError", "") if found[0] == "RecursionError" else found


def _state(driven: Driven) -> tuple[Any, ...]:
    found = list(state(driven))
    found[7] = repr(getattr(driven, "owner", driven.map))  # the map's repr, not the handle's
    return tuple(found)


@pytest.mark.parallel_threads(1)  # the differential module's TARGET is shared: one run at a time
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATIONS.filter(lambda op: op[0] != "misuse"), max_size=25))
def test_a_handle_gives_what_its_map_gives(operations: list[tuple[Any, ...]]) -> None:
    direct, handle = Driven(MAPS["python"]), ThroughHandle(MAPS["python"])
    for operation in operations:
        expected, got = outcome(direct, operation), outcome(handle, operation)
        assert got == expected, (operation, expected, got)
        assert _state(handle) == _state(direct), operation


@pytest.mark.skipif("c" not in HANDLES, reason=f"no C SnapshotMapHandle: {_impl.implementation_reason}")
@pytest.mark.parallel_threads(1)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATIONS, max_size=25))
def test_the_c_handle_gives_what_the_pure_handle_gives(operations: list[tuple[Any, ...]]) -> None:
    pure, c = ThroughHandle(MAPS["python"]), ThroughHandle(MAPS["c"])
    for operation in operations:
        expected, got = outcome(pure, operation), outcome(c, operation)
        assert got == expected, (operation, expected, got)
        assert _state(c) == _state(pure), operation


def test_the_handle_differential_test_can_fail() -> None:
    # A handle whose get ignored its default, or that read a stale snapshot, would be caught.
    handle = ThroughHandle(MAPS["python"])
    assert outcome(handle, ("read", 0, "get default")) == ("ok", "1")
    assert outcome(handle, ("read", 1, "get default")) == ("ok", "'absent'")
    outcome(handle, ("set", 1, 0))
    assert outcome(handle, ("read", 1, "[]")) == ("ok", "0")
    assert _state(handle) != _state(Driven(MAPS["python"]))
