"""The C SnapshotMap's published snapshot under real threads: no use after free.

Writers replace the current snapshot as fast as they can: one through the real write path
(``replace``, under the writer lock), one publishing fresh snapshots with the raw ``_publish``
in a tight loop (hundreds of thousands of replacements), each followed by allocator churn (dicts
of the same size, freed at once) so that a freed snapshot's block comes back as another dict.
Readers load through every C path that loads the reference (``snapshot()``, ``get``, ``m[k]``,
``in``, ``version``, ``_history``, and a per-thread reader's cached path) and check that every
snapshot is a ``Snapshot`` whose contents agree with each other and with its version.

The control: the same harness with the deliberately naive load-then-incref (``_naive_snapshot``,
compiled in only with FTMAP_DEV_BUILD=1) runs in a subprocess and must be caught, by a bad
observation, a worker's exception, a crash or a hang.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ftmap import _impl
from ftmap._snapshot import Snapshot, _set_version, _snapshot_of
from tests.uaf import HammerResult, hammer

VARIANTS = _impl.variants("SnapshotMap")
pytestmark = pytest.mark.skipif(
    "c" not in VARIANTS, reason=f"no C SnapshotMap: {_impl.implementation_reason}"
)
ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("FTMAP_UAF_SECONDS", "2.0"))


def fresh(serial: int) -> Snapshot[str, int]:
    snap: Snapshot[str, int] = _snapshot_of({"a": serial, "b": 2 * serial, "c": -serial})
    _set_version(snap, serial)
    return snap


def describe(snap: Any) -> str | None:
    """None if snap is an intact snapshot, else what is wrong with it."""
    if type(snap) is not Snapshot:
        return f"wrong type: {type(snap).__name__}"
    try:
        a, b, c, version = snap["a"], snap["b"], snap["c"], snap.version
    except Exception as error:
        return f"broken: {type(error).__name__}: {error}"
    if b != 2 * a or c != -a or type(version) is not int:  # replace() numbers its own versions
        return f"torn: a={a} b={b} c={c} version={version}"
    return None


def snapshot_hammer(
    *, naive: bool, seconds: float, stop_on_bad: bool = False, timeout: float = 60.0
) -> HammerResult:
    m = VARIANTS["c"]({"a": 1, "b": 2, "c": -1})
    serials = itertools.count(2)
    serial_lock = threading.Lock()

    def next_serial() -> int:
        with serial_lock:
            return next(serials)

    def write_raw() -> int:
        for _ in range(1_000):
            snap = fresh(next_serial())
            m._publish(snap, (snap,), None, None)
            churn = [{"x": i, "y": i, "z": i} for i in range(4)]  # freed snapshot blocks reused
            del churn
        return 1_000

    def write_real() -> int:
        for _ in range(100):
            serial = next_serial()
            m.replace({"a": serial, "b": 2 * serial, "c": -serial})  # its version is its own
        return 100

    turn = itertools.count()

    def write() -> int:
        return write_raw() if next(turn) % 4 else write_real()

    load = m._naive_snapshot if naive else m.snapshot

    def read() -> tuple[int, list[str]]:
        if next(turn) % 2 and hasattr(m, "_check_loads"):  # half the batches: a tight loop in C
            wrong = m._check_loads(20_000, Snapshot, naive)
            return 20_000, [f"wrong type x{wrong}"] * bool(wrong)
        reader = m.reader()
        bad: list[str] = []
        for _ in range(500):
            for snap in (load(), reader.snapshot()):
                problem = describe(snap)
                if problem:
                    bad.append(problem)
            a = m.get("a")
            if type(a) is not int or type(m["b"]) is not int or "a" not in m or "c" not in reader:
                bad.append(f"wrong value: {a!r}")
            if type(m.version) is not int or type(m._history) is not tuple or type(reader["a"]) is not int:
                bad.append("wrong version, history or reader value")
        return 500, bad

    return hammer(
        write, read, writers=2, readers=2, seconds=seconds, stop_on_bad=stop_on_bad, timeout=timeout
    )


def test_published_snapshots_are_never_used_after_free() -> None:
    # Enough work to catch the naive load many times over (it is caught within ~10**4 raw
    # publishes); under ThreadSanitizer everything runs ~50x slower, and TSan itself is the check.
    # A busy machine starves the writers (CI once saw 17,200 writes in 2 s against 15 million
    # reads): rounds are added until the work is done, up to a time cap, never a shorter check.
    least = 2_000 if _impl.core is not None and _impl.core.build_info["sanitizer"] else 20_000
    writes = reads = rounds = 0
    deadline = time.monotonic() + 20 * SECONDS
    while writes < least or reads < least:
        if rounds and time.monotonic() > deadline:
            break
        result = snapshot_hammer(naive=False, seconds=SECONDS)
        assert not result.errors, result.errors
        assert result.bad_count == 0, result.bad
        writes, reads, rounds = writes + result.writes, reads + result.reads, rounds + 1
    assert writes >= least and reads >= least, (writes, reads, rounds)


def run_in_process(mode: str, seconds: float) -> tuple[int | None, str]:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.stress.test_snapshot_uaf", mode, str(seconds)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=seconds + 15,
            check=False,
        )
    except subprocess.TimeoutExpired as hung:
        return None, f"killed after {hung.timeout} s"
    return done.returncode, done.stdout + done.stderr[-3000:]


needs_test_hooks = pytest.mark.skipif(
    _impl.core is None or not _impl.core.build_info["test_hooks"],
    reason="the naive load is compiled in only with FTMAP_DEV_BUILD=1",
)


@needs_test_hooks
def test_the_naive_load_of_the_snapshot_is_caught() -> None:
    status, output = run_in_process("naive", SECONDS)
    observed = "bad=0 " not in output or "errors=0 " not in output
    assert status != 0 or observed, f"the naive load was not caught in {SECONDS} s:\n{output}"


@needs_test_hooks
def test_the_same_harness_in_a_process_passes_with_the_safe_load() -> None:
    status, output = run_in_process("safe", min(SECONDS, 1.0))
    assert status == 0, output
    assert "bad=0 " in output and "errors=0 " in output, output


def main(argv: list[str]) -> int:
    result = snapshot_hammer(naive=argv[0] == "naive", seconds=float(argv[1]), stop_on_bad=True, timeout=10.0)
    first_error = repr(result.errors[0]) if result.errors else "none"
    print(
        f"reads={result.reads} writes={result.writes} bad={result.bad_count} seconds={result.seconds:.2f} "
        f"errors={len(result.errors)} first={result.bad[:3]} first_error={first_error}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
