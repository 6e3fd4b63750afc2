"""ftmap: concurrent maps for free-threaded Python.

- UnsafeMap: a dict that detects concurrent misuse across threads and reports
  it as Go's runtime does.
- SyncMap: Go's sync.Map (read map, dirty map, misses promotion), linearizable.
- ShardedMap: per-shard locks, atomic compound operations, no deadlocks.
- SnapshotMap: immutable snapshots swapped by one reference store; ConfigWatcher
  keeps one equal to a configuration source: a file (FileSource) or an etcd prefix
  (ftmap.etcd.EtcdSource).

``implementation`` is "c" when the C core (ftmap._core) is in use, else "python";
``implementation_reason`` says why (see ftmap._impl and docs/c-core.md).
"""

from typing import TYPE_CHECKING

from . import _impl
from ._config import ConfigWatcher, WatchStatus
from ._config_errors import (
    ConfigError,
    ConfigLimitError,
    EmptyConfigError,
    NotRegularFileError,
    ParseError,
    PublishError,
    SourceError,
    UnsettledError,
    ValidationError,
    ValidatorError,
    WatcherStoppedError,
)
from ._config_file import FileSource
from ._config_parse import ConfigLimits, parse_config
from ._config_source import ConfigSource, Feed, Load, StopSignal
from ._errors import (
    ConcurrentIterationError,
    ConcurrentMapError,
    ConcurrentReadWriteError,
    ConcurrentWriteError,
    RecursiveUpdateError,
    ThreadInfo,
)
from ._markers import DELETE, MISSING
from ._snapshot import Change, FrozenDict, Snapshot, SnapshotReader, freeze
from ._sync import SyncMapStats
from ._unsafe import race_log
from .etcd import EtcdClient, EtcdSource, EtcdSourceStatus

# The C variant when implementation == "c" and the C core has it, else the pure-Python one
# (which always stays importable from its own module). One line per name in _impl.PURE.
if TYPE_CHECKING:
    from ._fnv import fnv1_32, fnv1a_32, fnv1a_64
    from ._sharded import ShardedMap, ShardedMapHandle
    from ._snapshot import SnapshotMap, SnapshotMapHandle
    from ._sync import SyncMap, SyncMapHandle
    from ._unsafe import UnsafeMap, UnsafeMapHandle
else:
    fnv1_32 = _impl.select("fnv1_32")
    fnv1a_32 = _impl.select("fnv1a_32")
    fnv1a_64 = _impl.select("fnv1a_64")
    ShardedMap = _impl.select("ShardedMap")
    ShardedMapHandle = _impl.select("ShardedMapHandle")
    SnapshotMap = _impl.select("SnapshotMap")
    SnapshotMapHandle = _impl.select("SnapshotMapHandle")
    SyncMap = _impl.select("SyncMap")
    SyncMapHandle = _impl.select("SyncMapHandle")
    UnsafeMap = _impl.select("UnsafeMap")
    UnsafeMapHandle = _impl.select("UnsafeMapHandle")

implementation = _impl.implementation
implementation_reason = _impl.implementation_reason

__all__ = [
    "DELETE",
    "MISSING",
    "Change",
    "ConcurrentIterationError",
    "ConcurrentMapError",
    "ConcurrentReadWriteError",
    "ConcurrentWriteError",
    "ConfigError",
    "ConfigLimitError",
    "ConfigLimits",
    "ConfigSource",
    "ConfigWatcher",
    "EmptyConfigError",
    "EtcdClient",
    "EtcdSource",
    "EtcdSourceStatus",
    "Feed",
    "FileSource",
    "FrozenDict",
    "Load",
    "NotRegularFileError",
    "ParseError",
    "PublishError",
    "RecursiveUpdateError",
    "ShardedMap",
    "ShardedMapHandle",
    "Snapshot",
    "SnapshotMap",
    "SnapshotMapHandle",
    "SnapshotReader",
    "SourceError",
    "StopSignal",
    "SyncMap",
    "SyncMapHandle",
    "SyncMapStats",
    "ThreadInfo",
    "UnsafeMap",
    "UnsafeMapHandle",
    "UnsettledError",
    "ValidationError",
    "ValidatorError",
    "WatchStatus",
    "WatcherStoppedError",
    "fnv1_32",
    "fnv1a_32",
    "fnv1a_64",
    "freeze",
    "implementation",
    "implementation_reason",
    "parse_config",
    "race_log",
]

__version__ = "0.1.0"
