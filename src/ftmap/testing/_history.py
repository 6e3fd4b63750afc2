"""Recording histories: every call with its thread, arguments, result and interval."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ._linearizability import MISSING, Operation

__all__ = ["History", "Recorder"]


class History:
    """The operations recorded so far, from any number of threads (list.append is atomic)."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def record(self, thread: int, name: str, args: tuple[Any, ...], fn: Callable[[], Any]) -> Any:
        """Call ``fn`` and record it as ``name(*args)``; return what it returned, raise what it raised."""
        call = time.perf_counter_ns()
        try:
            value = fn()
        except Exception as error:
            self.operations.append(Operation(thread, name, args, None, call, time.perf_counter_ns(), error))
            raise
        self.operations.append(Operation(thread, name, args, value, call, time.perf_counter_ns()))
        return value

    def recorder(self, target: Any, thread: int | None = None) -> Recorder:
        """A Recorder of ``target`` whose calls are recorded here as made by ``thread``."""
        return Recorder(target, self, thread)

    def __len__(self) -> int:
        return len(self.operations)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)


class Recorder:
    """A stand-in for an object that records every method call into a History.

    Methods are recorded under their own names. The mapping protocol is
    recorded in the names of KeyValueModel: ``r[k]`` as get, ``r[k] = v`` as
    set, ``del r[k]`` as delete, ``k in r`` as contains. ``get`` and ``pop``
    with a default ask the target with MISSING as the default, so an absent
    key is recorded as MISSING even where a stored value equals the default.
    ``thread`` defaults to the calling thread's ``threading.get_ident()``.
    """

    __slots__ = ("_history", "_target", "_thread")

    def __init__(self, target: Any, history: History, thread: int | None = None) -> None:
        self._target = target
        self._history = history
        self._thread = thread

    def _who(self) -> int:
        return threading.get_ident() if self._thread is None else self._thread

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def recorded(*args: Any) -> Any:
            return self._history.record(self._who(), name, args, lambda: attribute(*args))

        return recorded

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._history.record(self._who(), "get", (key,), lambda: self._target.get(key, MISSING))
        return default if value is MISSING else value

    def pop(self, key: Any, *default: Any) -> Any:
        if not default:
            return self._history.record(self._who(), "pop", (key,), lambda: self._target.pop(key))
        value = self._history.record(self._who(), "pop", (key,), lambda: self._target.pop(key, MISSING))
        return default[0] if value is MISSING else value

    def __getitem__(self, key: Any) -> Any:
        return self._history.record(self._who(), "get", (key,), lambda: self._target[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._history.record(self._who(), "set", (key, value), lambda: self._target.__setitem__(key, value))

    def __delitem__(self, key: Any) -> None:
        self._history.record(self._who(), "delete", (key,), lambda: self._target.__delitem__(key))

    def __contains__(self, key: Any) -> bool:
        return bool(self._history.record(self._who(), "contains", (key,), lambda: key in self._target))
