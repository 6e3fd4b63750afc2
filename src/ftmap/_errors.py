"""Every exception ftmap raises.

The concurrent-misuse errors mirror the fatal errors of Go's runtime map
checks; their messages start with Go's exact text so that people who know
those reports recognise them at once.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

__all__ = [
    "ConcurrentIterationError",
    "ConcurrentMapError",
    "ConcurrentReadWriteError",
    "ConcurrentWriteError",
    "RecursiveUpdateError",
    "ThreadInfo",
]


class ThreadInfo(NamedTuple):
    """A thread as a report names it: its name and its ``threading.get_ident()``."""

    name: str
    ident: int

    @classmethod
    def of(cls, ident: int) -> ThreadInfo:
        """Describe the thread with this ident; its name is "<exited>" if it is gone."""
        for thread in threading.enumerate():
            if thread.ident == ident:
                return cls(thread.name, ident)
        return cls("<exited>", ident)

    def __str__(self) -> str:
        return f"thread {self.name!r} (ident {self.ident})"


NO_KEY: object = object()


class ConcurrentMapError(RuntimeError):
    """A map was used by two threads at once in a way that is a data race.

    Attributes: ``operation`` (what the detecting thread was doing), ``key``
    (the key involved, or None when the operation has none: see ``has_key``),
    ``thread`` (the detecting thread) and ``other_thread`` (the thread whose
    access overlapped it).
    """

    go_text = "concurrent map misuse"

    def __init__(
        self,
        operation: str,
        thread: ThreadInfo,
        other_thread: ThreadInfo,
        key: object = NO_KEY,
    ) -> None:
        self.operation = operation
        self.thread = thread
        self.other_thread = other_thread
        self.has_key = key is not NO_KEY
        self.key: object = key if self.has_key else None
        super().__init__(self._message())

    def _message(self) -> str:
        what = self.operation
        if self.has_key:
            what += f" of key {_short_repr(self.key)}"
        # Every race on a map involves a write: two reads never conflict.
        return f"{self.go_text}: {what} in {self.thread} overlapped a write in {self.other_thread}"

    def __reduce__(self) -> tuple[object, ...]:
        args = (self.operation, self.thread, self.other_thread)
        return (type(self), (*args, self.key) if self.has_key else args)


class ConcurrentWriteError(ConcurrentMapError):
    """Two threads wrote the map at the same time."""

    go_text = "concurrent map writes"


class ConcurrentReadWriteError(ConcurrentMapError):
    """One thread read the map while another wrote it."""

    go_text = "concurrent map read and map write"


class ConcurrentIterationError(ConcurrentMapError):
    """One thread iterated the map while another wrote it."""

    go_text = "concurrent map iteration and map write"


class RecursiveUpdateError(RuntimeError):
    """A callback tried to change the map that is running it (which would deadlock).

    As Java's ConcurrentHashMap raises IllegalStateException("Recursive update").
    Attributes: ``operation`` (what the callback tried) and ``outer`` (the
    compound operation whose callback it is).
    """

    def __init__(self, map_name: str, operation: str, outer: str) -> None:
        self.operation = operation
        self.outer = outer
        super().__init__(
            f"recursive update: {operation} on a {map_name} from inside the callback of its {outer}; "
            "a callback may read the map that runs it, but not change it"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_recursive_update, (str(self), self.operation, self.outer))


def _recursive_update(message: str, operation: str, outer: str) -> RecursiveUpdateError:
    error = RecursiveUpdateError.__new__(RecursiveUpdateError)
    RuntimeError.__init__(error, message)
    error.operation, error.outer = operation, outer
    return error


def _short_repr(value: object, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the race report
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
