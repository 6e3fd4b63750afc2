"""SyncMapHandle against SyncMap (the reference), and the C handle against the pure handle.

The same random operations (tests/unit/test_sync_differential.py's: Go's API and the
MutableMapping protocol, hostile and re-entrant keys, values whose __eq__ re-enters,
markers as values) run on three maps: the pure map through itself (the reference), and
the pure and the C map each through a handle or, chosen at random per step, through the
map itself (so publishes happen under the handles). Results, exceptions with their
messages, whether a hook's write took effect, and the internals must agree after every
step. The hooks re-enter through whatever the operation used: the handle or the map.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ftmap import _impl
from tests.threads import within
from tests.unit.test_sync import check_invariants
from tests.unit.test_sync_differential import OPS, SETTINGS, VALUES_AND_MARKERS, internals, run, same
from tests.unit.test_sync_model import KEYS

MAPS = _impl.variants("SyncMap")
HANDLE_OPS = {name: op for name, op in OPS.items() if name != "repr"}  # a handle's repr names itself


class HandleDifferential(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reference = MAPS["python"]()
        self.maps = {impl: cls() for impl, cls in MAPS.items()}
        self.handles = {impl: m.handle() for impl, m in self.maps.items()}

    @rule(
        name=st.sampled_from(sorted(HANDLE_OPS)),
        key=KEYS,
        value=VALUES_AND_MARKERS,
        other=VALUES_AND_MARKERS,
        via_map=st.sampled_from([False, False, False, True]),
    )
    def operation(self, name: str, key: Any, value: Any, other: Any, via_map: bool) -> None:
        op = HANDLE_OPS[name]
        expected = run(self.reference, op, key, value, other)
        for impl, h in self.handles.items():
            got = run(self.maps[impl] if via_map else h, op, key, value, other)
            where = f"{name} through the {impl} {'map' if via_map else 'handle'}"
            assert got[1] == expected[1], f"{where}: raised {got[1]}, the map {expected[1]}"
            assert got[2] == expected[2], f"{where}: a hook's write took effect in one only"
            assert same(got[0], expected[0]), f"{where}: returned {got[0]!r}, the map {expected[0]!r}"

    @rule(n=st.integers(1, 30))
    def misses(self, n: int) -> None:
        for target in (self.reference, *self.handles.values()):
            for i in range(n):
                assert target.load(("absent", i)) == (None, False)

    @rule()
    def new_handle(self) -> None:
        self.handles = {impl: m.handle() for impl, m in self.maps.items()}

    @invariant()
    def agree(self) -> None:
        check_invariants(self.reference)
        for impl, m in self.maps.items():
            check_invariants(m)
            assert same(internals(m), internals(self.reference)), (
                impl,
                internals(m),
                internals(self.reference),
            )


def test_handles_behave_exactly_as_the_map() -> None:
    within(600, lambda: run_state_machine_as_test(HandleDifferential, settings=SETTINGS))


@pytest.mark.skipif("c" not in MAPS, reason="the C core is not built")
def test_c_handle_and_pure_handle_are_both_checked() -> None:
    assert set(MAPS) == {"python", "c"}


class _StaleHandle(_impl.variants("SyncMapHandle")["python"]):  # type: ignore[misc]
    """A broken handle: it never loads a newer read map than its first."""

    __slots__ = ()

    def refresh(self) -> list[Any]:
        if len(self.cell) == 2:  # the first one, from __init__
            return super().refresh()  # type: ignore[no-any-return]
        return [False, *self.cell[1:]]


class _Stale(HandleDifferential):
    def __init__(self) -> None:
        super().__init__()
        self.new_handle()

    def new_handle(self) -> None:
        self.maps = {"python": self.maps["python"]}
        self.handles = {"python": _StaleHandle(self.maps["python"])}


def test_the_differential_check_can_fail() -> None:
    with pytest.raises(AssertionError):
        within(
            600,
            lambda: run_state_machine_as_test(
                _Stale, settings=settings(SETTINGS, report_multiple_bugs=False)
            ),
        )
