"""The workloads: what each thread does, as a loop with the contenders' snippets spliced in.

A workload's template is the body of a batch function. A line holding only
``{operation}`` is replaced by the contender's snippet for that operation,
at that indentation. The batch function is compiled once per (workload,
contender) and called by every thread, so the timed loop holds nothing but
the workload's own bookkeeping and the map's own code.

The batch arguments: m, view, lock (see _contenders), prog (this batch's
share of the thread's program), v (a value the thread owns), new (a whole
new content), size (the map's key count), reload (whether to replace the
content this batch), samples and clock (used by the sampled variant only).
A batch returns the number of operations it did.
"""

from __future__ import annotations

import linecache
import random
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._fnv import shard_of
from ._contenders import SNIPPET_GLOBALS, Contender

__all__ = [
    "READS_PER_KEY_PER_RELOAD",
    "SHARD_WRITES",
    "WORKLOADS",
    "Workload",
    "compile_batch",
    "make_keys",
    "render_batch",
]

BATCH_ARGS = "m, view, lock, prog, v, new, size, reload, samples, clock"
PROGRAM_LENGTH = 1024  # operations in a thread's program; batches walk it round and round
WRITERS_PRIVATE_KEYS = 32  # keys one thread inserts and deletes per pass of the iteration workload
# The config workload replaces the whole content once per this many reads of each key, counting
# the reads of all threads: the same mix of reads and reloads at every thread count and size.
READS_PER_KEY_PER_RELOAD = 10


def make_keys(count: int) -> list[str]:
    """Interned string keys: immortal on 3.13t, so sharing them costs nothing (a real service's keys)."""
    return [sys.intern(f"key-{i}") for i in range(count)]


Program = Callable[[Sequence[Any], int, int, random.Random], list[Any]]


def _random_keys(keys: Sequence[Any], index: int, threads: int, rng: random.Random) -> list[Any]:
    return [rng.choice(keys) for _ in range(PROGRAM_LENGTH)]


def _mix(write_share: float) -> Program:
    def program(keys: Sequence[Any], index: int, threads: int, rng: random.Random) -> list[Any]:
        return [(rng.choice(keys), rng.random() < write_share) for _ in range(PROGRAM_LENGTH)]

    return program


def _own_keys(keys: Sequence[Any], index: int, threads: int, rng: random.Random) -> list[Any]:
    own = keys[index::threads]
    return [rng.choice(own) for _ in range(PROGRAM_LENGTH)]


def own_shard_keys(keys: Sequence[Any], index: int, threads: int) -> list[Any]:
    """The keys whose ShardedMap shard lies in this thread's own range of the 32 shards.

    Thread i of n owns the shards s of 32 with s * n // 32 == i (shard_of(key, 5): the default
    placement of ShardedMap(32) in both implementations). Shards of 16 and 64 are the top 4 and
    6 bits of the same hash, so for n a power of two up to 16 no two threads write one shard
    of ShardedMap(16), (32) or (64) either. Past 32 threads some would own no shard: then every
    thread takes keys[i::n] (disjoint keys, shared shards).
    """
    own = [k for k in keys if shard_of(k, 5) * threads // 32 == index] if threads <= 32 else []
    return own or list(keys[index::threads])


def _own_shard_keys(keys: Sequence[Any], index: int, threads: int, rng: random.Random) -> list[Any]:
    own = own_shard_keys(keys, index, threads)
    return [rng.choice(own) for _ in range(PROGRAM_LENGTH)]


def _hot_key(keys: Sequence[Any], index: int, threads: int, rng: random.Random) -> list[Any]:
    return [keys[0]] * PROGRAM_LENGTH


def _private_new_keys(keys: Sequence[Any], index: int, threads: int, rng: random.Random) -> list[Any]:
    return [sys.intern(f"extra-{index}-{j}") for j in range(WRITERS_PRIVATE_KEYS)]


_ONE = "for k in prog:\n    {%s}\nreturn len(prog)"
_MIXED = "for k, write in prog:\n    if write:\n        {write}\n    else:\n        {read}\nreturn len(prog)"
_RELOAD_THEN_RETURN = "if reload:\n    {replace}\n    return len(prog) + 1\nreturn len(prog)"
_INSERT_DELETE = "for k in prog:\n    {insert}\n    {delete}\nreturn 2 * len(prog)"


@dataclass(frozen=True)
class Workload:
    """One row of the matrix's columns: a program per thread and the loop that runs it."""

    name: str
    about: str
    program: Program
    template: str
    # The loop whose operations are timed one by one for the latency percentiles.
    sample_template: str
    timed: frozenset[str]
    writes: bool
    # A slow map's batch is cut to about this long (a slice of the program, so the mix is kept);
    # None: never cut, because a batch's shape is the workload (one reload per so many reads).
    max_batch_seconds: float | None = 0.002


WORKLOADS: list[Workload] = [
    Workload(
        "read-only",
        "every thread reads random keys",
        _random_keys,
        _ONE % "read",
        _ONE % "read",
        frozenset({"read"}),
        writes=False,
    ),
    Workload(
        "read-mostly",
        "95% reads, 5% overwrites of random keys",
        _mix(0.05),
        _MIXED,
        _MIXED,
        frozenset({"read", "write"}),
        writes=True,
    ),
    Workload(
        "balanced",
        "50% reads, 50% overwrites of random keys",
        _mix(0.5),
        _MIXED,
        _MIXED,
        frozenset({"read", "write"}),
        writes=True,
    ),
    Workload(
        "disjoint-writes",
        "every thread overwrites only its own keys",
        _own_keys,
        _ONE % "write",
        _ONE % "write",
        frozenset({"write"}),
        writes=True,
    ),
    Workload(
        "hot-counter",
        "every thread increments one shared key; lost updates are counted",
        _hot_key,
        _ONE % "increment",
        _ONE % "increment",
        frozenset({"increment"}),
        writes=True,
    ),
    Workload(
        "iterate-write",
        f"every thread iterates the whole map, then inserts and deletes {WRITERS_PRIVATE_KEYS} keys of"
        " its own (an item visited counts as one operation; latency is that of the inserts and deletes)",
        _private_new_keys,
        "{iterate}\n" + _INSERT_DELETE.replace("return ", "return size + "),
        _INSERT_DELETE,
        frozenset({"insert", "delete"}),
        writes=True,
        max_batch_seconds=0.05,
    ),
    Workload(
        "config-reload",
        "every thread reads random keys; the first also replaces the whole content (same keys, new"
        f" values) once per {READS_PER_KEY_PER_RELOAD} x keys reads, its share counted as if all threads"
        " read at its pace (latency is that of the reads)",
        _random_keys,
        _ONE.replace("return len(prog)", _RELOAD_THEN_RETURN) % "read",
        _ONE % "read",
        frozenset({"read"}),
        writes=True,
        max_batch_seconds=None,
    ),
]

# Not in the matrix: issue 12's ShardedMap write bar is about writes to different shards
# ("must not contend on anything shared but the shard's own lock"), which disjoint-writes'
# keys are not (each thread's keys spread over every shard). python -m ftmap.bench.scaling
# runs it beside disjoint-writes; for any other map it is just another disjoint partition.
SHARD_WRITES = Workload(
    "shard-writes",
    "every thread overwrites only keys of its own ShardedMap shards",
    _own_shard_keys,
    _ONE % "write",
    _ONE % "write",
    frozenset({"write"}),
    writes=True,
)


def render_batch(workload: Workload, contender: Contender, *, sampled: bool = False) -> str:
    """The source of the batch function for this workload and contender."""
    template = workload.sample_template if sampled else workload.template
    lines = []
    for line in template.splitlines():
        stripped = line.strip()
        if not (stripped.startswith("{") and stripped.endswith("}")):
            lines.append(line)
            continue
        operation = stripped[1:-1]
        indent = line[: len(line) - len(line.lstrip())]
        code = contender.snippet(operation).splitlines()
        if sampled and operation in workload.timed:
            code = ["t = clock()", *code, "samples.append(clock() - t)"]
        lines.extend(indent + part for part in code)
    return f"def batch({BATCH_ARGS}):\n" + textwrap.indent("\n".join(lines), "    ") + "\n"


def compile_batch(workload: Workload, contender: Contender, *, sampled: bool = False) -> Callable[..., int]:
    """The batch function, compiled; tracebacks show its source."""
    source = render_batch(workload, contender, sampled=sampled)
    namespace: dict[str, Any] = dict(SNIPPET_GLOBALS)
    filename = f"<ftmap.bench {'sampled ' if sampled else ''}{workload.name} / {contender.name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    batch: Callable[..., int] = namespace["batch"]
    return batch
