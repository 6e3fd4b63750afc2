"""ftmap.etcd: configuration for a fleet, kept consistent from etcd.

``ConfigWatcher(store, EtcdSource(endpoints, "/app/"))`` keeps a SnapshotMap
equal to the keys under an etcd prefix, one published snapshot per etcd
revision (see ftmap._etcd for every guarantee and fault). ``EtcdClient`` is
the standard-library client it uses (etcd's v3 HTTP/JSON gateway), usable on
its own. ``ftmap.testing.etcd`` starts real etcd servers for tests.
"""

from ._etcd import EtcdDisconnectedError, EtcdRefusedError, EtcdSource, EtcdSourceError, EtcdSourceStatus
from ._etcd_client import (
    DeleteResult,
    EtcdAuthError,
    EtcdClient,
    EtcdClosedError,
    EtcdCompactedError,
    EtcdError,
    EtcdUnavailableError,
    EtcdWatch,
    Event,
    KeyValue,
    Member,
    MemberStatus,
    RangeResult,
    TxnResult,
    WatchResponse,
    compare,
    op_delete,
    op_put,
    op_range,
    prefix_range_end,
)
from ._etcd_keys import KeyConflictError, KeyLayout

__all__ = [
    "DeleteResult",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdClosedError",
    "EtcdCompactedError",
    "EtcdDisconnectedError",
    "EtcdError",
    "EtcdRefusedError",
    "EtcdSource",
    "EtcdSourceError",
    "EtcdSourceStatus",
    "EtcdUnavailableError",
    "EtcdWatch",
    "Event",
    "KeyConflictError",
    "KeyLayout",
    "KeyValue",
    "Member",
    "MemberStatus",
    "RangeResult",
    "TxnResult",
    "WatchResponse",
    "compare",
    "op_delete",
    "op_put",
    "op_range",
    "prefix_range_end",
]
