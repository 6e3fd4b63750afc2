"""ftmap: concurrent maps for free-threaded Python.

- UnsafeMap: a dict that detects concurrent misuse across threads and reports
  it as Go's runtime does.
- SyncMap: Go's sync.Map (read map, dirty map, misses promotion), linearizable.
- ShardedMap: per-shard locks, atomic compound operations, no deadlocks.
- SnapshotMap: immutable snapshots swapped by one reference store.
"""

from ._errors import (
    ConcurrentIterationError,
    ConcurrentMapError,
    ConcurrentReadWriteError,
    ConcurrentWriteError,
    RecursiveUpdateError,
    ThreadInfo,
)
from ._fnv import fnv1_32, fnv1a_32, fnv1a_64
from ._markers import DELETE, MISSING
from ._sharded import ShardedMap
from ._snapshot import Change, FrozenDict, Snapshot, SnapshotMap, SnapshotReader, freeze
from ._sync import SyncMap, SyncMapStats
from ._unsafe import UnsafeMap, race_log

__all__ = [
    "DELETE",
    "MISSING",
    "Change",
    "ConcurrentIterationError",
    "ConcurrentMapError",
    "ConcurrentReadWriteError",
    "ConcurrentWriteError",
    "FrozenDict",
    "RecursiveUpdateError",
    "ShardedMap",
    "Snapshot",
    "SnapshotMap",
    "SnapshotReader",
    "SyncMap",
    "SyncMapStats",
    "ThreadInfo",
    "UnsafeMap",
    "fnv1_32",
    "fnv1a_32",
    "fnv1a_64",
    "freeze",
    "race_log",
]

__version__ = "0.1.0"
