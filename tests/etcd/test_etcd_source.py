"""EtcdSource under a ConfigWatcher, against real etcd servers: consistency per revision and every fault
of issue 14 (etcd stopped and restarted, compaction, a member killed incl. the leader, bad values, hung
and slow connections, auth, TLS), each asserting what the issue promises."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ftmap import ConfigWatcher, SnapshotMap, ValidationError
from ftmap._config import ParseError
from ftmap._etcd_client import EtcdClient, EtcdUnavailableError, compare, op_delete, op_put
from ftmap._etcd_keys import KeyConflictError
from ftmap._snapshot import Change
from ftmap.etcd import EtcdDisconnectedError, EtcdSource
from ftmap.testing.etcd import EtcdCluster

from .conftest import start_cluster
from .proxy import TcpProxy

TOTAL = 300  # a + b + c in every transaction the writers commit


class Published:
    """Every publish of a store, with the etcd revision the watcher says it carries."""

    def __init__(self, store: SnapshotMap[str, Any]) -> None:
        self.changes: list[Change] = []
        self.watcher: ConfigWatcher | None = None
        store.subscribe(self.changes.append)

    def revisions(self) -> list[Any]:
        assert self.watcher is not None
        return [self.watcher.revision_of(change.new.version) for change in list(self.changes)]


def watch(
    store: SnapshotMap[str, Any], source: EtcdSource, **options: Any
) -> tuple[ConfigWatcher, Published, list[Exception]]:
    published = Published(store)
    errors: list[Exception] = []
    watcher = ConfigWatcher(store, source, on_error=errors.append, **options)
    published.watcher = watcher
    return watcher, published, errors


def commit(client: EtcdClient, prefix: str, i: int) -> int:
    """One transaction updating a, b and c with a + b + c == TOTAL; its revision."""
    a, b = i % 100, (i * 7) % 100
    return client.txn(
        [],
        [
            op_put(prefix + "a", str(a)),
            op_put(prefix + "b", str(b)),
            op_put(prefix + "c", str(TOTAL - a - b)),
        ],
    ).revision


def wait(watcher: ConfigWatcher, predicate: Callable[[Any], bool], timeout: float = 10.0) -> None:
    assert watcher.wait_for(predicate, timeout), f"timed out; status: {watcher.status}"


def stopped_cleanly(watcher: ConfigWatcher, limit: float = 1.0) -> float:
    started = time.monotonic()
    ended = watcher.stop(timeout=5)
    took = time.monotonic() - started
    assert ended and not watcher.status.running, "the watching thread is still alive after stop()"
    assert took < limit, f"stop() took {took:.2f} s"
    return took


@pytest.fixture
def store() -> SnapshotMap[str, Any]:
    return SnapshotMap()


# -- consistency ----------------------------------------------------------------------------


def test_initial_load_is_one_read_at_one_revision_nested_and_frozen(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any]
) -> None:
    client = etcd1.client()
    client.put(prefix + "db/host", '"db.local"')
    client.put(prefix + "db/port", "5432")
    client.put(prefix + "features", '["a", "b"]')
    revision = client.put(prefix + "name", '"svc"')
    watcher, _, _ = watch(store, EtcdSource(etcd1.endpoints, prefix))
    assert store.snapshot() == {
        "db": {"host": "db.local", "port": 5432},
        "features": ("a", "b"),
        "name": "svc",
    }
    with pytest.raises(TypeError):
        store["db"]["port"] = 1  # deep-frozen as for files
    assert watcher.status.revision == revision == watcher.revision_of(store.version)
    assert watcher.source.revision == revision  # type: ignore[attr-defined]


def test_each_transaction_is_one_snapshot_every_revision_once_in_order(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any]
) -> None:
    client = etcd1.client()
    commit(client, prefix, 0)
    watcher, published, errors = watch(store, EtcdSource(etcd1.endpoints, prefix))
    torn = []
    store.subscribe(lambda change: torn.append(change) if sum(change.new.values()) != TOTAL else None)
    with watcher:
        committed = [commit(client, prefix, i) for i in range(1, 101)]
        wait(watcher, lambda s: s.revision == committed[-1])
    assert published.revisions()[1:] == committed  # the first is the initial load
    assert all(change.changed == {"a", "b", "c"} for change in published.changes[1:])
    assert torn == [] and errors == []


def test_a_revision_that_fails_to_parse_or_validate_is_refused_whole(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any]
) -> None:
    def validate(config: dict[str, Any]) -> list[str]:
        return (
            []
            if isinstance(config.get("port"), int)
            else [f"port must be an int, not {config.get('port')!r}"]
        )

    client = etcd1.client()
    good = client.txn([], [op_put(prefix + "port", "80"), op_put(prefix + "name", '"a"')]).revision
    watcher, published, errors = watch(store, EtcdSource(etcd1.endpoints, prefix), validate=validate)
    with watcher:
        invalid = client.txn(
            [], [op_put(prefix + "port", '"eighty"'), op_put(prefix + "name", '"b"')]
        ).revision
        wait(watcher, lambda s: isinstance(s.current_error, ValidationError))
        unparsable = client.txn(
            [], [op_put(prefix + "port", "{bad json"), op_put(prefix + "name", '"c"')]
        ).revision
        wait(watcher, lambda s: isinstance(s.current_error, ParseError))
        conflict = client.put(prefix + "name/first", '"x"')  # "name" is a value and a parent now
        wait(watcher, lambda s: isinstance(s.current_error, KeyConflictError))
        assert store.snapshot() == {"port": 80, "name": "a"}  # the last good, all along
        fixed = client.txn([], [op_put(prefix + "port", "81"), op_delete(prefix + "name/first")]).revision
        wait(watcher, lambda s: s.revision == fixed)
    # The refused revisions were applied to etcd's state all the same: "name" is "c", from one of them.
    assert store.snapshot() == {"port": 81, "name": "c"}
    assert published.revisions() == [good, fixed]
    assert [type(e) for e in errors] == [ValidationError, ParseError, KeyConflictError]
    assert str(invalid) and unparsable and conflict  # each a revision of its own
    assert watcher.status.failures == 3 and watcher.status.current_error is None


# -- etcd stopped, connections cut, compaction -------------------------------------------------


def test_etcd_stopped_mid_watch_keeps_the_last_good_and_resumes(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any]
) -> None:
    client = etcd1.client()
    first = commit(client, prefix, 1)
    source = EtcdSource(etcd1.endpoints, prefix, backoff_initial=0.05, backoff_max=0.5)
    watcher, published, errors = watch(store, source)
    member = etcd1.members[0]
    with watcher:
        assert source.wait_for(lambda e: e.connected, 10)
        member.stop()
        try:
            wait(watcher, lambda s: isinstance(s.current_error, EtcdDisconnectedError))
            assert not source.etcd_status.connected
            assert dict(store.snapshot()) == {"a": 1, "b": 7, "c": TOTAL - 8}  # the last good, kept
        finally:
            member.start()
            etcd1.wait_healthy()
        after = [commit(client, prefix, i) for i in (2, 3)]
        wait(watcher, lambda s: s.revision == after[-1] and s.current_error is None)
    assert published.revisions() == [first, *after]
    assert source.etcd_status.reconnects >= 1
    assert sum(isinstance(e, EtcdDisconnectedError) for e in errors) == 1  # one outage, reported once


@pytest.fixture
def proxy(etcd1: EtcdCluster) -> Iterator[TcpProxy]:
    with TcpProxy(etcd1.members[0].client_port) as tcp:
        yield tcp


def test_an_outage_resumes_from_the_next_revision_without_losing_one(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any], proxy: TcpProxy
) -> None:
    client = etcd1.client()
    first = commit(client, prefix, 1)
    source = EtcdSource(proxy.url, prefix, backoff_initial=0.05, backoff_max=0.2, timeout=1)
    watcher, published, _ = watch(store, source)
    with watcher:
        assert source.wait_for(lambda e: e.connected, 10)
        proxy.cut()
        during = [commit(client, prefix, i) for i in range(2, 7)]  # written while the source is cut off
        wait(watcher, lambda s: isinstance(s.current_error, EtcdDisconnectedError))
        assert published.revisions() == [first]
        proxy.restore()
        wait(watcher, lambda s: s.revision == during[-1])
    assert published.revisions() == [first, *during]  # each revision once, in order: resumed, not resynced
    assert source.etcd_status.resyncs == 0


def test_a_compacted_start_revision_resyncs_with_one_publish(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any], proxy: TcpProxy
) -> None:
    client = etcd1.client()
    first = commit(client, prefix, 1)
    source = EtcdSource(proxy.url, prefix, backoff_initial=0.05, backoff_max=0.2, timeout=1)
    watcher, published, _ = watch(store, source)
    with watcher:
        assert source.wait_for(lambda e: e.connected, 10)
        proxy.cut()
        during = [commit(client, prefix, i) for i in range(2, 7)]
        client.compact(during[-1])  # the revision the source would resume from is gone
        wait(watcher, lambda s: isinstance(s.current_error, EtcdDisconnectedError))
        proxy.restore()
        wait(watcher, lambda s: s.current_error is None and source.etcd_status.resyncs == 1)
    revisions = published.revisions()
    assert revisions[0] == first and len(revisions) == 2  # exactly one publish for the resync
    assert revisions[1] >= during[-1]
    assert dict(store.snapshot()) == {"a": 6, "b": 42, "c": TOTAL - 48}


@pytest.mark.parametrize("victim", ["leader", "follower"])
def test_a_member_killed_while_watching_moves_the_source(
    etcd3: EtcdCluster, prefix: str, store: SnapshotMap[str, Any], victim: str
) -> None:
    leader = etcd3.leader()
    killed = leader if victim == "leader" else next(m for m in etcd3.members if m is not leader)
    order = [killed, *(m for m in etcd3.members if m is not killed)]
    writer = etcd3.client(timeout=1)
    key = prefix + "seq"
    source = EtcdSource(
        [m.client_url for m in order], prefix, timeout=1, backoff_initial=0.05, backoff_max=0.3
    )
    committed = [writer.put(key, "0")]
    watcher, published, _ = watch(store, source)

    def write(i: int) -> None:
        """Put seq = i once: retried only when it certainly did not apply (compare on the old value)."""
        while True:
            try:
                done = writer.txn([compare(key, "value", "==", str(i - 1))], [op_put(key, str(i))])
            except EtcdUnavailableError:
                time.sleep(0.05)
                continue  # the compare makes a retry safe: it cannot apply twice
            if done.succeeded:
                committed.append(done.revision)
            else:  # an earlier try was applied after all: take its revision
                kv = writer.get(key)
                assert kv is not None and kv.value == str(i).encode()
                committed.append(kv.mod_revision)
            return

    try:
        with watcher:
            assert source.wait_for(lambda e: e.endpoint == killed.client_url, 10)
            for i in range(1, 21):
                write(i)
            killed.kill()
            for i in range(21, 41):
                write(i)
            wait(watcher, lambda s: s.revision == committed[-1], timeout=20)
            assert source.etcd_status.endpoint != killed.client_url
    finally:
        killed.restart()
    assert published.revisions() == committed  # every revision once, in order, across the kill
    assert store["seq"] == 40


# -- hung and slow connections, stop() ---------------------------------------------------------


def test_a_hung_connection_is_detected_and_the_source_fails_over(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any], proxy: TcpProxy
) -> None:
    client = etcd1.client()
    first = commit(client, prefix, 1)
    source = EtcdSource([proxy.url, *etcd1.endpoints], prefix, idle_timeout=0.5, timeout=0.5, backoff_max=0.2)
    watcher, published, _ = watch(store, source)
    with watcher:
        assert source.wait_for(lambda e: e.endpoint == proxy.url, 10)
        proxy.stall()  # the connection stays open and says nothing: a hung server
        started = time.monotonic()
        later = commit(client, prefix, 2)
        wait(watcher, lambda s: s.revision == later)
        detected = time.monotonic() - started
        assert source.etcd_status.endpoint == etcd1.endpoints[0]
        stopped_cleanly(watcher)
    assert published.revisions() == [first, later]
    assert detected < 5.0  # idle_timeout + one probe timeout + a reconnect, with room for a busy machine


def test_stop_returns_promptly_with_the_thread_gone_while_hung_or_backing_off(
    etcd1: EtcdCluster, prefix: str, proxy: TcpProxy
) -> None:
    commit(etcd1.client(), prefix, 1)
    # Blocked reading a stalled watch, with long timeouts everywhere.
    source = EtcdSource(proxy.url, prefix, idle_timeout=60, timeout=60)
    watcher = ConfigWatcher(SnapshotMap(), source).start()
    assert source.wait_for(lambda e: e.connected, 10)
    proxy.stall()
    time.sleep(0.2)
    stopped_cleanly(watcher)
    # Blocked in a request to a hung server.
    proxy.restore()
    source = EtcdSource(proxy.url, prefix, idle_timeout=0.2, timeout=60)
    watcher = ConfigWatcher(SnapshotMap(), source).start()
    assert source.wait_for(lambda e: e.connected, 10)
    proxy.stall()
    time.sleep(0.5)  # the idle check's status request is now waiting on the stalled proxy
    stopped_cleanly(watcher)
    # Waiting out a long backoff.
    proxy.restore()
    source = EtcdSource(proxy.url, prefix, backoff_initial=30, backoff_max=60, timeout=1)
    watcher = ConfigWatcher(SnapshotMap(), source).start()
    assert source.wait_for(lambda e: e.connected, 10)
    proxy.cut()
    wait(watcher, lambda s: isinstance(s.current_error, EtcdDisconnectedError))
    stopped_cleanly(watcher)


def test_the_initial_load_is_bounded_by_the_timeout(etcd1: EtcdCluster, prefix: str, proxy: TcpProxy) -> None:
    proxy.stall()
    started = time.monotonic()
    with pytest.raises(EtcdDisconnectedError):
        ConfigWatcher(SnapshotMap(), EtcdSource(proxy.url, prefix, timeout=0.5))
    assert time.monotonic() - started < 2.0
    # must_load=False: the watcher starts empty and loads once etcd answers.
    etcd1.client().put(prefix + "k", "1")
    store: SnapshotMap[str, Any] = SnapshotMap()
    source = EtcdSource(proxy.url, prefix, timeout=0.5, backoff_max=0.2)
    watcher = ConfigWatcher(store, source, must_load=False)
    assert isinstance(watcher.status.current_error, EtcdDisconnectedError) and store.snapshot() == {}
    with watcher:
        proxy.restore()
        wait(watcher, lambda s: s.reloads == 1)
    assert store.snapshot() == {"k": 1}


def test_a_slow_connection_still_publishes_every_revision(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any], proxy: TcpProxy
) -> None:
    proxy.delay = 0.05
    client = etcd1.client()
    first = commit(client, prefix, 1)
    watcher, published, errors = watch(store, EtcdSource(proxy.url, prefix, timeout=2))
    with watcher:
        committed = [commit(client, prefix, i) for i in range(2, 12)]
        wait(watcher, lambda s: s.revision == committed[-1])
    assert published.revisions() == [first, *committed] and errors == []


def test_a_quiet_watch_is_checked_and_restarted_when_etcd_moved_on(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any]
) -> None:
    client = etcd1.client()
    first = client.put(prefix + "k", "1")
    source = EtcdSource(etcd1.endpoints, prefix, idle_timeout=0.2)
    watcher, published, _ = watch(store, source)
    with watcher:
        client.put(prefix[:-1] + "-elsewhere/k", "x")  # moves etcd's revision, not this prefix
        assert source.wait_for(lambda e: e.restarts >= 1, 10)
        later = client.put(prefix + "k", "2")
        wait(watcher, lambda s: s.revision == later)
    assert published.revisions() == [first, later]


def test_a_watch_opened_after_etcd_moved_on_is_checked_against_what_it_delivered(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any]
) -> None:
    # etcd moves on between the initial load and the watch: the watch is created at the newer
    # revision but owes the events since the load, so its silence is checked (and the watch
    # restarted) as when etcd moves on after it opened. Before: the created response's
    # revision counted as delivered, and a stream that stalled here was never checked.
    client = etcd1.client()
    first = client.put(prefix + "k", "1")
    source = EtcdSource(etcd1.endpoints, prefix, idle_timeout=0.2)
    watcher, published, _ = watch(store, source)
    moved = client.put(prefix[:-1] + "-elsewhere/k", "x")
    with watcher:
        assert source.wait_for(lambda e: e.restarts >= 1, 10)
        # The restarted watch covers the revision the check found: with etcd still, the checks
        # (every 0.2 s) find nothing newer and restart nothing. A watch that counted only what
        # it delivered would restart at every check here, for as long as the prefix is quiet.
        restarts = source.etcd_status.restarts
        assert not source.wait_for(lambda e: e.restarts > restarts, 1.0)
        assert client.status(etcd1.endpoints[0]).revision == moved
        later = client.put(prefix + "k", "2")
        wait(watcher, lambda s: s.revision == later)
    assert published.revisions() == [first, later]


def test_reload_publishes_nothing_when_the_prefix_did_not_change(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any]
) -> None:
    client = etcd1.client()
    first = client.put(prefix + "k", "1")
    watcher, published, _ = watch(store, EtcdSource(etcd1.endpoints, prefix))
    client.put(prefix[:-1] + "-elsewhere/k", "x")
    assert watcher.reload() is False
    later = client.put(prefix + "k", "2")
    assert watcher.reload() is True
    assert published.revisions() == [first, later]


# -- the same machinery as a file: one line apart ----------------------------------------------


def test_switching_a_service_from_a_file_to_etcd_is_one_line(
    etcd1: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    config = {"db": {"host": "h", "port": 5432}, "debug": False}

    def validate(content: dict[str, Any]) -> list[str]:
        return [] if content["db"]["port"] > 0 else ["port"]

    path = tmp_path / "app.json"
    path.write_text(json.dumps(config))
    client = etcd1.client()
    client.put(prefix + "db/host", '"h"')
    client.put(prefix + "db/port", "5432")
    client.put(prefix + "debug", "false")
    from_file: SnapshotMap[str, Any] = SnapshotMap()
    from_etcd: SnapshotMap[str, Any] = SnapshotMap()
    ConfigWatcher(from_file, path, validate=validate)
    watcher = ConfigWatcher(from_etcd, EtcdSource(etcd1.endpoints, prefix), validate=validate)
    assert from_etcd == from_file
    changes: list[Change] = []
    from_etcd.subscribe(changes.append)
    with watcher:
        revision = client.put(prefix + "db/port", "6543")
        wait(watcher, lambda s: s.revision == revision)
        assert changes[-1].changed == {"db"} and from_etcd["db"]["port"] == 6543
        from_etcd.rollback(changes[-1].old.version)  # an operator's rollback: a version of its own
        assert from_etcd["db"]["port"] == 5432
        revision = client.put(prefix + "debug", "true")  # the next etcd revision publishes over it
        wait(watcher, lambda s: s.revision == revision)
    assert dict(from_etcd.snapshot()) == {"db": {"host": "h", "port": 6543}, "debug": True}


def test_values_raw_and_flat_layout(etcd1: EtcdCluster, prefix: str) -> None:
    client = etcd1.client()
    client.put(prefix + "db/host", "plain text, not JSON")
    store: SnapshotMap[str, Any] = SnapshotMap()
    ConfigWatcher(store, EtcdSource(etcd1.endpoints, prefix, decode="raw", layout="flat"))
    assert store.snapshot() == {"db/host": "plain text, not JSON"}


# -- auth and TLS --------------------------------------------------------------------------------


def test_auth_source(prefix: str) -> None:
    cluster = start_cluster(1)
    try:
        cluster.enable_auth("root", "pw")
        client = cluster.client(username="root", password="pw")
        client.put(prefix + "k", "1")
        store: SnapshotMap[str, Any] = SnapshotMap()
        source = EtcdSource(cluster.endpoints, prefix, username="root", password="pw")
        with ConfigWatcher(store, source) as watcher:
            revision = client.put(prefix + "k", "2")
            wait(watcher, lambda s: s.revision == revision)
        assert store.snapshot() == {"k": 2}
        errors: list[Exception] = []
        refused = ConfigWatcher(
            SnapshotMap(), EtcdSource(cluster.endpoints, prefix), must_load=False, on_error=errors.append
        )
        assert "user name is empty" in str(refused.status.current_error) and len(errors) == 1
    finally:
        cluster.stop()


def test_tls_source(prefix: str) -> None:
    cluster = start_cluster(1, tls=True)
    try:
        client = cluster.client()
        client.put(prefix + "k", "1")
        store: SnapshotMap[str, Any] = SnapshotMap()
        with ConfigWatcher(store, EtcdSource(cluster.endpoints, prefix, **cluster.tls_options())) as watcher:
            revision = client.put(prefix + "k", "2")
            wait(watcher, lambda s: s.revision == revision)
        assert store.snapshot() == {"k": 2}
    finally:
        cluster.stop()


def test_a_client_given_to_the_source_is_forked_not_closed(etcd1: EtcdCluster, prefix: str) -> None:
    client = etcd1.client()
    client.put(prefix + "k", "1")
    watcher = ConfigWatcher(SnapshotMap(), EtcdSource(client, prefix)).start()
    stopped_cleanly(watcher)
    assert not client.closed and client.get(prefix + "k") is not None
    with pytest.raises(TypeError):
        EtcdSource(client, prefix, timeout=1)


def test_many_threads_read_while_revisions_publish(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any]
) -> None:
    """Readers never wait for the network and never see a torn transaction."""
    client = etcd1.client()
    commit(client, prefix, 0)
    watcher, _, _ = watch(store, EtcdSource(etcd1.endpoints, prefix))
    done = threading.Event()
    torn: list[dict[str, Any]] = []
    reads = [0] * 4

    def reader(n: int) -> None:
        while not done.is_set():
            snapshot = store.snapshot()
            if sum(snapshot.values()) != TOTAL:
                torn.append(dict(snapshot))
            reads[n] += 1

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    with watcher:
        last = [commit(client, prefix, i) for i in range(1, 51)][-1]
        wait(watcher, lambda s: s.revision == last)
    done.set()
    for thread in threads:
        thread.join(10)
    assert torn == [] and min(reads) > 0


def test_reload_racing_the_watch_never_publishes_an_older_revision(
    etcd1: EtcdCluster, prefix: str, store: SnapshotMap[str, Any]
) -> None:
    """reload() on other threads while the watch applies revisions: never back in time, never twice."""
    client = etcd1.client()
    commit(client, prefix, 0)
    watcher, published, errors = watch(store, EtcdSource(etcd1.endpoints, prefix))
    done = threading.Event()

    def reload_loop() -> None:
        while not done.is_set():
            watcher.reload()

    reloaders = [threading.Thread(target=reload_loop) for _ in range(2)]
    with watcher:
        for thread in reloaders:
            thread.start()
        committed = [commit(client, prefix, i) for i in range(1, 41)]
        wait(watcher, lambda s: s.revision == committed[-1])
        done.set()
        for thread in reloaders:
            thread.join(10)
    revisions = published.revisions()
    assert revisions == sorted(set(revisions)), revisions  # strictly increasing: no repeat, no going back
    assert set(revisions[1:]) <= set(committed) and revisions[-1] == committed[-1]
    assert all(sum(change.new.values()) == TOTAL for change in published.changes) and errors == []
