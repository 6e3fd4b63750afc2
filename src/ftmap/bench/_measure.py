"""Measuring one cell of the matrix: a map, a workload, a key count, a thread count.

Method: the threads are released together by a Barrier (ftmap.testing.run_threads,
each on its own CPU), run for a fixed time after a warm-up, and the median of
several repetitions is kept. One map serves a cell's warm-up and repetitions,
so they measure its steady state (a new SyncMap, for one, must first promote
its dirty map).
Every thread builds what it touches often (its program, its value, its view)
on its own thread: on 3.13t an object made by one thread and used by another
pays atomic reference counting, which would make the harness the bottleneck.
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..testing import run_threads
from ._contenders import Contender
from ._workloads import READS_PER_KEY_PER_RELOAD, Workload, compile_batch

__all__ = ["VALUE_KINDS", "Cell", "Settings", "measure", "percentile", "timer_overhead_ns"]

VALUE_KINDS = ("distinct", "small")  # see Settings.values


@dataclass(frozen=True)
class Settings:
    """How long and how often each cell is run."""

    duration: float = 0.3  # seconds per repetition
    warmup: float = 0.1  # seconds, before the repetitions, on a map of its own
    repeat: int = 5
    samples_per_batch: int = 8  # operations timed one by one after each batch
    memory: bool = True  # also measure peak memory (one thread, tracemalloc, untimed)
    seed: int = 0
    # The values the map starts with. "distinct": key i holds the int i, one object per key,
    # most of them ordinary objects made by the main thread, so every read of one writes its
    # shared reference count (on 3.13t), whatever the map. "small": key i holds i % 256, the
    # small ints, immortal on 3.13+: a read writes no count of the value, and what remains
    # is the map's own cost (issue 12 counts the handle's, "beyond what the returned value
    # itself needs"). The values the workers write, and the config workload's reloads, are of
    # the same kind (_Worker.value, _Plan.contents).
    values: str = "distinct"


@dataclass
class Cell:
    """The result of one cell. ops_per_second is None when it was skipped or failed."""

    map: str
    workload: str
    keys: int
    threads: int
    ops_per_second: float | None = None
    repetitions: list[float] = field(default_factory=list)
    operations: int = 0  # done in all timed runs together
    scaling: float | None = None  # ops_per_second over the same cell's with one thread
    p50_ns: float | None = None
    p99_ns: float | None = None
    latency_samples: int = 0
    peak_memory_bytes: int | None = None
    lost_updates: int | None = None  # hot-counter only: increments made minus increments seen
    batch: int = 0  # operations per batch after calibration
    skipped: str | None = None
    error: str | None = None


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def timer_overhead_ns(clock: Callable[[], int] = time.perf_counter_ns, rounds: int = 2000) -> float:
    """The median cost of an empty timed region, subtracted from every latency sample."""
    samples = []
    for _ in range(rounds):
        t = clock()
        samples.append(clock() - t)
    return statistics.median(samples)


class _Worker:
    """One thread's state. Made by the main thread; everything hot is rebuilt on its own thread."""

    def __init__(self, index: int, plan: _Plan, m: Any, lock: threading.Lock) -> None:
        self.index = index
        self.contender = plan.contender
        self.batch = plan.batch
        self.sampler = plan.sampler
        self.m = m
        self.lock = lock
        self.program = plan.programs[index]
        self.contents = plan.contents
        self.batch_length = plan.batch_length
        self.samples_per_batch = plan.settings.samples_per_batch
        self.small_values = plan.settings.values == "small"
        self.reloader = index == 0
        # The reloading thread's own share of the reads between reloads.
        self.reads_per_reload = READS_PER_KEY_PER_RELOAD * len(plan.content) // plan.threads
        self.samples: list[int] = []
        self.ready = False
        self.position = 0
        self.reads_since_reload = 0
        self.flip = 0
        self.first_start: float | None = None  # when this thread began its first batch
        self.last_end = 0.0  # and when it ended its last

    def _settle_on_this_thread(self) -> None:
        self.program = list(self.program)
        # What this thread writes. "distinct": a new int object this thread owns, so once written,
        # other threads' reads of it write its shared count (as reads of the content do);
        # "small": an immortal small int, as the content, so writes bring in no counted value.
        self.value = self.index % 256 if self.small_values else int(f"{1_000_000 + self.index}")
        self.view = self.contender.view(self.m) if self.contender.view else self.m
        self.ready = True

    def step(self) -> int:
        if not self.ready:
            self._settle_on_this_thread()
            self.first_start = time.perf_counter()
        program, length, start = self.program, self.batch_length, self.position
        if length >= len(program):
            chunk = program
        else:
            chunk = program[start : start + length]
            if len(chunk) < length:
                chunk += program[: length - len(chunk)]
            self.position = (start + length) % len(program)
        reload = self.reloader and self.reads_since_reload >= self.reads_per_reload
        if reload:
            self.flip ^= 1
            self.reads_since_reload = 0
        self.reads_since_reload += len(chunk)
        new, m, view, lock, value = self.contents[self.flip], self.m, self.view, self.lock, self.value
        done = self.batch(m, view, lock, chunk, value, new, len(new), reload, None, None)
        if self.samples_per_batch:
            sample = chunk[: self.samples_per_batch]
            done += self.sampler(
                m, view, lock, sample, value, new, len(new), False, self.samples, time.perf_counter_ns
            )
        self.last_end = time.perf_counter()
        return done


def _describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"


class _Plan:
    """Everything one cell's repetitions share: the compiled loops, the programs, the contents."""

    def __init__(
        self, workload: Workload, contender: Contender, keys: Sequence[Any], threads: int, settings: Settings
    ) -> None:
        self.workload, self.contender, self.keys, self.threads, self.settings = (
            workload,
            contender,
            keys,
            threads,
            settings,
        )
        self.batch = compile_batch(workload, contender)
        self.sampler = compile_batch(workload, contender, sampled=True)
        self.programs = [
            workload.program(keys, i, threads, random.Random(settings.seed * 7919 + i))
            for i in range(threads)
        ]
        if settings.values not in VALUE_KINDS:
            raise ValueError(f"values must be one of {', '.join(VALUE_KINDS)}, not {settings.values!r}")
        small = settings.values == "small"
        self.content = {k: i % 256 if small else i for i, k in enumerate(keys)}
        # Two whole new contents, alternated by the config workload's reloads (of the same kind).
        self.contents = (
            {k: (i + 1) % 256 if small else i + 1_000_000 for i, k in enumerate(keys)},
            {k: (i + 2) % 256 if small else i + 2_000_000 for i, k in enumerate(keys)},
        )
        self.batch_length = len(self.programs[0])

    def fresh_content(self) -> dict[Any, Any]:
        """The content to build a map from; the counter workload's key holds a new zero counter."""
        if self.workload.name == "hot-counter":
            return {**self.content, self.keys[0]: self.contender.counter_start()}
        return self.content

    def fresh_map(self) -> Any:
        return self.contender.build(self.fresh_content())

    def workers(self, m: Any, threads: int | None = None) -> list[_Worker]:
        count = self.threads if threads is None else threads
        lock = threading.Lock()
        return [_Worker(i, self, m, lock) for i in range(count)]

    def calibrate(self) -> None:
        """Cut the batch of a slow map so that one takes about the workload's max_batch_seconds."""
        target = self.workload.max_batch_seconds
        if target is None:
            return
        worker = self.workers(self.fresh_map(), threads=1)[0]
        worker.samples_per_batch = 0
        started = time.perf_counter()
        worker.step()
        elapsed = time.perf_counter() - started
        full = len(self.programs[0])
        self.batch_length = max(1, min(full, int(full * target / max(elapsed, 1e-9))))

    def run(self, m: Any, duration: float) -> tuple[float, int, list[int]]:
        """One timed run on m: (operations per second, operations, latency samples)."""
        workers = self.workers(m)
        result = run_threads(
            lambda index, rng: workers[index].step(),
            threads=self.threads,
            duration=duration,
            seed=self.settings.seed,
            pin=self.threads > 1,
            timeout=max(120.0, 50 * duration),
        )
        operations = sum(sum(t.results) for t in result.threads)
        # From the first thread's start to the last one's end: threads that could not run
        # side by side (a GIL, a busy CPU) then show no gain, as each thread's own time would.
        seconds = max(w.last_end for w in workers) - min(w.first_start or w.last_end for w in workers)
        samples = [s for w in workers for s in w.samples]
        return (operations / seconds if operations else 0.0), operations, samples

    def peak_memory(self) -> int:
        """Peak bytes allocated while building the map and running one batch on one thread.

        The batch includes a reload where the workload has them: a new snapshot is the cost.
        """
        content = self.fresh_content()  # made before tracing: only the map's own memory counts
        tracemalloc.start()
        try:
            worker = self.workers(self.contender.build(content), threads=1)[0]
            worker.reads_since_reload = worker.reads_per_reload
            worker.step()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def measure(
    workload: Workload,
    contender: Contender,
    keys: Sequence[Any],
    threads: int,
    *,
    settings: Settings,
    overhead_ns: float = 0.0,
) -> Cell:
    """Measure one cell; a failure in any thread is recorded on the cell, not raised."""
    cell = Cell(contender.name, workload.name, len(keys), threads)
    if threads > 1 and workload.writes and not contender.concurrent_writes:
        cell.skipped = f"{contender.name} reports writes from several threads as misuse"
        return cell
    plan = _Plan(workload, contender, keys, threads, settings)
    samples: list[int] = []
    counting, lost = workload.name == "hot-counter", 0
    try:
        plan.calibrate()
        cell.batch = plan.batch_length
        m = plan.fresh_map()
        if settings.warmup > 0:
            plan.run(m, settings.warmup)
        for _ in range(settings.repeat):
            before = contender.counter_value(m, keys[0]) if counting else 0
            rate, operations, run_samples = plan.run(m, settings.duration)
            cell.repetitions.append(rate)
            cell.operations += operations
            samples.extend(run_samples)
            if counting:
                lost += operations - (contender.counter_value(m, keys[0]) - before)
    except Exception as error:
        cell.error = _describe(error)
        cell.repetitions.clear()
        return cell
    cell.ops_per_second = statistics.median(cell.repetitions)
    if counting:
        cell.lost_updates = lost
    if samples:
        ordered = sorted(max(0.0, s - overhead_ns) for s in samples)
        cell.p50_ns, cell.p99_ns = percentile(ordered, 0.50), percentile(ordered, 0.99)
        cell.latency_samples = len(ordered)
    if settings.memory:
        cell.peak_memory_bytes = plan.peak_memory()
    return cell
