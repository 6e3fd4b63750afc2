"""python -m ftmap.bench: run the matrix, print it as markdown, write the JSON and the chart."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .._threads import usable_cpus
from ._contenders import Contender, available_contenders, gil_enabled
from ._measure import Cell, Settings, measure, timer_overhead_ns
from ._report import Report, environment, interpreter_line, threads_text, write_chart
from ._workloads import WORKLOADS, Workload, make_keys

__all__ = ["main", "run"]

FULL_KEYS = (1_000, 100_000)


def _numbers(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers of at least 1, not {text!r}")
    return sorted(set(values))


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _pick(kind: str, wanted: list[str] | None, known: list[str]) -> list[str]:
    """The known names matching wanted: a name itself, else every name containing it (any case)."""
    if wanted is None:
        return known
    chosen = []
    for want in wanted:
        exact = [name for name in known if want.lower() == name.lower()]
        hits = exact or [name for name in known if want.lower() in name.lower()]
        if not hits:
            raise SystemExit(f"ftmap.bench: no {kind} matches {want!r}; known: {', '.join(known)}")
        chosen += hits
    return [name for name in known if name in chosen]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ftmap.bench",
        description="Workloads x maps x thread counts: throughput, scaling, latency, peak memory.",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 keys, 1 and all threads, short runs")
    parser.add_argument("--keys", type=_numbers, help="key counts, e.g. 1000,100000")
    parser.add_argument("--threads", type=_numbers, help="thread counts (default: 1 up to the CPUs usable)")
    parser.add_argument("--workloads", type=_names, help="workload names or parts of them, comma-separated")
    parser.add_argument("--maps", type=_names, help="map names or parts of them, comma-separated")
    parser.add_argument("--repeat", type=int, help="timed runs per cell; the median is reported")
    parser.add_argument("--duration", type=float, help="seconds per timed run")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per cell")
    parser.add_argument("--seed", type=int, help="seed of the programs (replays the same operations)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--out", type=Path, default=Path("ftmap-bench"), help="where results go")
    parser.add_argument("--no-chart", action="store_true", help="do not draw throughput.png")
    return parser


def run(
    workloads: Sequence[Workload],
    contenders: Sequence[Contender],
    key_counts: Sequence[int],
    thread_counts: Sequence[int],
    *,
    settings: Settings,
    progress: bool = True,
) -> list[Cell]:
    """Every cell of the matrix, with scaling filled in against the same cell's 1-thread result."""
    overhead = timer_overhead_ns()
    cells: list[Cell] = []
    total = len(key_counts) * len(workloads) * len(contenders) * len(thread_counts)
    for key_count in key_counts:
        keys = make_keys(key_count)
        for workload in workloads:
            for contender in contenders:
                row = [
                    measure(workload, contender, keys, t, settings=settings, overhead_ns=overhead)
                    for t in thread_counts
                ]
                base = next((c.ops_per_second for c in row if c.threads == 1), None)
                for cell in row:
                    if base and cell.ops_per_second is not None:
                        cell.scaling = cell.ops_per_second / base
                    if progress:
                        rate = cell.ops_per_second
                        status = cell.skipped or cell.error or f"{(rate or 0) / 1e6:.3f} Mops/s"
                        print(
                            f"[{len(cells) + 1}/{total}] {cell.keys:,} keys, {cell.workload}, {cell.map},"
                            f" {threads_text(cell.threads)}: {status}",
                            file=sys.stderr,
                        )
                    cells.append(cell)
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cpus = usable_cpus()
    quick = args.quick

    def chosen(given: float | None, quick_default: float, full_default: float) -> float:
        return given if given is not None else quick_default if quick else full_default

    settings = Settings(
        duration=chosen(args.duration, 0.025, 0.3),
        warmup=chosen(args.warmup, 0.01, 0.1),
        repeat=int(chosen(args.repeat, 3, 5)),
        memory=not args.no_memory,
        seed=args.seed if args.seed is not None else random.randrange(2**31),
    )
    if settings.repeat < 1 or settings.duration <= 0 or settings.warmup < 0:
        raise SystemExit("ftmap.bench: --repeat must be >= 1, --duration > 0 and --warmup >= 0")
    key_counts = args.keys or ([1_000] if quick else list(FULL_KEYS))
    thread_counts = args.threads or (sorted({1, cpus}) if quick else list(range(1, cpus + 1)))

    contenders, missing = available_contenders()
    chosen_maps = _pick("map", args.maps, [c.name for c in contenders])
    contenders = [c for c in contenders if c.name in chosen_maps]
    chosen_workloads = _pick("workload", args.workloads, [w.name for w in WORKLOADS])
    workloads = [w for w in WORKLOADS if w.name in chosen_workloads]

    env = environment()
    print(f"ftmap.bench: {interpreter_line(env)}, {cpus} CPUs, seed {settings.seed}", file=sys.stderr)
    if env["free_threaded_build"] and env["gil_enabled"]:
        print("ftmap.bench: warning: the GIL is on in a free-threaded build (PYTHON_GIL=1?)", file=sys.stderr)
    started = time.perf_counter()
    cells = run(workloads, contenders, key_counts, thread_counts, settings=settings)
    if gil_enabled() != env["gil_enabled"]:
        env["gil_enabled_after_run"] = gil_enabled()
        print("ftmap.bench: warning: the GIL was turned on during the run", file=sys.stderr)
    report = Report(
        env,
        settings,
        [{"name": c.name, "about": c.about, "version": c.version} for c in contenders],
        [{"name": w.name, "about": w.about} for w in workloads],
        cells,
        missing,
    )
    markdown = report.markdown()
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(args.out / "results.json")
    (args.out / "results.md").write_text(markdown, encoding="utf-8")
    written = [args.out / "results.json", args.out / "results.md"]
    if not args.no_chart:
        why_not = write_chart(report, args.out / "throughput.png")
        if why_not:
            print(f"ftmap.bench: no chart: {why_not}", file=sys.stderr)
        else:
            written.append(args.out / "throughput.png")
    took = time.perf_counter() - started
    files = ", ".join(map(str, written))
    print(f"ftmap.bench: {len(cells)} cells in {took:.1f} s; wrote {files}", file=sys.stderr)
    return 0
