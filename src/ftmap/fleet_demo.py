"""The fleet demo: several processes kept on one etcd prefix, never torn, every revision once.

``python -m ftmap.fleet_demo`` (``make fleet-demo``) starts a real 3-member
etcd cluster on loopback (ftmap.testing.etcd), then reader processes, each a
SnapshotMap kept current by ``ConfigWatcher(store, EtcdSource(...))``, each
with reader threads that check an invariant (a + b + c == 300) on every
snapshot they read and a subscriber that checks it on every snapshot
published. A writer commits transactions that each update a, b, c (and a
sequence number) at one revision. At the end every process reports the etcd
revisions it published, in order, which must be exactly the writer's
revisions; and how long after each commit it published it.

Three variants: ``steady`` (the writer commits at a steady ``--rate``, 100
transactions a second by default, no faults), ``burst`` (as fast as etcd
commits them: readers then queue revisions, and the latency shows the
queue), and ``faults`` (steady, and the whole cluster is stopped and
restarted a third of the way in, the leader killed two thirds of the way in
and restarted later). Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import SnapshotMap  # the selected implementation (C when ftmap.implementation == "c")
from ._config import ConfigWatcher
from ._etcd import EtcdSource
from ._etcd_client import EtcdClient, EtcdUnavailableError, compare, op_put
from ._snapshot import Change
from .testing.etcd import EtcdCluster

TOTAL = 300
PREFIX = "/fleet/"


# -- a reader process ---------------------------------------------------------------------------


def _reader(endpoints: list[str], prefix: str, threads: int) -> None:
    """One process of the fleet: watch, read and check until told the last revision on stdin."""
    logging.getLogger("ftmap").setLevel(logging.ERROR)  # outages are expected here: counted, not logged
    store: SnapshotMap[str, Any] = SnapshotMap()
    published: list[tuple[int, int]] = []  # (etcd revision, time.monotonic_ns() of the publish)
    bad_publishes: list[dict[str, Any]] = []
    source = EtcdSource(
        endpoints, prefix, timeout=1.0, idle_timeout=2.0, backoff_initial=0.05, backoff_max=1.0
    )
    watcher_box: list[ConfigWatcher] = []

    def on_change(change: Change) -> None:
        now = time.monotonic_ns()
        if sum(change.new.get(k, 0) for k in "abc") != TOTAL:
            bad_publishes.append(dict(change.new))
        revision = watcher_box[0].revision_of(change.new.version) if watcher_box else None
        if isinstance(revision, int):
            published.append((revision, now))

    store.subscribe(on_change)
    watcher = ConfigWatcher(store, source)
    watcher_box.append(watcher)
    first_revision = watcher.status.revision
    done = threading.Event()
    reads = [0] * threads
    torn = [0] * threads
    samples: list[list[int]] = [[] for _ in range(threads)]  # the duration of every 16th read

    def read(n: int) -> None:
        last_version = 0
        while not done.is_set():
            started = time.perf_counter_ns()
            snapshot = store.snapshot()  # one reference load: no lock, no network
            if snapshot.get("a", 0) + snapshot.get("b", 0) + snapshot.get("c", 0) != TOTAL:
                torn[n] += 1
            if snapshot.version < last_version:
                torn[n] += 1  # a reader must never go back in time either
            last_version = snapshot.version
            if reads[n] % 16 == 0:
                samples[n].append(time.perf_counter_ns() - started)
            reads[n] += 1
            time.sleep(0.001)  # leave the cores to etcd and the watchers: 4 processes share 2 cores

    workers = [threading.Thread(target=read, args=(n,), daemon=True) for n in range(threads)]
    with watcher:
        source.wait_for(lambda s: s.connected, 30)
        for worker in workers:
            worker.start()
        print(json.dumps({"ready": first_revision}), flush=True)
        line = sys.stdin.readline().split()
        last = int(line[1]) if len(line) == 2 and line[0] == "stop" else 0
        caught_up = watcher.wait_for(lambda s: isinstance(s.revision, int) and s.revision >= last, 60)
        done.set()
        for worker in workers:
            worker.join(10)
        status = watcher.status
    result = {
        "pid": os.getpid(),
        "first_revision": first_revision,
        "published": published,
        "reads": sum(reads),
        "torn": sum(torn),
        "bad_publishes": len(bad_publishes),
        "read_ns": statistics.median([ns for per_thread in samples for ns in per_thread] or [0]),
        "caught_up": caught_up,
        "failures": status.failures,
        "reconnects": source.etcd_status.reconnects,
        "resyncs": source.etcd_status.resyncs,
    }
    print(json.dumps({"result": result}), flush=True)


# -- the writer and the table -------------------------------------------------------------------


@dataclass
class FleetResult:
    variant: str
    rate: float  # transactions committed per second (the writer's pace, or etcd's), outages left out
    processes: int
    transactions: int
    reads: int
    torn: int
    bad_publishes: int
    published_per_process: list[int]
    exact: bool  # every process published exactly the writer's revisions, in order
    latency_median_ms: float
    latency_p99_ms: float
    latency_max_ms: float  # the slowest process on its slowest revision: how far behind it was
    slowest_transaction: int  # which transaction that was (1-based)
    read_ns: float
    reconnects: int
    resyncs: int
    faults: list[str]


def _commit(client: EtcdClient, prefix: str, i: int, deadline: float) -> tuple[int, int]:
    """Commit transaction i (a, b, c and seq at one revision); (revision, monotonic ns when it was sent).

    Latency is measured from the send of the attempt that applied, not from the writer's
    acknowledgement: a watcher may well publish a revision before the writer has its answer (the
    members apply and notify while the leader answers), so from the send is the honest upper
    bound (it includes the request itself). When an attempt went unanswered and a later one finds
    it applied, the send of the first unanswered attempt counts (the earliest it can have been).

    A retry after an unanswered request is safe: the compare on seq lets it apply once only.
    """
    a, b = (i * 37) % 150, (i * 91) % 150
    ops = [op_put(prefix + "a", str(a)), op_put(prefix + "b", str(b))]
    ops += [op_put(prefix + "c", str(TOTAL - a - b)), op_put(prefix + "seq", str(i))]
    seq = prefix + "seq"
    guard = compare(seq, "version", "==", 0) if i == 0 else compare(seq, "value", "==", str(i - 1))
    unanswered: int | None = None  # the send of the first attempt that may have applied
    while True:
        sent = time.monotonic_ns()
        try:
            done = client.txn([guard], ops)
        except EtcdUnavailableError as error:
            if error.maybe_applied and unanswered is None:
                unanswered = sent
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
            continue
        if done.succeeded:
            return done.revision, sent
        kv = client.get(prefix + "seq")  # an earlier try was applied after all
        if kv is None or kv.value != str(i).encode():
            raise RuntimeError(f"transaction {i}: seq is {kv.value if kv else None!r}, someone else writes")
        return kv.mod_revision, sent if unanswered is None else unanswered


def _spawn(endpoints: list[str], prefix: str, threads: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ftmap.fleet_demo", "--reader", "--endpoints", ",".join(endpoints),
         "--prefix", prefix, "--threads", str(threads)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _message(process: subprocess.Popen[str], key: str, timeout: float) -> Any:
    assert process.stdout is not None
    box: list[Any] = []

    def take() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            message = json.loads(line)
            if key in message:
                box.append(message[key])
                return

    reader = threading.Thread(target=take, daemon=True)
    reader.start()
    reader.join(timeout)
    if not box:
        process.kill()
        raise RuntimeError(f"reader process {process.pid} sent no {key!r} within {timeout} s")
    return box[0]


def run_fleet(
    variant: str = "steady",
    *,
    processes: int = 4,
    transactions: int = 1000,
    threads: int = 2,
    rate: float | None = 100.0,
) -> FleetResult:
    """Run one variant on a fresh 3-member cluster; see the module docstring.

    ``rate``: transactions per second the writer commits at (None: as fast as etcd takes them).
    """
    faults: list[str] = []
    with EtcdCluster(3) as cluster:
        endpoints = cluster.endpoints
        writer = EtcdClient(endpoints, timeout=1.0)
        _commit(writer, PREFIX, 0, time.monotonic() + 30)  # the initial state the readers load
        fleet = [_spawn(endpoints[k % 3 :] + endpoints[: k % 3], PREFIX, threads) for k in range(processes)]
        try:
            for process in fleet:
                _message(process, "ready", 60)
            committed: list[tuple[int, int]] = []
            killed = None
            began = time.monotonic()
            paused = 0.0  # seconds of outage, left out of the rate
            for i in range(1, transactions + 1):
                if variant == "faults" and i == transactions // 3:
                    started = time.monotonic()
                    cluster._stop_members(grace=5.0)
                    for member in cluster.members:
                        member.start()
                    cluster.wait_healthy()
                    outage = time.monotonic() - started
                    paused += outage
                    faults.append(f"whole cluster stopped and restarted before txn {i} ({outage:.1f} s)")
                if variant == "faults" and i == 2 * transactions // 3:
                    killed = cluster.leader()
                    killed.kill()
                    faults.append(f"leader {killed.name} killed before txn {i}")
                if variant == "faults" and killed is not None and i == 5 * transactions // 6:
                    killed.restart()
                    faults.append(f"{killed.name} restarted before txn {i}")
                    killed = None
                if rate is not None:  # commit i is due at began + paused + i / rate
                    time.sleep(max(0.0, began + paused + i / rate - time.monotonic()))
                committed.append(_commit(writer, PREFIX, i, time.monotonic() + 60))
            took = time.monotonic() - began - paused
            last = committed[-1][0]
            for process in fleet:
                assert process.stdin is not None
                process.stdin.write(f"stop {last}\n")
                process.stdin.flush()
            results = [_message(process, "result", 90) for process in fleet]
        finally:
            for process in fleet:
                if process.poll() is None:
                    process.kill()
                process.wait(10)
    return _summarise(variant, committed, results, faults, len(committed) / took)


def _summarise(
    variant: str,
    committed: list[tuple[int, int]],
    results: list[dict[str, Any]],
    faults: list[str],
    rate: float,
) -> FleetResult:
    sent = dict(committed)
    wanted = [revision for revision, _ in committed]
    latencies: list[float] = []
    slowest = (float("-inf"), 0)
    exact = True
    for result in results:
        seen = [revision for revision, _ in result["published"] if revision in sent]
        later = [revision for revision, _ in result["published"] if revision > result["first_revision"]]
        exact = exact and result["caught_up"] and later == wanted and seen == wanted
        for revision, at in result["published"]:
            if revision in sent:
                ms = (at - sent[revision]) / 1e6
                latencies.append(ms)
                if ms >= slowest[0]:
                    slowest = (ms, revision)
    return FleetResult(
        variant=variant,
        rate=rate,
        processes=len(results),
        transactions=len(committed),
        reads=sum(r["reads"] for r in results),
        torn=sum(r["torn"] for r in results),
        bad_publishes=sum(r["bad_publishes"] for r in results),
        published_per_process=[len(r["published"]) for r in results],
        exact=exact,
        latency_median_ms=statistics.median(latencies) if latencies else float("nan"),
        latency_p99_ms=statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else float("nan"),
        latency_max_ms=max(latencies, default=float("nan")),
        slowest_transaction=wanted.index(slowest[1]) + 1 if slowest[1] in wanted else 0,
        read_ns=statistics.median(r["read_ns"] for r in results),
        reconnects=sum(r["reconnects"] for r in results),
        resyncs=sum(r["resyncs"] for r in results),
        faults=faults,
    )


def table(results: Sequence[FleetResult]) -> str:
    lines = [
        "| variant | processes | transactions (3 keys each) | snapshots read | torn reads | "
        "revisions published per process | every revision once, in order | "
        "publish latency from the commit's send, every process: median / p99 / max (the slowest) | "
        "one read (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        per = ", ".join(map(str, sorted(set(r.published_per_process))))
        lines.append(
            f"| {r.variant} | {r.processes} | {r.transactions} at {r.rate:.0f}/s | {r.reads} | "
            f"{r.torn + r.bad_publishes} | {per} (after the initial load) | {'yes' if r.exact else 'NO'} | "
            f"{r.latency_median_ms:.1f} / {r.latency_p99_ms:.1f} / {r.latency_max_ms:.1f} ms | "
            f"{r.read_ns / 1000:.2f} µs |"
        )
    notes = [
        f"- {r.variant}: the slowest publish was of transaction {r.slowest_transaction}"
        + (f"; {'; '.join(r.faults)}; reconnects {r.reconnects}, resyncs {r.resyncs}" if r.faults else "")
        for r in results
    ]
    return "\n".join(lines + (["", *notes] if notes else []))


# -- fault timings ---------------------------------------------------------------------------


def _timed_until(predicate: Any, timeout: float = 30.0) -> float:
    """Seconds until predicate() holds (polled every millisecond); raises if it never does."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not within {timeout} s")
        time.sleep(0.001)
    return time.monotonic() - started


def fault_timings() -> list[tuple[str, str, float]]:  # noqa: PLR0915  (one fault after another)
    """How long each fault of issue 14 takes to get over, on a 3-member cluster:
    (fault, measured from -> to, seconds)."""
    logging.getLogger("ftmap").setLevel(logging.ERROR)
    rows: list[tuple[str, str, float]] = []
    with EtcdCluster(3) as cluster:
        client = EtcdClient(cluster.endpoints, timeout=1.0)
        prefix = "/timings/"
        client.put(prefix + "k", "0")
        options: dict[str, Any] = {
            "timeout": 1.0,
            "idle_timeout": 1.0,
            "backoff_initial": 0.05,
            "backoff_max": 1.0,
        }
        knobs = "idle_timeout=1, timeout=1"

        def since(started: float) -> float:
            return time.monotonic() - started

        def source_on(first: Any, others: Sequence[Any] = ()) -> tuple[ConfigWatcher, EtcdSource]:
            source = EtcdSource([m.client_url for m in (first, *others)], prefix, **options)
            watcher = ConfigWatcher(SnapshotMap(), source).start()
            source.wait_for(lambda s: s.connected and s.endpoint == first.client_url, 10)
            return watcher, source

        def published(watcher: ConfigWatcher, revision: int) -> bool:
            current = watcher.status.revision
            return isinstance(current, int) and current >= revision

        # The leader killed: the source watching it moves to another member.
        leader = cluster.leader()
        watcher, source = source_on(leader, [m for m in cluster.members if m is not leader])
        leader.kill()
        killed = time.monotonic()
        moved = _timed_until(
            lambda: source.etcd_status.connected and source.etcd_status.endpoint != leader.client_url
        )
        revision = _put_retrying(client, prefix + "k", "1")
        committed = time.monotonic()
        published_after = _timed_until(lambda: published(watcher, revision))
        rows.append(("leader killed (SIGKILL)", "kill -> watching another member", moved))
        rows.append(
            ("leader killed (SIGKILL)", "kill -> the next write committed (the election)", committed - killed)
        )
        rows.append(("leader killed (SIGKILL)", "that commit -> published", published_after))
        watcher.stop()
        leader.restart()

        # The whole cluster stopped and restarted: resumes from the next revision.
        watcher, source = source_on(cluster.members[0], cluster.members[1:])
        cluster._stop_members(grace=5.0)
        _timed_until(lambda: not source.etcd_status.connected)
        restarted = time.monotonic()
        for member in cluster.members:
            member.start()
        cluster.wait_healthy()
        rows.append(
            ("whole cluster stopped, restarted", "members started -> cluster healthy", since(restarted))
        )
        _timed_until(lambda: source.etcd_status.connected)
        rows.append(
            ("whole cluster stopped, restarted", "members started -> watching again", since(restarted))
        )
        revision = _put_retrying(client, prefix + "k", "2")
        _timed_until(lambda: published(watcher, revision))
        watcher.stop()

        # The resume revision compacted away while the one member watched was down.
        member = cluster.members[0]
        watcher, source = source_on(member)
        member.stop()
        for n in range(5):
            revision = _put_retrying(client, prefix + "k", str(10 + n))
        client.compact(revision)
        member.start()
        cluster.wait_healthy([member])
        healthy = time.monotonic()
        _timed_until(lambda: source.etcd_status.resyncs == 1 and published(watcher, revision))
        rows.append(
            (
                "resume revision compacted",
                "member healthy -> resynced and published",
                time.monotonic() - healthy,
            )
        )
        watcher.stop()

        # A hung member (SIGSTOP): noticed after idle_timeout, then the next member.
        hung = cluster.members[1]
        watcher, source = source_on(hung, [m for m in cluster.members if m is not hung])
        hung.pause()
        try:
            hang = f"a hung member (SIGSTOP), {knobs}"
            left = _timed_until(
                lambda: source.etcd_status.connected and source.etcd_status.endpoint != hung.client_url
            )
            rows.append((hang, "hang -> watching another member (idle_timeout + one status timeout)", left))
            revision = _put_retrying(client, prefix + "k", "99")
            committed = time.monotonic()
            _timed_until(lambda: published(watcher, revision))
            rows.append((hang, "the next write committed -> published", since(committed)))
            # stop() while its requests hang.
            watcher2, _ = source_on(cluster.members[2])
            started = time.monotonic()
            watcher.stop()
            watcher2.stop()
            rows.append(
                (
                    "stop()",
                    "two watchers, one of them failed over from a hung member",
                    time.monotonic() - started,
                )
            )
        finally:
            hung.resume()
        # stop() while hung on the only member it knows.
        watcher, source = source_on(hung)
        hung.pause()
        try:
            time.sleep(1.5)  # past idle_timeout: its status check now waits on the hung member
            started = time.monotonic()
            watcher.stop()
            rows.append(
                ("stop()", "while its only member hangs (a request in flight)", time.monotonic() - started)
            )
        finally:
            hung.resume()
    return rows


def _put_retrying(client: EtcdClient, key: str, value: str) -> int:
    """Put, retrying while the cluster has no leader (a plain put is idempotent here)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return client.put(key, value)
        except EtcdUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def timings_table(rows: Sequence[tuple[str, str, float]]) -> str:
    lines = ["| fault | measured | seconds |", "|---|---|---|"]
    lines += [f"| {fault} | {what} | {seconds:.3f} |" for fault, what, seconds in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", default="", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=PREFIX, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help="reader threads per process")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="transactions per second (steady, faults)")
    parser.add_argument("--variant", choices=["steady", "burst", "faults", "all", "none"], default="all")
    parser.add_argument("--timings", action="store_true", help="also time recovery from each fault")
    args = parser.parse_args(argv)
    if args.reader:
        _reader(args.endpoints.split(","), args.prefix, args.threads)
        return 0
    variants = {"all": ["steady", "burst", "faults"], "none": []}.get(args.variant, [args.variant])
    results = []
    for variant in variants:
        rate = None if variant == "burst" else args.rate
        results.append(
            run_fleet(
                variant,
                processes=args.processes,
                transactions=args.transactions,
                threads=args.threads,
                rate=rate,
            )
        )
        print(f"{variant}: done", file=sys.stderr, flush=True)
    if results:
        print(table(results))
    if args.timings:
        print()
        print(timings_table(fault_timings()))
    ok = all(r.exact and r.torn == 0 and r.bad_publishes == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
