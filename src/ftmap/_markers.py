"""MISSING and DELETE: the two markers callbacks and recorded histories use."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["DELETE", "MISSING"]


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
