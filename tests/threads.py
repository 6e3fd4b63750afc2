"""Running test code on another thread, and failing instead of hanging if it blocks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class InThread:
    """Run fn on another thread at once; join() returns its result or raises its exception."""

    def __init__(self, fn: Callable[[], Any], name: str = "other") -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as error:
            self.error = error

    def join(self, seconds: float = 10.0) -> Any:
        """Wait up to seconds; fail if fn is still running (it is blocked or deadlocked)."""
        self.thread.join(seconds)
        assert not self.thread.is_alive(), f"{self.thread.name} still running after {seconds} s: blocked"
        if self.error is not None:
            raise self.error
        return self.result


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """fn's result, run on another thread; fails if it has not finished in time."""
    return InThread(fn).join(seconds)
