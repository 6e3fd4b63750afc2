"""MISSING and DELETE: the two markers callbacks and recorded histories use.

The rule every ftmap map with callbacks follows (ShardedMap; the C core copies
it): a marker is never a value. Passing one where it would be stored raises
ValueError (``marker_error``) before anything changes; a callback that returns
one leaves its key absent. UnsafeMap, being exactly a dict, stores any object.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["DELETE", "MISSING", "marker_error"]


class _Marker:
    """A named singleton that survives pickling as itself."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> str:
        return self._name  # pickled by reference to the module-level name

    def __bool__(self) -> bool:
        return False


#: Stands for an absent key: what compute's function receives when there is no value,
#: and what a recorded history holds for a read of an absent key.
MISSING: Final[Any] = _Marker("MISSING")

#: Returned by a compute, compute_if_present or merge function: remove the key.
DELETE: Final[Any] = _Marker("DELETE")


def marker_error(value: object, operation: str, map_name: str) -> ValueError:
    """The error for storing a marker as a value: nothing was stored."""
    meaning = "an absent key" if value is MISSING else "removal, returned by a callback"
    return ValueError(
        f"{value!r} cannot be stored in a {map_name} ({operation}): it is ftmap's marker for "
        f"{meaning}, never a value"
    )
