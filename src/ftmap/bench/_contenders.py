"""The maps the benchmark compares, each with the code a user would write for each operation.

A contender gives, per operation, a snippet of Python source. The workloads
splice these snippets into their loops (see _workloads), so every map runs
its own idiomatic code with no adapter call in between: a dict is read by
``d[k]``, not through a wrapper that would make the floor look higher.

Names the snippets may use: ``m`` the shared map, ``view`` the calling
thread's view of it (``m`` unless the contender makes per-thread views),
``lock`` a threading.Lock shared by all threads, ``k`` the key, ``v`` a
value, ``new`` a whole new content (a dict). A read assigns ``got``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import operator
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Any

from .. import ShardedMap, SnapshotMap, SyncMap, UnsafeMap, _impl

__all__ = ["Contender", "GilReenabledError", "available_contenders", "builtin_contenders", "gil_enabled"]

# The operations a workload may ask for, as a dict user writes them.
DICT_SNIPPETS: Mapping[str, str] = {
    "read": "got = m[k]",
    "write": "m[k] = v",
    "increment": "m[k] += 1",
    "iterate": "for item in m.items():\n    pass",
    "insert": "m[k] = v",
    "delete": "del m[k]",
    # The new content has the same keys: updating in place replaces it, one key at a time.
    "replace": "m.update(new)",
}

# Names besides the batch arguments that snippets may use.
SNIPPET_GLOBALS: Mapping[str, Any] = {"add": operator.add}


def gil_enabled() -> bool:
    """True when the GIL is on: always on a default build, and on a t-build after a legacy import."""
    check: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else check()


class GilReenabledError(RuntimeError):
    """Importing an optional contender turned the GIL back on: no number measured after it means much."""


@dataclass(frozen=True)
class Contender:
    """One map under test: how to build it from a dict and the code of each operation."""

    name: str
    build: Callable[[dict[Any, Any]], Any]
    about: str
    snippets: Mapping[str, str] = field(default_factory=dict)
    # False when the map itself forbids writes from several threads (UnsafeMap reports them).
    concurrent_writes: bool = True
    # True when a whole-content replace is one atomic step for readers.
    atomic_replace: bool = False
    # The counter value a fresh map holds, and how to read it back as an int.
    counter_start: Callable[[], Any] = int
    counter_value: Callable[[Any, Any], int] = operator.getitem
    # A per-thread view of the map (SnapshotMap.reader), or None to use the map itself.
    view: Callable[[Any], Any] | None = None
    version: str = ""

    def snippet(self, operation: str) -> str:
        return self.snippets.get(operation, DICT_SNIPPETS[operation])


def _locked(snippets: Mapping[str, str]) -> dict[str, str]:
    def with_lock(code: str) -> str:
        return "with lock:\n" + "\n".join("    " + line for line in code.splitlines())

    return {name: with_lock(code) for name, code in snippets.items()}


# Both SnapshotMap rows write alike; they differ only in how they read.
_SNAPSHOT_WRITES: Mapping[str, str] = {
    "increment": "m.transform(lambda s: {**s, k: s[k] + 1})",
    "replace": "m.replace(new)",
}


# Through per-thread handles (m.handle(), made on the worker's own thread): the same
# operations, written against the handle where it has them, against the map where they are
# whole-map operations (iteration, a whole-content replace).
_HANDLE_SNIPPETS: Mapping[str, str] = {
    "read": "got = view[k]",
    "write": "view[k] = v",
    "increment": "view[k] += 1",
    "iterate": "for item in m.items():\n    pass",
    "insert": "view[k] = v",
    "delete": "del view[k]",
}


def _handle_view(m: Any) -> Any:
    return m.handle()


def _ftmap_contenders(
    maps: Mapping[str, Any], suffix: str, shard_counts: tuple[int, ...]
) -> tuple[list[Contender], list[Contender]]:
    """ftmap's rows for one implementation (maps: public name -> class): through the map, and
    through per-thread handles where the class has handle()."""
    unsafe, sync, sharded, snapshot = (maps[n] for n in ("UnsafeMap", "SyncMap", "ShardedMap", "SnapshotMap"))
    sync_increment = (
        "while True:\n    old, _ = {0}.load(k)\n    if {0}.compare_and_swap(k, old, old + 1):\n        break"
    )
    direct = [
        Contender(
            f"UnsafeMap{suffix}",
            unsafe,
            "race detection overhead; single-threaded unless read-only",
            concurrent_writes=False,
        ),
        Contender(
            f"SyncMap{suffix}",
            sync,
            "Go's sync.Map; the counter is a load / compare_and_swap loop",
            {"increment": sync_increment.format("m")},
        ),
        *(
            Contender(
                f"ShardedMap({n}){suffix}",
                functools.partial(sharded, shards=n),
                f"{n} shards, one lock each; the counter uses merge()",
                {"increment": "m.merge(k, 1, add)"},
            )
            for n in shard_counts
        ),
        Contender(
            f"SnapshotMap{suffix}",
            snapshot,
            "immutable snapshots; every write copies the content",
            {"read": "got = m.get(k)", **_SNAPSHOT_WRITES},
            atomic_replace=True,
        ),
        Contender(
            f"SnapshotMap{suffix} reader()",
            snapshot,
            "reads through a per-thread m.reader(), writes as SnapshotMap",
            {"read": "got = view.get(k)", **_SNAPSHOT_WRITES},
            atomic_replace=True,
            view=lambda m: m.reader(),
        ),
    ]
    through = "through a per-thread m.handle()"
    handles = [
        Contender(
            f"UnsafeMap{suffix} handles",
            unsafe,
            f"{through}; single-threaded unless read-only",
            dict(_HANDLE_SNIPPETS),
            concurrent_writes=False,
            view=_handle_view,
        ),
        Contender(
            f"SyncMap{suffix} handles",
            sync,
            f"{through}; the counter is a load / compare_and_swap loop",
            {**_HANDLE_SNIPPETS, "increment": sync_increment.format("view")},
            view=_handle_view,
        ),
        Contender(
            f"ShardedMap(32){suffix} handles",
            functools.partial(sharded, shards=32),
            f"{through}; the counter uses merge()",
            {**_HANDLE_SNIPPETS, "increment": "view.merge(k, 1, add)"},
            view=_handle_view,
        ),
        Contender(
            f"SnapshotMap{suffix} handles",
            snapshot,
            f"{through}; writes copy the content as SnapshotMap's",
            {**_HANDLE_SNIPPETS, **_SNAPSHOT_WRITES},
            atomic_replace=True,
            view=_handle_view,
        ),
    ]
    return direct, [c for c in handles if _has_handle(c)]


def _has_handle(contender: Contender) -> bool:
    build = contender.build
    cls = build.func if isinstance(build, functools.partial) else build
    return callable(getattr(cls, "handle", None))


def _exported_maps() -> dict[str, Any]:
    return {"UnsafeMap": UnsafeMap, "SyncMap": SyncMap, "ShardedMap": ShardedMap, "SnapshotMap": SnapshotMap}


def _pure_maps() -> dict[str, Any] | None:
    """The pure-Python classes, when the exported ones are the C core's (else None: one set)."""
    names = ("UnsafeMap", "SyncMap", "ShardedMap", "SnapshotMap")
    pure = {name: _impl.variants(name)["python"] for name in names}
    exported = _exported_maps()
    return None if all(pure[n] is exported[n] for n in names) else pure


def builtin_contenders() -> list[Contender]:
    """dict, dict + Lock and ftmap's maps: always available.

    ftmap's rows are the exported implementation's (the C core's where it is in use), through
    the map and through per-thread handles; where the C core is in use, the pure-Python maps
    follow as "... [py]" rows: both implementations side by side in one run.
    """
    exported = _exported_maps()
    direct, handles = _ftmap_contenders(exported, "", (16, 32, 64))
    rows = [
        Contender("dict", dict, "the per-operation floor; unsafe for compound operations"),
        Contender(
            "dict + Lock",
            dict,
            "every operation under one threading.Lock: the naive fix",
            _locked(DICT_SNIPPETS),
            atomic_replace=True,
        ),
        *direct,
        *handles,
    ]
    pure = _pure_maps()
    if pure is not None:
        pure_direct, pure_handles = _ftmap_contenders(pure, " [py]", (32,))
        rows += [*pure_direct, *pure_handles]
    return rows


def _concurrent_dict(module: Any) -> Contender:
    atomic_int = module.AtomicInt64

    def build(content: dict[Any, Any]) -> Any:
        m = module.ConcurrentDict()
        for k, v in content.items():
            m[k] = v
        return m

    return Contender(
        "ft_utils ConcurrentDict",
        build,
        "C; no iteration (copied by as_dict()), the counter is an AtomicInt64 value",
        {
            "increment": "m[k].incr()",
            "iterate": "for item in m.as_dict().items():\n    pass",
            "replace": "for key, value in new.items():\n    m[key] = value",
        },
        counter_start=atomic_int,
        counter_value=lambda m, k: int(m[k].get()),
    )


def _atomic_dict(module: Any) -> Contender:
    return Contender(
        "cereggii AtomicDict",
        module.AtomicDict,
        "C, lock-free; iteration by fast_iter(), the counter by reduce_sum()",
        {
            "increment": "m.reduce_sum(((k, 1),))",
            "iterate": "for item in m.fast_iter():\n    pass",
            "replace": "for key, value in new.items():\n    m[key] = value",
        },
    )


# (import name, distribution name, contender factory) of the optional C libraries.
OPTIONAL: list[tuple[str, str, Callable[[Any], Contender]]] = [
    ("ft_utils.concurrency", "ft-utils", _concurrent_dict),
    ("cereggii", "cereggii", _atomic_dict),
]


def available_contenders(
    optional: list[tuple[str, str, Callable[[Any], Contender]]] | None = None,
) -> tuple[list[Contender], dict[str, str]]:
    """The built-in contenders and each optional one that imports; and why the others are missing.

    Raises GilReenabledError if importing one turned the GIL on (on a t-build
    the GIL cannot be turned off again, so the run must stop).
    """
    contenders = builtin_contenders()
    missing: dict[str, str] = {}
    for module_name, dist, make in OPTIONAL if optional is None else optional:
        was_enabled = gil_enabled()
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            missing[dist] = f"not installed ({error}); pip install 'ftmap[bench]'"
            continue
        if gil_enabled() and not was_enabled:
            raise GilReenabledError(
                f"importing {module_name} ({dist}) turned the GIL back on; every number after it "
                "would measure a GIL build. Run with PYTHON_GIL=0 (or -X gil=0) or uninstall it."
            )
        try:
            found = dist_version(dist)
        except PackageNotFoundError:
            found = "unknown"
        contenders.append(dataclasses.replace(make(module), version=found))
    return contenders, missing
