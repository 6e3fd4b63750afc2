"""Where a ConfigWatcher's content comes from: the source interface.

A ConfigWatcher is one machine - validate-then-swap into a SnapshotMap,
``status``, ``on_error``/``on_reload``, ``wait_for``, ``stop()`` - fed by one
*source*. A file is one source (FileSource, in _config_file); a store such
as etcd is another. A source only says what the content is now and when it
changed; it never touches the store, the status or the callbacks.

``ConfigWatcher(store, source)`` takes any object with these four methods
(``ConfigWatcher(store, path)`` builds a FileSource)::

    class ConfigSource(Protocol):
        def describe(self) -> str
        def load(self, feed: Feed) -> Load | None
        def watch(self, feed: Feed) -> None
        def close(self) -> None

``describe()``
    A short name for logs, messages and the watcher thread's name, e.g.
    "file /etc/app/app.toml" or "etcd http://10.0.0.1:2379 /app/".

``load(feed)``
    Read the whole current content once, synchronously, and return it as a
    Load; the watcher offers it (the initial load in the constructor, and
    ``reload()``; called on the caller's thread, possibly on several threads
    at once). If it cannot, report why with ``feed.fail(...)`` and return
    None (or raise a ConfigError or OSError: the same, with ``key=None``).
    It must not block for ever: bound every wait by the source's own
    timeouts, and wait with ``feed.wait`` so that ``stop()`` cuts it short
    (return None once ``feed.stopping()``).

``watch(feed)``
    Run on the watcher's own thread from ``start()`` until ``stop()``:
    offer every new state with ``feed.offer(load)`` and report every
    failure of the source's own with ``feed.fail(error, key)``. Poll with
    ``feed.wait(seconds)`` (it returns True, at once, when stop is
    requested), or block in the source's own wait and check
    ``feed.stopping()`` (``feed.stop_signal`` has ``is_set()`` and
    ``wait(timeout)`` for libraries that take an event). Return once
    ``feed.stopping()``; returning earlier ends the watching (not an
    error: a source with nothing more to watch). An Exception that
    escapes ``watch`` is reported (as a SourceError unless it is a
    ConfigError or OSError) and ``watch`` is called again after a backoff
    (0.1 s doubling to 5 s, reset by the next publish), so a source may
    simply raise on a lost connection; a BaseException that is not an
    Exception stops the watcher (see ConfigWatcher).

``close()``
    Called once by ``stop()``, on the stopping thread, after
    ``feed.stopping()`` has become true, while ``watch`` or ``load`` may
    still be running on other threads: unblock whatever they are blocked in
    (close a socket, cancel a request). Must be thread-safe, idempotent and
    quick, and must not raise (an Exception is logged).

What a source gets, ``Feed``::

    class Feed(Protocol):
        stop_signal: StopSignal                    # is_set(), wait(timeout); never set it
        def stopping(self) -> bool
        def wait(self, seconds: float) -> bool     # True: stop requested (returns at once)
        def offer(self, load: Load) -> bool        # True: published
        def fail(self, error: ConfigError | OSError, key: Hashable | None = None) -> None

``feed.offer(load)`` runs validate-then-swap for one state. Offers are
serialised (one parse-validate-publish at a time, from every thread), and
each is decided, under that serialisation, in this order:

1. *Stale*: ``load.order`` is not None and is lower than the greatest
   order offered so far, or equal to it with a different revision: dropped
   (not published, not reported; counted in ``checks``). This is what
   keeps an older state from being published over a newer one when two
   threads read at once, and what makes a replayed revision harmless.
2. *Current*: ``load.revision`` equals the revision now published: nothing
   to do; the source is confirmed healthy again (``status.current_error``
   is cleared).
3. *Known bad*: ``load.revision`` equals the revision that failed last:
   not parsed or reported again.
4. Otherwise the content is produced (``load.content``, called if it is
   callable), checked against the watcher's ConfigLimits (depth, nodes),
   validated, checked for emptiness, and published with one
   ``store.replace`` - unless ``stop()`` has begun, checked under the
   publish lock. A failure is reported once (``status``, ``on_error``, the
   "ftmap" logger) and the last good config stays.

``feed.fail(error, key)`` reports a failure of the source itself (file
missing, connection lost). ``key`` names the trouble: a failure whose key
equals that of the last failure reported is counted once (a file missing
for a minute is one failure, not one per look; "disconnected" for an
outage); ``None`` always counts. The next publish, or an offer of the
current revision, ends the spell. The error is a ConfigError subclass of
the source's own, or an OSError.

``Load`` is one whole state of the source::

    @dataclass(frozen=True)
    class Load:
        revision: Hashable                   # same revision <=> same state
        content: Mapping[str, Any] | Callable[[], Mapping[str, Any]]
        order: int | None = None             # the source's own order of states

``revision`` identifies the state (a file: the SHA-256 of its bytes, so
that rewriting the same bytes publishes nothing; etcd: the revision
number). It is ``status.revision`` once published, and
``watcher.revision_of(version)`` maps a published store version back to
it. ``content`` is the parsed mapping, or a callable that parses it (called
only when the revision is new, inside the watcher's error handling: raise
ParseError for bad content). ``order`` is increasing in the source's time
(a file: the sequence number of the read; etcd: the revision).

An etcd source, for example: ``load`` is one range read of the prefix at
revision R, returned as ``Load(R, mapping, order=R)``; ``watch`` follows
the watch stream from R + 1, groups the events of one revision and offers
each revision as one Load (``revision = order = the revision``), so each
revision is published exactly once and in order, and a resync after a
compaction or a reconnect re-offers what is already published harmlessly;
a lost connection is ``feed.fail(ConnectionError(...), key="disconnected")``
and a reconnect waits with ``feed.wait(backoff)``; ``close`` closes the
HTTP connection that ``watch`` is reading from.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ._config_errors import ConfigError

__all__ = ["ConfigSource", "Feed", "Load", "StopSignal"]


@dataclass(frozen=True)
class Load:
    """One whole state of a source (see the module docstring)."""

    revision: Hashable
    content: Mapping[str, Any] | Callable[[], Mapping[str, Any]]
    order: int | None = None


class StopSignal(Protocol):
    """Set once stop is requested. Read-only to a source."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Feed(Protocol):
    """What a ConfigWatcher gives its source (see the module docstring)."""

    @property
    def stop_signal(self) -> StopSignal: ...

    def stopping(self) -> bool: ...

    def wait(self, seconds: float) -> bool: ...

    def offer(self, load: Load) -> bool: ...

    def fail(self, error: ConfigError | OSError, key: Hashable | None = None) -> None: ...


@runtime_checkable
class ConfigSource(Protocol):
    """Where a ConfigWatcher's content comes from (see the module docstring)."""

    def describe(self) -> str: ...

    def load(self, feed: Feed) -> Load | None: ...

    def watch(self, feed: Feed) -> None: ...

    def close(self) -> None: ...
