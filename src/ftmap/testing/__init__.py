"""Tools for testing concurrent code on free-threaded Python; importable without pytest.

- ``run_threads``: real threads released together by a Barrier, each with a
  seeded random generator; every exception collected; bounded in time.
- ``History`` and ``Recorder``: record each call with its thread, arguments,
  result or exception, and its interval (``time.perf_counter_ns()``).
- ``check_linearizable``: Porcupine's checker (Wing and Gong's search with
  Lowe's memoization, P-compositional partitions) against a ``Model``, by
  default ``KeyValueModel``.
"""

from ._history import History, Recorder
from ._linearizability import (
    MISSING,
    CheckResult,
    DeadEnd,
    KeyValueModel,
    Model,
    Operation,
    check_linearizable,
)
from ._runner import RunResult, ThreadResult, run_threads

__all__ = [
    "MISSING",
    "CheckResult",
    "DeadEnd",
    "History",
    "KeyValueModel",
    "Model",
    "Operation",
    "Recorder",
    "RunResult",
    "ThreadResult",
    "check_linearizable",
    "run_threads",
]
