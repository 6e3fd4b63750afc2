"""EtcdSource: the keys under an etcd prefix as a ConfigWatcher source.

``ConfigWatcher(store, EtcdSource(endpoints, "/app/"))`` keeps ``store``
equal to the configuration under ``/app/`` through the same machinery as a
file (validate-then-swap, ``status``, ``on_error``, ``subscribe`` with diffs,
``rollback``, ``stop()``): switching from a file is a one-line change.

Consistency, revision by revision:

- **Initial load**: one range read of the prefix, at one revision R (etcd's
  linearizable read: R is current). That state is offered as revision R.
- **Then a watch from R + 1.** The events of one revision (one transaction)
  are applied together, and each revision that touched the prefix is offered
  once, in order, as one whole state (``Load(revision=r, order=r)``): one
  published snapshot per revision, never a partial transaction. The
  watcher's ``status.revision`` and ``revision_of(version)`` give the etcd
  revision of what is published.
- **A revision that does not parse** (bad JSON, a key conflict) **or does not
  validate** is refused as a whole: the last good config stays, the failure
  is reported, and the next revisions are applied on top of etcd's real state
  (so the revision that fixes it is published).
- **Disconnects** (the member stopped, crashed, lost its leader, or answers
  nothing): the last good config stays, ``feed.fail`` reports an
  EtcdDisconnectedError once per outage (``status.current_error`` says so
  until the source is current again), and the source reconnects with a
  jittered exponential backoff (``backoff_initial`` doubling to
  ``backoff_max``; each try walks every endpoint, starting after the one
  that failed, so a 3-member cluster fails over to a live member at once).
  The watch resumes from the last revision applied + 1: nothing lost,
  nothing reordered, nothing published twice.
- **Compaction**: if that revision has been compacted away, the source reads
  the whole prefix again at the current revision (a resync) and offers it
  once if it differs from what it had (a resync that finds the same content
  publishes nothing). The revisions in between cannot be recovered from
  etcd: they are skipped, counted in ``etcd_status.resyncs``.
- **Hung connections**: every request has a deadline (``timeout``, per
  endpoint tried). A watch silent for ``idle_timeout`` seconds is checked:
  the member is asked for its status (on a new connection, with the
  deadline); no answer means disconnected; an answer showing a newer store
  revision than the stream is known to cover restarts the watch from the
  last revision applied + 1 (a stream may be stalled while its member is
  fine). A new watch is known to cover the revision the source had applied
  when it opened it, not the store's revision its creation reports (the
  events in between are still owed); each response it sends raises that;
  a watch reopened by this check covers the revision the check found. So a
  quiet prefix in an etcd that moves on elsewhere costs one status request
  and one reopened watch per ``idle_timeout`` while etcd keeps moving, and
  nothing once it stops.
  Progress notifications are asked for and count as signs of life, but
  never move the resume point: etcd 3.4 can send one before the events it
  covers (etcd issues 15220 and 20221).
- **stop()**: the watcher closes the source, which aborts the request or
  watch in flight (its socket is shut down) and wakes a backoff wait, so the
  thread ends within milliseconds, not after a timeout.

Reads never touch the network: readers read the SnapshotMap.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from ._config import ConfigError
from ._config_source import Feed, Load
from ._etcd_client import (
    EtcdAuthError,
    EtcdClient,
    EtcdClosedError,
    EtcdCompactedError,
    EtcdError,
    EtcdWatch,
    Event,
    prefix_range_end,
)
from ._etcd_keys import Decoder, KeyLayout

__all__ = ["EtcdDisconnectedError", "EtcdRefusedError", "EtcdSource", "EtcdSourceError", "EtcdSourceStatus"]

log = logging.getLogger("ftmap")


class EtcdSourceError(ConfigError):
    """The etcd source could not read etcd (the cause is chained); the last good config was kept."""


class EtcdDisconnectedError(EtcdSourceError):
    """No etcd member answered; the source keeps the last good config and reconnects with backoff."""


class EtcdRefusedError(EtcdSourceError):
    """etcd refused the source (authentication, permission, TLS); it retries with backoff."""


@dataclass(frozen=True)
class EtcdSourceStatus:
    """What an EtcdSource knows about its connection (a copy)."""

    connected: bool  # a watch is open and confirmed
    endpoint: str | None  # the member watched now (or last)
    revision: int  # etcd's revision the source's state is current through (0: nothing read yet)
    reconnects: int = 0  # watches opened again after a failure
    resyncs: int = 0  # whole-prefix reads after the resume revision was compacted
    restarts: int = 0  # watches reopened after a silent stream was checked
    disconnected_since: float | None = None  # time.monotonic() when the current outage began


@dataclass(frozen=True)
class _State:
    """etcd's content of the prefix (key -> value) as of ``revision``; never changed once made."""

    revision: int
    flat: dict[bytes, bytes]


class _Restart(Exception):
    """The watch is to be reopened at once (no backoff): its stream went quiet while etcd moved on.

    ``revision``: the store revision the quiet check found, which the reopened watch covers.
    """

    def __init__(self, revision: int) -> None:
        super().__init__(revision)
        self.revision = revision


class _Backoff:
    """Exponential backoff with jitter: each delay uniform in [d/2, d], d doubling up to maximum."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self._next = initial

    def reset(self) -> None:
        self._next = self.initial

    def delay(self) -> float:
        ceiling = self._next
        self._next = min(self.maximum, self._next * 2)
        return random.uniform(ceiling / 2, ceiling)


class EtcdSource:
    """The keys under ``prefix`` in etcd, as a ConfigWatcher source (see the module docstring).

    ``endpoints``: a URL, a list of the cluster's members' URLs, or an
    EtcdClient (the source uses a fork of it: stopping the source does not
    close yours). ``client_options`` go to EtcdClient: ``timeout`` (5 s per
    request per endpoint), ``connect_timeout``, ``username``/``password``,
    ``ca_file``, ``cert_file``/``key_file``, ``verify``, ``ssl_context``.
    ``decode``, ``layout`` and ``separator``: how keys and values become the
    config (ftmap._etcd_keys: JSON values, ``/app/db/host`` ->
    ``{"db": {"host": ...}}``). ``idle_timeout``: seconds of silence on the
    watch before the member is checked. ``backoff_initial``/``backoff_max``:
    the reconnect backoff.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | EtcdClient,
        prefix: str | bytes,
        *,
        decode: str | Decoder = "json",
        layout: str = "nested",
        separator: str = "/",
        idle_timeout: float = 10.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        **client_options: Any,
    ) -> None:
        for name, value in (
            ("idle_timeout", idle_timeout),
            ("backoff_initial", backoff_initial),
            ("backoff_max", backoff_max),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if backoff_max < backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        self.keys = KeyLayout(prefix, decode=decode, layout=layout, separator=separator)
        if isinstance(endpoints, EtcdClient):
            if client_options:
                raise TypeError(f"{sorted(client_options)}: give these to the EtcdClient, not with one")
            self.client = endpoints.fork()
        else:
            self.client = EtcdClient(endpoints, **client_options)
        self.idle_timeout = float(idle_timeout)
        self.backoff_initial, self.backoff_max = float(backoff_initial), float(backoff_max)
        # _lock guards _state, _status and _closed; held briefly, never across I/O or an offer.
        # _changed (on _lock) is notified whenever _status changes, for wait_for.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state: _State | None = None  # replaced as a whole, only by a newer revision
        self._status = EtcdSourceStatus(connected=False, endpoint=None, revision=0)
        self._closed = False

    # -- what a ConfigWatcher calls -------------------------------------------------------

    def describe(self) -> str:
        return f"etcd {','.join(self.client.endpoints)} {self.keys.prefix.decode('utf-8', 'replace')}"

    def __repr__(self) -> str:
        return f"EtcdSource({self.describe()})"

    @property
    def etcd_status(self) -> EtcdSourceStatus:
        with self._lock:
            return self._status_locked()

    def _status_locked(self) -> EtcdSourceStatus:
        # The revision lives in _state (replaced at every revision); the rest in _status.
        revision = self._state.revision if self._state is not None else 0
        return self._status if self._status.revision == revision else replace(self._status, revision=revision)

    def wait_for(self, predicate: Callable[[EtcdSourceStatus], bool], timeout: float) -> bool:
        """Wait until predicate(etcd_status) holds (checked at every change of it); False on timeout."""
        # No loop inside the `with`: on CPython 3.13 a loop's back-edge there can fall outside
        # the exception table (python/cpython#130279), and a KeyboardInterrupt delivered on it
        # would leave _lock held, and the source stuck at its next status change.
        # Condition.wait_for loops in its own frame: an exception there leaves through this call.
        with self._changed:
            return bool(self._changed.wait_for(lambda: predicate(self._status_locked()), timeout))

    def _set_status_locked(self, status: EtcdSourceStatus) -> None:
        self._status = status
        self._changed.notify_all()

    @property
    def revision(self) -> int:
        """The etcd revision the source's state is current through (0 before the first read)."""
        with self._lock:
            return self._state.revision if self._state is not None else 0

    def close(self) -> None:
        """Abort whatever is in flight (a range read, a status check, the watch). Idempotent."""
        with self._lock:
            self._closed = True
        self.client.close()

    def load(self, feed: Feed) -> Load | None:
        """One range read of the whole prefix, at one revision: the state to offer.

        If the prefix holds exactly what the source already has, the load is
        the source's current revision (nothing new to publish, even though
        etcd's revision moved on elsewhere); otherwise the read's revision.
        """
        if feed.stopping():
            return None
        try:
            state = self._read_prefix()
        except EtcdClosedError:
            return None
        except EtcdError as error:
            raise self._source_error(error) from error
        with self._lock:
            current = self._state
            if current is not None and current.flat == state.flat and current.revision <= state.revision:
                state = current
            elif current is None or state.revision > current.revision:
                self._state = state
                self._changed.notify_all()
        return self._load_of(state)

    def watch(self, feed: Feed) -> None:
        """Follow the prefix until stop: see the module docstring for every fault."""
        backoff = _Backoff(self.backoff_initial, self.backoff_max)
        resync = False
        restarted_at = 0  # the revision that restarted the watch just before (0: not a restart)
        while not feed.stopping():
            covered, restarted_at = restarted_at, 0
            try:
                if self._current() is None:
                    load = self.load(feed)
                    if load is not None:
                        feed.offer(load)
                    continue
                if resync:
                    self._resync(feed)
                    resync = False
                self._follow(feed, backoff, covered)
            except _Restart as restart:
                restarted_at = restart.revision
                continue
            except EtcdCompactedError as error:
                log.warning("etcd source %s: %s; reading the whole prefix again", self.describe(), error)
                resync = True
                continue
            except EtcdClosedError:
                return  # close(): the watcher is stopping
            except (EtcdError, EtcdSourceError, OSError) as error:
                if feed.stopping():
                    return
                self._disconnected(feed, error)
                if feed.wait(backoff.delay()):
                    return

    # -- reading and following ---------------------------------------------------------------

    def _current(self) -> _State | None:
        with self._lock:
            return self._state

    def _read_prefix(self) -> _State:
        result = self.client.range(self.keys.prefix, prefix_range_end(self.keys.prefix))
        return _State(result.revision, {kv.key: kv.value for kv in result.kvs})

    def _load_of(self, state: _State) -> Load:
        return Load(state.revision, partial(self.keys.build, state.flat), order=state.revision)

    def _resync(self, feed: Feed) -> None:
        """After a compaction: the whole prefix at the current revision; offered once if it changed."""
        state = self._read_prefix()
        with self._lock:
            current = self._state
            if current is not None and state.revision <= current.revision:
                return
            changed = current is None or current.flat != state.flat
            self._state = state
            self._set_status_locked(replace(self._status, resyncs=self._status.resyncs + 1))
        if changed:
            feed.offer(self._load_of(state))

    def _follow(self, feed: Feed, backoff: _Backoff, covered: int = 0) -> None:
        """Open a watch from the state's revision + 1 and apply what it says, until stop or a failure.

        ``covered``: a store revision this watch is known to cover although it has not said so
        (the one a quiet check found before restarting it: the restarted watch replays from
        the state's revision + 1 whatever came before it).
        """
        state = self._current()
        assert state is not None
        watch = self.client.watch(
            self.keys.prefix,
            prefix_range_end(self.keys.prefix),
            start_revision=state.revision + 1,
            progress_notify=True,
        )
        try:
            self._connected(feed, watch.endpoint)
            backoff.reset()
            # seen: the newest store revision the stream is known to have delivered everything
            # up to. Not the created response's revision: that is the store's revision when the
            # watch was made, and a watch made behind it (etcd moved on since the state's
            # revision) still owes the events in between; if its stream stalled before sending
            # them, a check against the created revision would never notice unless etcd moved on
            # again. So: the state's revision, raised by every response and by ``covered``.
            # The loop is a function of its own: on CPython 3.13 a loop back-edge inside this
            # `try` can fall outside the exception table (python/cpython#130279), and an
            # asynchronous exception delivered there would skip the `finally` (a leaked watch).
            self._read_watch(feed, watch, max(state.revision, covered))
        except EtcdCompactedError:
            raise
        except (EtcdError, OSError):
            self.client.avoid(watch.endpoint)  # the next try starts with another member
            raise
        finally:
            watch.close()

    def _read_watch(self, feed: Feed, watch: EtcdWatch, seen: int) -> None:
        """Apply the watch's responses, revision by revision, until stop or a failure.

        ``seen``: the store revision the stream is known to cover (see _follow); a silence of
        idle_timeout is checked against it.
        """
        pending: list[Event] = []  # the events of a fragmented response, until its last part
        while not feed.stopping():
            response = watch.read(self.idle_timeout)
            if response is None:
                self._check_quiet_stream(watch.endpoint, seen)
                continue
            seen = max(seen, response.revision)
            pending.extend(response.events)
            if response.fragment:
                continue
            events, pending = pending, []
            self._apply(feed, events)

    def _check_quiet_stream(self, endpoint: str, seen: int) -> None:
        """The watch said nothing for idle_timeout: is its member alive, and has etcd moved on?"""
        status = self.client.status(endpoint)  # raises if the member does not answer in time
        if status.revision > seen:
            with self._lock:
                self._set_status_locked(replace(self._status, restarts=self._status.restarts + 1))
            raise _Restart(status.revision)

    def _apply(self, feed: Feed, events: Sequence[Event]) -> None:
        """Apply the events revision by revision, offering each revision's whole state once."""
        start = 0
        while start < len(events):
            revision = events[start].revision
            end = start
            while end < len(events) and events[end].revision == revision:
                end += 1
            with self._lock:
                current = self._state
                assert current is not None
                if revision <= current.revision:  # already in the state (a replay, or a reload got it)
                    start = end
                    continue
                flat = dict(current.flat)
                for event in events[start:end]:
                    if event.type == "DELETE":
                        flat.pop(event.kv.key, None)
                    else:
                        flat[event.kv.key] = event.kv.value
                state = _State(revision, flat)
                self._state = state
                self._changed.notify_all()
            feed.offer(self._load_of(state))
            start = end

    # -- connection state --------------------------------------------------------------------

    def _connected(self, feed: Feed, endpoint: str) -> None:
        with self._lock:
            if self._closed:
                raise EtcdClosedError("the source is closed", endpoint=endpoint)
            was = self._status
            self._set_status_locked(
                replace(
                    was,
                    connected=True,
                    endpoint=endpoint,
                    reconnects=was.reconnects + (1 if was.disconnected_since is not None else 0),
                    disconnected_since=None,
                )
            )
            state = self._state
        if was.disconnected_since is not None:
            log.info(
                "etcd source %s: watching again on %s after %.2f s",
                self.describe(),
                endpoint,
                time.monotonic() - was.disconnected_since,
            )
        if state is not None:
            # The state the watch resumes from, offered again: after an outage this ends it on
            # status ("current"); and should an earlier offer of it have been cut short (an
            # exception out of watch), it is published now instead of being skipped.
            feed.offer(self._load_of(state))

    def _disconnected(self, feed: Feed, error: BaseException) -> None:
        with self._lock:
            was = self._status
            self._set_status_locked(
                replace(was, connected=False, disconnected_since=was.disconnected_since or time.monotonic())
            )
        reportable = self._source_error(error)
        key = "disconnected" if isinstance(reportable, EtcdDisconnectedError) else ("refused", str(error))
        feed.fail(reportable, key)

    def _source_error(self, error: BaseException) -> EtcdSourceError:
        if isinstance(error, EtcdSourceError):
            return error
        kind = EtcdRefusedError if isinstance(error, EtcdAuthError) else EtcdDisconnectedError
        what = "refused" if kind is EtcdRefusedError else "disconnected"
        wrapped = kind(f"etcd {what} ({self.describe()}): {type(error).__name__}: {error}")
        wrapped.__cause__ = error
        return wrapped
