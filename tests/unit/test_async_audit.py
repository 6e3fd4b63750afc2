"""No asynchronous exception can skip a cleanup handler anywhere in ftmap: a bytecode audit.

tests/unit/test_sync_bytecode.py explains the gap (python/cpython#130279: on 3.13 a loop
back-edge inside a ``try`` can fall outside the exception table, so an asynchronous exception
delivered there skips the ``except``/``finally``/``__exit__`` that restores an invariant or
releases a lock). This applies its audit to every module of the package whose cleanups
matter: the maps, the watcher and its sources, the testing tools.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import ftmap
from tests.unit.test_sync_bytecode import uncovered_delivery_points

PACKAGE = Path(ftmap.__file__).parent
# Modules whose try/with blocks guard nothing an asynchronous exception could corrupt: the
# demo and the report writer only close files (a skipped close leaks one descriptor until
# the garbage collector closes it).
EXEMPT = {"fleet_demo.py", "bench/_report.py"}
MODULES = sorted(
    str(path.relative_to(PACKAGE))
    for path in PACKAGE.rglob("*.py")
    if str(path.relative_to(PACKAGE)) not in EXEMPT
)


@pytest.mark.skipif(sys.version_info[:2] != (3, 13), reason="the exception-table gap is 3.13's")
@pytest.mark.parametrize("module", MODULES)
def test_no_async_exception_can_skip_a_cleanup_handler(module: str) -> None:
    path = PACKAGE / module
    assert uncovered_delivery_points(path.read_text(encoding="utf-8"), str(path)) == []
