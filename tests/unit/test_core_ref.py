"""ftmap_ref's semantics through the test type _PublishedRef: load, publish, exchange, CAS, GC."""

from __future__ import annotations

import gc
import weakref

import pytest

from ftmap import _impl

core = _impl.core
pytestmark = pytest.mark.skipif(core is None, reason=f"no C core: {_impl.implementation_reason}")


class Box:
    """A weak-referenceable object, to see when the slot lets go of it."""


def collect_until_dead(ref: weakref.ref[Box]) -> bool:
    for _ in range(3):
        if ref() is None:
            return True
        gc.collect()
    return ref() is None


def test_empty_initial_and_load() -> None:
    assert core._PublishedRef().load() is None
    box = Box()
    ref = core._PublishedRef(box)
    assert ref.load() is box and ref.load() is box


def test_publish_replaces_and_releases_the_old_object() -> None:
    first, second = Box(), Box()
    ref = core._PublishedRef(first)
    gone = weakref.ref(first)
    del first
    ref.publish(second)
    assert ref.load() is second
    assert collect_until_dead(gone), "the slot kept the old object alive"


def test_exchange_returns_the_old_object() -> None:
    first, second = Box(), Box()
    ref = core._PublishedRef(first)
    assert ref.exchange(second) is first
    assert ref.exchange(None) is second
    assert ref.load() is None


def test_compare_and_set_is_by_identity() -> None:
    first, second, third = [1000], [1000], Box()
    ref = core._PublishedRef(first)
    assert not ref.compare_and_set(second, third)  # equal but not the same object
    assert ref.load() is first
    assert ref.compare_and_set(first, third)
    assert ref.load() is third
    gone = weakref.ref(third)
    assert ref.compare_and_set(third, None)
    del third
    assert ref.load() is None and collect_until_dead(gone)


@pytest.mark.thread_unsafe(reason="relies on gc.collect() of objects it alone created")
def test_a_cycle_through_the_slot_is_collected() -> None:
    box = Box()
    ref = core._PublishedRef(box)
    box.ref = ref  # type: ignore[attr-defined]
    gone = weakref.ref(box)
    del box, ref
    assert collect_until_dead(gone), "tp_traverse does not visit the published object"


def test_payload_is_intact_until_freed() -> None:
    payload = core._Payload(7)
    assert payload.valid() and payload.serial == 7 and repr(payload) == "_Payload(7)"
    with pytest.raises(TypeError):
        core._Payload("7")


def test_many_helpers_count_what_they_did() -> None:
    ref = core._PublishedRef(core._Payload(0))
    assert ref.check_many(1_000) == (0, 0, 0, 0)
    assert ref.publish_many(1, 100, True) == 101
    assert ref.load().serial == 100
    assert ref.check_many(10, True) == (0, 0, 0, 0)
    assert ref.load_cached_many(1_000) == 1_000
    assert core._PublishedRef().load_cached_many(5) == 0
    assert core._PublishedRef(core._Payload(0)).check_many(3) == (0, 0, 0, 0)
    assert core._PublishedRef().check_many(3) == (0, 0, 0, 3)
    assert core._PublishedRef(Box()).check_many(3) == (3, 0, 0, 0)
    with pytest.raises(ValueError, match="must not be negative"):
        ref.load_many(-1)
