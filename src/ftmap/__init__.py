"""ftmap: concurrent maps for free-threaded Python.

- UnsafeMap: a dict that detects concurrent misuse across threads and reports
  it as Go's runtime does.
- SyncMap: Go's sync.Map (read map, dirty map, misses promotion), linearizable.
- ShardedMap: per-shard locks, atomic compound operations, no deadlocks.
- SnapshotMap: immutable snapshots swapped by one reference store; ConfigWatcher
  keeps one equal to a configuration file.
"""

from ._config import (
    ConfigError,
    ConfigWatcher,
    EmptyConfigError,
    ParseError,
    ValidationError,
    WatchStatus,
    parse_config,
)
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
    "ConfigError",
    "ConfigWatcher",
    "EmptyConfigError",
    "FrozenDict",
    "ParseError",
    "RecursiveUpdateError",
    "ShardedMap",
    "Snapshot",
    "SnapshotMap",
    "SnapshotReader",
    "SyncMap",
    "SyncMapStats",
    "ThreadInfo",
    "UnsafeMap",
    "ValidationError",
    "WatchStatus",
    "fnv1_32",
    "fnv1a_32",
    "fnv1a_64",
    "freeze",
    "parse_config",
    "race_log",
]

__version__ = "0.1.0"
