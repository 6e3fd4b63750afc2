"""The matrix as markdown, as JSON, and as a chart (when matplotlib is installed)."""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import platform
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .._threads import usable_cpus
from ._contenders import gil_enabled
from ._measure import Cell, Settings

__all__ = ["Report", "environment", "write_chart"]

FORMAT_VERSION = 1


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """The facts a reader needs to weigh the numbers: machine, interpreter, GIL state, date."""
    free_threaded_build = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpus": usable_cpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "free_threaded_build": free_threaded_build,
        "gil_enabled": gil_enabled(),
        "ftmap": __version__,
    }


def interpreter_line(env: dict[str, Any]) -> str:
    build = "free-threaded build" if env["free_threaded_build"] else "default build"
    gil = "GIL on" if env["gil_enabled"] else "GIL off"
    return f"{env['implementation']} {env['python']} ({build}, {gil})"


def threads_text(count: int) -> str:
    return f"{count} thread" if count == 1 else f"{count} threads"


def _mops(rate: float | None) -> str:
    if rate is None:
        return "-"
    mops = rate / 1e6
    return f"{mops:.2f}" if mops >= 0.1 else f"{mops:.2g}"  # two significant digits when small


def _micros(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1000:.2f}" if ns < 10_000 else f"{ns / 1000:.0f}"


@dataclasses.dataclass
class Report:
    """A finished run: its environment, settings, contenders and cells."""

    env: dict[str, Any]
    settings: Settings
    maps: list[dict[str, str]]
    workloads: list[dict[str, str]]
    cells: list[Cell]
    missing: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "environment": self.env,
            "settings": dataclasses.asdict(self.settings),
            "maps": self.maps,
            "missing": self.missing,
            "workloads": self.workloads,
            "cells": [dataclasses.asdict(c) for c in self.cells],
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    # -- markdown ---------------------------------------------------------------------------

    def _lookup(self) -> dict[tuple[str, str, int, int], Cell]:
        return {(c.map, c.workload, c.keys, c.threads): c for c in self.cells}

    def _axes(self) -> tuple[list[str], list[str], list[int], list[int]]:
        def ordered(values: Sequence[Any]) -> list[Any]:
            return list(dict.fromkeys(values))

        return (
            ordered([c.map for c in self.cells]),
            ordered([c.workload for c in self.cells]),
            sorted(set(c.keys for c in self.cells)),
            sorted(set(c.threads for c in self.cells)),
        )

    def markdown(self) -> str:
        maps, workloads, key_counts, thread_counts = self._axes()
        cells = self._lookup()
        low, high = thread_counts[0], thread_counts[-1]
        env, s = self.env, self.settings
        out = [
            "## ftmap benchmark matrix",
            "",
            f"- {env['date']}; {interpreter_line(env)}; ftmap {env['ftmap']}",
            f"- {env['cpu']}, {env['cpus']} CPUs; {env['platform']}",
            f"- threads {', '.join(map(str, thread_counts))}, each pinned to its own CPU, released together;"
            f" warm-up {s.warmup:g} s, then the median of {s.repeat} runs of {s.duration:g} s; seed {s.seed}",
        ]
        for entry in self.maps:
            if entry.get("version"):
                out.append(f"- {entry['name']}: version {entry['version']}")
        for dist, why in self.missing.items():
            out.append(f"- {dist}: not measured, {why}")
        footnotes: list[str] = []

        def table(title: str, text: Callable[[str, str], str]) -> None:
            """A map x workload table; text(map, workload) is one cell's text."""
            out.extend(["", f"### {title}", "", "| map | " + " | ".join(workloads) + " |"])
            out.append("|---|" + "---:|" * len(workloads))
            out.extend(f"| {m} | " + " | ".join(text(m, w) for w in workloads) + " |" for m in maps)

        def latency(cell: Cell | None) -> str:
            if cell is None or cell.p50_ns is None:
                return "-"
            return f"{_micros(cell.p50_ns)} / {_micros(cell.p99_ns)}"

        def memory(cell: Cell | None) -> str:
            peak = None if cell is None else cell.peak_memory_bytes
            return "-" if peak is None else f"{peak / 2**20:.2f}"

        head = f"{threads_text(low)} / {threads_text(high)}" if high != low else threads_text(low)
        for keys in key_counts:

            def throughput(m: str, w: str, keys: int = keys) -> str:
                one, many = cells.get((m, w, keys, low)), cells.get((m, w, keys, high))
                return self._throughput_text(one, many, footnotes)

            def latency_at(m: str, w: str, keys: int = keys) -> str:
                return latency(cells.get((m, w, keys, high)))

            table(f"Throughput, {keys:,} keys: million operations per second, {head} (scaling)", throughput)
            table(
                f"Latency, {keys:,} keys, {threads_text(high)}: p50 / p99 of sampled operations, in µs",
                latency_at,
            )
        if any(c.peak_memory_bytes is not None for c in self.cells):
            largest = key_counts[-1]
            table(
                f"Peak memory, {largest:,} keys: MiB allocated building the map and running one batch",
                lambda m, w: memory(cells.get((m, w, largest, low))),
            )
        out += ["", "Workloads:", ""]
        out += [f"- **{w['name']}**: {w['about']}" for w in self.workloads if w["name"] in workloads]
        out += ["", "Maps:", ""]
        out += [f"- **{m['name']}**: {m['about']}" for m in self.maps if m["name"] in maps]
        if footnotes:
            out += ["", "Notes:", ""] + [f"{i}. {text}" for i, text in enumerate(footnotes, 1)]
        return "\n".join(out) + "\n"

    @staticmethod
    def _throughput_text(one: Cell | None, many: Cell | None, footnotes: list[str]) -> str:
        def note(text: str) -> str:
            if text not in footnotes:
                footnotes.append(text)
            return f"<sup>{footnotes.index(text) + 1}</sup>"

        parts, marks = [], []
        for cell in (one, many) if many is not one else (one,):
            if cell is None:
                parts.append("-")
            elif cell.skipped:
                parts.append("n/a")
                marks.append(note(cell.skipped))
            elif cell.error:
                parts.append("fails")
                marks.append(note(f"{cell.map}, {cell.workload}, {threads_text(cell.threads)}: {cell.error}"))
            else:
                parts.append(_mops(cell.ops_per_second))
                if cell.lost_updates:
                    share = cell.lost_updates / max(1, cell.operations)
                    marks.append(
                        note(
                            f"{cell.map}, hot-counter, {threads_text(cell.threads)}: {cell.lost_updates:,} of"
                            f" {cell.operations:,} increments lost ({share:.0%}): `m[k] += 1` is not atomic"
                        )
                    )
        text = " / ".join(parts)
        if many is not None and many is not one and many.scaling is not None:
            text += f" ({many.scaling:.2f}x)"
        return text + "".join(dict.fromkeys(marks))


def write_chart(report: Report, path: Path) -> str | None:
    """Throughput against threads, one panel per workload; None, or why no chart was drawn."""
    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "matplotlib is not installed (pip install 'ftmap[bench]')"
    maps, workloads, key_counts, thread_counts = report._axes()
    cells = report._lookup()
    columns = 4
    rows = (len(workloads) + 1 + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    panels = [ax for row in axes for ax in row]
    styles = ["-", "--", ":", "-."]
    palette = plt.get_cmap("tab20").colors
    colours = palette[0::2] + palette[1::2]  # the ten strong colours first
    for ax, workload in zip(panels, workloads, strict=False):
        for m_index, name in enumerate(maps):
            for k_index, keys in enumerate(key_counts):
                points = [
                    (t, cells[(name, workload, keys, t)].ops_per_second)
                    for t in thread_counts
                    if (name, workload, keys, t) in cells
                ]
                xs = [t for t, rate in points if rate]
                ys = [rate / 1e6 for t, rate in points if rate]
                if xs:
                    ax.plot(
                        xs,
                        ys,
                        styles[k_index % len(styles)],
                        marker="o",
                        markersize=3,
                        color=colours[m_index % len(colours)],
                        label=f"{name}, {keys:,} keys",
                    )
        ax.set_title(workload)
        ax.set_xlabel("threads")
        ax.set_ylabel("Mops/s")
        ax.set_yscale("log")
        ax.set_xticks(thread_counts)
        ax.grid(True, which="both", alpha=0.3)
    legend = panels[len(workloads)]
    handles, labels = panels[0].get_legend_handles_labels()
    legend.legend(handles, labels, loc="center", fontsize="x-small", ncol=1)
    legend.axis("off")
    for ax in panels[len(workloads) + 1 :]:
        ax.axis("off")
    env = report.env
    figure.suptitle(f"ftmap benchmark: {interpreter_line(env)}, {env['cpus']} CPUs, {env['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None
