"""The file source: a JSON, TOML, YAML or .env file, read only when it is a settled regular file.

Reading. Each look opens the path afresh (``O_NONBLOCK``, so that opening a
FIFO cannot block), fstat()s what it opened and refuses anything but a
regular file (a FIFO, a device such as /dev/zero, a directory, a socket:
NotRegularFileError), then reads at most ``limits.max_bytes + 1`` bytes
(more is a ConfigLimitError). Whatever the path names now is what is read:
an editor's atomic save, delete-then-recreate and a Kubernetes ConfigMap's
``..data`` symlink swap are all just "the bytes changed".

Settling. A file that is still being written must not be published half
written: TOML, YAML and .env prefixes often parse. So a content is offered
only once it has stopped changing: two looks ``quiet`` seconds apart must
agree on size, mtime and content (SHA-256). That holds for the initial
load and ``reload()`` too (which therefore take at least ``quiet``
seconds) and for both backends. A file still changing after ``max_delay``
seconds of looks is reported as UnsettledError, not loaded, and looked at
again on the next check. The limit: a writer that pauses for longer than
``quiet`` in the middle of a file can still be read half written (then
it is published only if that half parses and validates). Writers should
save atomically: write a temporary file in the same directory, then
rename it over the config (``os.replace``); a reader then sees the old
bytes or the new, never a mix.

Backends. "poll" looks every ``interval`` seconds with the standard
library. "watchfiles" follows the directory's events (the ``watch`` extra)
and still looks every ``interval`` should an event be missed; when the
directory is deleted (or replaced) it reports that and watches again once
it is back.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config_errors import (
    ConfigError,
    ConfigLimitError,
    NotRegularFileError,
    SourceError,
    UnsettledError,
)
from ._config_parse import ConfigLimits, parse_config
from ._config_source import Feed, Load

__all__ = ["BACKENDS", "FileSource"]

log = logging.getLogger("ftmap")

BACKENDS = ("poll", "watchfiles")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Look:
    """One read of the file: what two looks must agree on for the content to count as settled."""

    size: int
    mtime_ns: int
    digest: str
    data: bytes
    sequence: int  # the order of the read among all reads of this source

    def same_as(self, other: _Look | None) -> bool:
        return other is not None and (self.size, self.mtime_ns, self.digest) == (
            other.size,
            other.mtime_ns,
            other.digest,
        )


def _read_at_most(fd: int, most: int) -> bytes:
    """Read from fd until its end or until ``most`` bytes have been read."""
    chunks: list[bytes] = []
    total = 0
    while total < most:
        chunk = os.read(fd, min(_CHUNK, most - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def _failure_key(error: ConfigError | OSError) -> Hashable:
    """One spell of the same trouble counts once: the key that says "the same trouble"."""
    if isinstance(error, OSError):
        return ("unreadable", type(error).__name__, error.errno)
    if isinstance(error, NotRegularFileError):
        return ("not a regular file", error.kind)
    if isinstance(error, ConfigLimitError):
        return ("limit", error.limit)
    return (type(error).__name__,)


class FileSource:
    """A config file as a ConfigWatcher source (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        format: str,
        *,
        limits: ConfigLimits,
        interval: float = 0.5,
        quiet: float = 0.2,
        max_delay: float = 2.0,
        backend: str = "poll",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f'backend must be "poll" or "watchfiles", not {backend!r}')
        for name, value in (("interval", interval), ("quiet", quiet), ("max_delay", max_delay)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if backend == "watchfiles":
            try:
                import watchfiles  # noqa: F401, PLC0415  (optional: the watch extra)
            except ImportError as error:
                raise ImportError(
                    'backend="watchfiles" needs watchfiles: pip install ftmap[watch]'
                ) from error
        self.path = Path(path)
        self.format = format
        self.limits = limits
        self.interval, self.quiet, self.max_delay = float(interval), float(quiet), float(max_delay)
        self.backend = backend
        self._lock = threading.Lock()  # guards the two fields below
        self._reads = 0  # reads begun: each look's sequence number
        self._settled: _Look | None = None  # the last look offered (it had settled)

    def describe(self) -> str:
        return f"file {self.path}"

    def close(self) -> None:
        """Nothing to close: every wait is on the feed's stop signal."""

    # -- reading ---------------------------------------------------------------------------

    def _look(self) -> _Look:
        """Open the path afresh, refuse anything but a regular file, read at most max_bytes + 1."""
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        with self._lock:  # the sequence orders the reads: a later sequence read later bytes
            self._reads += 1
            sequence = self._reads
        fd = os.open(self.path, flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotRegularFileError(str(self.path), _kind(info.st_mode))
            if flags & getattr(os, "O_NONBLOCK", 0):
                os.set_blocking(fd, True)  # a regular file: plain reads from here on
            limit = self.limits.max_bytes
            if info.st_size > limit:
                raise ConfigLimitError("max_bytes", limit, f"{self.path} is {info.st_size} bytes")
            # The read loop is a function of its own: on CPython 3.13 a loop back-edge inside
            # this `try` can fall outside the exception table (python/cpython#130279), and an
            # asynchronous exception delivered there would skip the `finally` (a leaked fd).
            data = _read_at_most(fd, limit + 1)
            if len(data) > limit:
                raise ConfigLimitError("max_bytes", limit, f"{self.path} grew past the limit while read")
        finally:
            os.close(fd)
        return _Look(info.st_size, info.st_mtime_ns, hashlib.sha256(data).hexdigest(), data, sequence)

    def _settle(self, feed: Feed, first: _Look) -> _Look | None:
        """Look again every ``quiet`` seconds until two looks agree; None if stopping.

        Raises UnsettledError after max_delay seconds of change, and whatever a look raises.
        """
        started = time.monotonic()
        previous = first
        while True:
            if feed.wait(self.quiet):
                return None
            current = self._look()
            if current.same_as(previous):
                return current
            if time.monotonic() - started >= self.max_delay:
                raise UnsettledError(
                    f"{self.path} was still changing after {self.max_delay:g} s (looked every "
                    f"{self.quiet:g} s): not loaded; save it atomically (write a temporary file, then rename)"
                )
            previous = current

    def _load_of(self, look: _Look) -> Load:
        def content() -> dict[str, Any]:
            return parse_config(look.data, self.format, limits=self.limits)

        return Load(revision=look.digest, content=content, order=look.sequence)

    def _settled_load(self, feed: Feed, first: _Look | None = None) -> Load | None:
        """The file's content once settled, or None after reporting why not (or when stopping)."""
        try:
            look = first if first is not None else self._look()
            with self._lock:
                unchanged = look.same_as(self._settled)
            if not unchanged:
                settled = self._settle(feed, look)
                if settled is None:
                    return None
                look = settled
                with self._lock:
                    if self._settled is None or look.sequence > self._settled.sequence:
                        self._settled = look
        except (ConfigError, OSError) as error:
            with self._lock:
                self._settled = None
            feed.fail(error, _failure_key(error))
            return None
        return self._load_of(look)

    def load(self, feed: Feed) -> Load | None:
        """Look now and wait for the content to settle (at least ``quiet`` seconds)."""
        return self._settled_load(feed)

    def _check(self, feed: Feed) -> None:
        """One look: an unchanged file costs one read and an offer that the watcher drops at once."""
        load = self._settled_load(feed)
        if load is not None:
            feed.offer(load)

    # -- watching ----------------------------------------------------------------------------

    def watch(self, feed: Feed) -> None:
        if self.backend == "poll":
            while not feed.wait(self.interval):
                self._check(feed)
        else:
            self._follow_events(feed)

    def _follow_events(self, feed: Feed) -> None:
        from watchfiles import watch  # noqa: PLC0415  (checked importable in __init__)

        directory = self.path.absolute().parent
        trouble: Hashable | None = None  # the watch problem reported last: each is reported once
        while not feed.stopping():
            try:
                identity = _identity(directory)
            except OSError as error:
                # The directory is gone (or unreachable): nothing to watch and no file to read.
                # Reported once; looked for again every interval.
                key: Hashable = ("directory", type(error).__name__, error.errno)
                if key != trouble:
                    trouble = key
                    feed.fail(_directory_error(error, directory), key)
                feed.wait(self.interval)
                continue
            if trouble is not None:
                trouble = None
                self._check(feed)  # it is back: what is in it now, at once
            try:
                for _changes in watch(
                    directory,
                    stop_event=feed.stop_signal,
                    debounce=max(1, int(self.max_delay * 1000)),
                    step=max(1, int(self.quiet * 1000)),
                    rust_timeout=max(1, int(self.interval * 1000)),
                    yield_on_timeout=True,  # a look every interval too, should an event be missed
                    recursive=False,
                ):
                    self._check(feed)
                    if _identity_or_none(directory) != identity:
                        break  # deleted or replaced: the watch is on a dead inode; start again
            except Exception as error:
                if _identity_or_none(directory) != identity:
                    continue  # the directory went as the watch started: reported as that, above
                # watchfiles could not watch (too many watches, no permission ...): reported
                # once, then looked at every interval until it can.
                key = ("watch", type(error).__name__, str(error))
                if key != trouble:
                    trouble = key
                    feed.fail(_watch_error(error, directory), key)
                if not feed.wait(self.interval):
                    self._check(feed)


def _identity(directory: Path) -> tuple[int, int]:
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory))
    return (info.st_dev, info.st_ino)


def _identity_or_none(directory: Path) -> tuple[int, int] | None:
    try:
        return _identity(directory)
    except OSError:
        return None


def _directory_error(error: OSError, directory: Path) -> OSError:
    code = error.errno or errno.ENOENT
    reason = "is gone" if code == errno.ENOENT else f"cannot be watched: {error.strerror or error}"
    return type(error)(code, f"the directory being watched {reason}", str(directory))


def _watch_error(error: Exception, directory: Path) -> ConfigError | OSError:
    if isinstance(error, ConfigError | OSError):
        return error
    wrapped = SourceError(f"watchfiles cannot watch {directory}: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped
