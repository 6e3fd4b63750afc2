"""Tools for testing concurrent code on free-threaded Python; importable without pytest.

So far: a linearizability checker (``check_linearizable``) with a key-value
model, and ``recorded`` to build histories. The stress runner is to come.
"""

from ._linearizability import (
    MISSING,
    CheckResult,
    KeyValueModel,
    Model,
    Operation,
    check_linearizable,
    recorded,
)

__all__ = ["MISSING", "CheckResult", "KeyValueModel", "Model", "Operation", "check_linearizable", "recorded"]
