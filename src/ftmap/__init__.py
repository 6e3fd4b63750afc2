"""ftmap: concurrent maps for free-threaded Python.

- UnsafeMap: a dict that detects concurrent misuse across threads and reports
  it as Go's runtime does.
- SyncMap: Go's sync.Map (read map, dirty map, misses promotion), linearizable.
"""

from ._errors import (
    ConcurrentIterationError,
    ConcurrentMapError,
    ConcurrentReadWriteError,
    ConcurrentWriteError,
    ThreadInfo,
)
from ._sync import SyncMap, SyncMapStats
from ._unsafe import UnsafeMap, race_log

__all__ = [
    "ConcurrentIterationError",
    "ConcurrentMapError",
    "ConcurrentReadWriteError",
    "ConcurrentWriteError",
    "SyncMap",
    "SyncMapStats",
    "ThreadInfo",
    "UnsafeMap",
    "race_log",
]

__version__ = "0.1.0"
