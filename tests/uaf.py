"""Use-after-free hammer for published references: writers replace, readers check what they get.

Shared by tests/stress/test_core_ref_stress.py and by the C maps' own stress tests (SnapshotMap's
snapshot, SyncMap's read map ...): writers replace the published object as fast as they can,
readers check that every object they get is of the right type and holds consistent contents.

``hammer`` runs real threads behind a barrier for a given time; every worker's exception is
collected. ``python -m tests.uaf naive|safe [seconds]`` runs the ftmap._core._PublishedRef
version in a fresh process and prints one line of counts: the stress test runs the deliberately
naive reader this way, because a use after free may crash the process (or corrupt the heap until
a thread spins forever) instead of being counted.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class HammerResult:
    reads: int = 0
    writes: int = 0
    bad: list[str] = field(default_factory=list)  # the first few bad observations, described
    bad_count: int = 0
    errors: list[BaseException] = field(default_factory=list)
    seconds: float = 0.0


def hammer(
    write: Callable[[], int],
    read: Callable[[], tuple[int, list[str]]],
    *,
    writers: int = 1,
    readers: int = 2,
    seconds: float = 2.0,
    stop_on_bad: bool = False,
    timeout: float = 60.0,
) -> HammerResult:
    """Run ``writers`` threads calling write() and ``readers`` calling read() for ``seconds``.

    write() does a batch of replacements and returns how many; read() does a batch of checked
    loads and returns (loads, descriptions of bad observations). Every thread runs at least one
    batch, so a short run still overlaps readers with writers.
    """
    result = HammerResult()
    lock = threading.Lock()
    stop = threading.Event()
    barrier = threading.Barrier(writers + readers + 1)

    def run(body: Callable[[], None]) -> None:
        try:
            barrier.wait(timeout)
            body()
            while not stop.is_set():
                body()
        except BaseException as error:
            with lock:
                result.errors.append(error)
            stop.set()

    def write_batch() -> None:
        n = write()
        with lock:
            result.writes += n

    def read_batch() -> None:
        n, bad = read()
        with lock:
            result.reads += n
            result.bad_count += len(bad)
            result.bad.extend(bad[: max(0, 10 - len(result.bad))])
        if bad and stop_on_bad:
            stop.set()

    threads = [threading.Thread(target=run, args=(write_batch,), name=f"writer-{i}") for i in range(writers)]
    threads += [threading.Thread(target=run, args=(read_batch,), name=f"reader-{i}") for i in range(readers)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout)
    started = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), f"{thread.name} still running {timeout} s after the stop: hung"
    result.seconds = time.perf_counter() - started
    return result


def published_ref_hammer(
    core: Any,
    *,
    naive: bool,
    python_readers: bool,
    seconds: float,
    stop_on_bad: bool = False,
    timeout: float = 60.0,
) -> HammerResult:
    """ftmap._core._PublishedRef holding _Payloads: writers publish fresh payloads (churning
    the allocator so freed blocks come back as other objects), readers load and check them."""
    payload = core._Payload
    ref = core._PublishedRef(payload(0))
    serials = iter(range(1, sys.maxsize, 1_000))
    serial_lock = threading.Lock()

    def write() -> int:
        with serial_lock:
            first = next(serials)
        ref.publish_many(first, 1_000, True)
        return 1_000

    def read_in_c() -> tuple[int, list[str]]:
        check = ref.naive_check_many if naive else ref.check_many
        wrong_type, broken, _backwards, empty = check(10_000)
        bad = [f"wrong type x{wrong_type}"] * bool(wrong_type) + [f"broken contents x{broken}"] * bool(broken)
        bad += [f"empty x{empty}"] * bool(empty)
        return 10_000, bad

    def read_in_python() -> tuple[int, list[str]]:
        load = ref.naive_load if naive else ref.load
        bad = []
        for _ in range(1_000):
            obj = load()
            if type(obj) is not payload:
                bad.append(f"wrong type: {type(obj).__name__}")
            elif not obj.valid():
                bad.append(f"broken contents: serial {obj.serial}")
        return 1_000, bad

    return hammer(
        write,
        read_in_python if python_readers else read_in_c,
        writers=2,
        readers=2,
        seconds=seconds,
        stop_on_bad=stop_on_bad,
        timeout=timeout,
    )


def main(argv: list[str]) -> int:
    from ftmap import _core  # type: ignore[attr-defined]  # noqa: PLC0415

    mode, seconds = argv[0], float(argv[1]) if len(argv) > 1 else 10.0
    python_readers = len(argv) > 2 and argv[2] == "python"
    # A corrupted heap can leave a thread spinning: give up on it after 10 s (an AssertionError,
    # so the process exits non-zero) rather than the default minute.
    result = published_ref_hammer(
        _core,
        naive=mode == "naive",
        python_readers=python_readers,
        seconds=seconds,
        stop_on_bad=True,
        timeout=10.0,
    )
    first_error = repr(result.errors[0]) if result.errors else "none"
    print(
        f"reads={result.reads} writes={result.writes} bad={result.bad_count} "
        f"seconds={result.seconds:.2f} errors={len(result.errors)} first={result.bad[:3]} "
        f"first_error={first_error}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
