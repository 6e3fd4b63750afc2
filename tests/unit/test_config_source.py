"""ConfigWatcher with a source that is not a file: the interface issue 14's etcd source plugs into.

MemorySource is a complete second implementation of the source interface
(thread-safe, blocking, woken by close()), fed by the test the way an etcd
watch stream feeds revisions: it is what proves that the watcher's
machinery - validate-then-swap, one publish per revision, status,
on_error, stop - does not depend on files.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Hashable, Mapping
from typing import Any

import pytest

from ftmap import ConfigWatcher, ParseError, SnapshotMap, ValidationError
from ftmap._config import ConfigLimitError, ConfigSource, Feed, Load, SourceError
from tests.threads import within

pytestmark = pytest.mark.thread_unsafe(reason="watcher threads")

WAIT = 10.0
CLOSED = object()


class MemorySource:
    """States put by the test, offered in order by the watcher's thread; close() wakes it."""

    def __init__(self, revision: int, content: Mapping[str, Any]) -> None:
        self._lock = threading.Lock()
        self._current: tuple[int, Mapping[str, Any]] = (revision, content)
        self._events: queue.Queue[Any] = queue.Queue()
        self.close_calls = 0
        self.watch_calls = 0
        self.offers: list[tuple[int, bool]] = []  # (revision, published)

    def put(self, revision: int, content: Mapping[str, Any]) -> None:
        self._events.put((revision, content))

    def put_failure(self, error: Exception, key: Hashable | None) -> None:
        self._events.put(("fail", error, key))

    def put_raise(self, error: Exception) -> None:
        self._events.put(("raise", error))

    def describe(self) -> str:
        return "memory"

    def load(self, feed: Feed) -> Load | None:
        with self._lock:
            revision, content = self._current
        return Load(revision, content, order=revision)

    def watch(self, feed: Feed) -> None:
        with self._lock:
            self.watch_calls += 1
        while not feed.stopping():
            event = self._events.get()  # blocks with no timeout: only close() wakes it for stop
            if event is CLOSED:
                return
            if event[0] == "sync":
                event[1].set()
            elif event[0] == "fail":
                feed.fail(event[1], event[2])
            elif event[0] == "raise":
                raise event[1]
            else:
                revision, content = event
                with self._lock:
                    self._current = (revision, content)
                self.offers.append((revision, feed.offer(Load(revision, content, order=revision))))

    def close(self) -> None:
        with self._lock:
            self.close_calls += 1
        self._events.put(CLOSED)

    def drained(self, watcher: ConfigWatcher) -> None:
        """Wait until every state put so far has been handled."""
        done = threading.Event()
        self._events.put(("sync", done))
        assert done.wait(WAIT), watcher.status


def test_a_memory_source_is_a_config_source() -> None:
    assert isinstance(MemorySource(1, {}), ConfigSource)


def test_each_revision_is_published_exactly_once_and_in_order() -> None:
    source = MemorySource(10, {"n": 10})
    store: SnapshotMap[str, Any] = SnapshotMap()
    watcher = ConfigWatcher(store, source)
    published: list[int] = []
    store.subscribe(lambda change: published.append(change.new.version))
    assert store == {"n": 10} and watcher.status.revision == 10
    with watcher:
        for revision in range(11, 40):
            source.put(revision, {"n": revision // 2})  # two revisions in a row share content
            if revision % 5 == 0:
                source.put(revision - 3, {"n": -1})  # a replayed, older revision: stale
                source.put(revision, {"n": -2})  # the same revision again: already published
        assert watcher.wait_for(lambda s: s.revision == 39, WAIT), watcher.status
    revisions = [watcher.revision_of(version) for version in published]
    assert revisions == list(range(11, 40))  # every revision once, in order, same content or not
    assert all(store.snapshot() != {"n": -1} for _ in [0]) and store == {"n": 19}
    assert watcher.status.failures == 0 and watcher.status.reloads == 30


def test_a_bad_revision_is_refused_whole_and_the_next_published() -> None:
    source = MemorySource(1, {"port": 80})
    errors: list[Exception] = []

    def validate(config: dict[str, Any]) -> list[str]:
        return [] if config.get("port", 0) > 0 else ["port must be positive"]

    watcher = ConfigWatcher(SnapshotMap(), source, validate=validate, on_error=errors.append)
    with watcher:
        source.put(2, {"port": -1})
        source.put(3, lambda: {"port": int("x")})  # type: ignore[dict-item]  # a value that fails to decode
        source.put(4, {"port": 8080})
        assert watcher.wait_for(lambda s: s.revision == 4, WAIT), watcher.status
    assert [type(e) for e in errors] == [ValidationError, ParseError]
    assert [published for _, published in source.offers] == [False, False, True]
    assert watcher.store == {"port": 8080} and watcher.status.failures == 2


def test_a_source_failure_is_one_spell_until_the_source_confirms_it_is_current() -> None:
    source = MemorySource(5, {"a": 1})
    errors: list[Exception] = []
    watcher = ConfigWatcher(SnapshotMap(), source, on_error=errors.append)
    with watcher:
        for _ in range(3):
            source.put_failure(ConnectionError("etcd unreachable"), "disconnected")
        source.drained(watcher)
        status = watcher.status
        assert [type(e) for e in errors] == [ConnectionError] and status.failures == 1
        assert isinstance(status.current_error, ConnectionError) and watcher.store == {"a": 1}
        source.put(5, {"a": 1})  # reconnected: a resync at the revision already published
        assert watcher.wait_for(lambda s: s.current_error is None, WAIT), watcher.status
        assert watcher.status.reloads == 1  # confirmed, not published again
        source.put_failure(ConnectionError("etcd unreachable"), "disconnected")
        assert watcher.wait_for(lambda s: isinstance(s.current_error, ConnectionError), WAIT)
    assert len([e for e in errors if isinstance(e, ConnectionError)]) == 2  # a new spell counts again


def test_a_source_that_raises_is_reported_and_watched_again() -> None:
    source = MemorySource(1, {"a": 1})
    errors: list[Exception] = []
    watcher = ConfigWatcher(SnapshotMap(), source, on_error=errors.append)
    with watcher:
        source.put_raise(ValueError("stream broke"))
        source.put(2, {"a": 2})
        assert watcher.wait_for(lambda s: s.revision == 2, WAIT), watcher.status
    assert isinstance(errors[0], SourceError) and isinstance(errors[0].__cause__, ValueError)
    assert source.watch_calls == 2


def test_stop_closes_the_source_and_returns_with_its_thread_gone() -> None:
    source = MemorySource(1, {"a": 1})
    watcher = ConfigWatcher(SnapshotMap(), source).start()
    assert watcher.status.running
    assert within(WAIT, watcher.stop) is True  # the source blocks in queue.get(): close() wakes it
    assert source.close_calls == 1 and not watcher.status.running and watcher.status.stopped
    source.put(2, {"a": 2})
    assert not watcher.reload() and watcher.store == {"a": 1}


def test_the_watchers_limits_apply_to_every_source() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(200):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(ConfigLimitError):
        ConfigWatcher(SnapshotMap(), MemorySource(1, deep))


def test_file_options_are_refused_with_a_source() -> None:
    with pytest.raises(TypeError, match="interval, quiet: options of a file"):
        ConfigWatcher(SnapshotMap(), MemorySource(1, {}), interval=1, quiet=0)
    watcher = ConfigWatcher(SnapshotMap(), MemorySource(1, {"a": 1}), interval=0.5)  # the default: fine
    with pytest.raises(AttributeError, match="not a file"):
        _ = watcher.path
    with pytest.raises(TypeError, match="a file path or a ConfigSource"):
        ConfigWatcher(SnapshotMap(), 42)  # type: ignore[arg-type]


class FailingSource(MemorySource):
    def load(self, feed: Feed) -> Load | None:
        feed.fail(ConnectionRefusedError("no etcd member answered"), "disconnected")
        return None


def test_a_source_that_cannot_load_raises_its_error_from_the_constructor() -> None:
    with pytest.raises(ConnectionRefusedError, match="no etcd member"):
        ConfigWatcher(SnapshotMap(), FailingSource(1, {}))
    watcher = ConfigWatcher(SnapshotMap(), FailingSource(1, {}), must_load=False)
    assert isinstance(watcher.status.current_error, ConnectionRefusedError)
