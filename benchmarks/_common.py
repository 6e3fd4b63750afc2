"""What every benchmark script prints first: the interpreter it measured."""

from __future__ import annotations

import platform
import sys


def interpreter_line() -> str:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    build = "GIL" if gil else "free-threaded, GIL off"
    return f"Python {platform.python_version()} ({build}), {platform.machine()}"
