"""Which implementation ftmap uses: the C core (ftmap._core) or pure Python, decided once at import.

- ``FTMAP_PURE_PYTHON=1`` (any value but empty or ``0``) forces pure Python;
- otherwise the C core, if this is CPython 3.13+ and ``ftmap._core`` imports;
- otherwise pure Python, with the reason.

``ftmap.implementation`` is ``"c"`` or ``"python"`` and ``ftmap.implementation_reason`` says why.
The pure-Python classes and functions always stay importable where they live (ftmap._sync.SyncMap,
ftmap._fnv.fnv1a_32 ...): they are the reference implementation, and ``variants(name)`` returns
both implementations of a name for differential tests.

The export pattern (docs/c-core.md), in ftmap/__init__.py, for every name in ``PURE``::

    if TYPE_CHECKING:
        from ._sync import SyncMap          # type checkers see the pure class
    else:
        SyncMap = _impl.select("SyncMap")   # the C class when implementation == "c"

``select`` falls back to the pure variant for a name the C core does not define (yet), so a map
moves to C by adding the class to ftmap._core under its public name and nothing else. Where the
public class is better written as a thin Python subclass of a C base (cold methods, docstrings
and properties in Python, hot ones inherited from C), that class lives in its own module and
``C_MODULES`` names it. ``implementation_of(name)`` says which one a name got.

Pickles are portable between implementations: both variants' ``__reduce__`` return
``reduce(self, "SyncMap", args)``, which pickles ``rebuild("SyncMap", args)``: the unpickling
process builds the variant it selected. Subclasses pickle by their own class.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import sysconfig
from collections.abc import Callable, Collection, Container, Iterable, Mapping, MutableMapping, Sized
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

__all__ = [
    "C_MODULES",
    "MIN_VERSION",
    "PURE",
    "core",
    "decide",
    "describe",
    "implementation",
    "implementation_of",
    "implementation_reason",
    "rebuild",
    "reduce",
    "select",
    "variants",
]

Implementation = Literal["c", "python"]

MIN_VERSION = (3, 13)

# Every public name with a C variant (now or planned), and the module of its pure-Python variant.
# A C variant is ftmap._core.<name>.
PURE: dict[str, str] = {
    "UnsafeMap": "ftmap._unsafe",
    "UnsafeMapHandle": "ftmap._unsafe",
    "SyncMap": "ftmap._sync",
    "SyncMapHandle": "ftmap._sync",
    "ShardedMap": "ftmap._sharded",
    "ShardedMapHandle": "ftmap._sharded",
    "SnapshotMap": "ftmap._snapshot",
    "SnapshotMapHandle": "ftmap._snapshot",
    "fnv1_32": "ftmap._fnv",
    "fnv1a_32": "ftmap._fnv",
    "fnv1a_64": "ftmap._fnv",
    "shard_of": "ftmap._fnv",
}

# Where a name's C variant lives when it is not ftmap._core itself: a Python module whose class
# subclasses a C type from ftmap._core. That module is imported only where the C core imports.
C_MODULES: dict[str, str] = {
    "ShardedMap": "ftmap._sharded_c",
    "ShardedMapHandle": "ftmap._sharded_c",
    "SnapshotMap": "ftmap._snapshot_c",
    "SnapshotMapHandle": "ftmap._snapshot_c",
    "SyncMap": "ftmap._sync_c",
    "SyncMapHandle": "ftmap._sync_c",
    "UnsafeMap": "ftmap._unsafe_c",
    "UnsafeMapHandle": "ftmap._unsafe_c",
}

# Written by setup.py when the C core was not built for this interpreter's ABI.
_BUILD_FAILURE = Path(__file__).with_name(
    "_core_build_failure" + os.path.splitext(sysconfig.get_config_var("EXT_SUFFIX") or ".so")[0] + ".txt"
)


def _import_core() -> ModuleType:
    return importlib.import_module("ftmap._core")


def _why_not_importable(error: BaseException) -> str:
    if isinstance(error, ModuleNotFoundError) and error.name == "ftmap._core":
        try:
            recorded = _BUILD_FAILURE.read_text(encoding="utf-8").strip()
        except OSError:
            recorded = ""
        if recorded:
            return f"ftmap._core is not built: {recorded}"
        return "ftmap._core is not built (installed without it, or not compiled yet)"
    return f"ftmap._core failed to import: {type(error).__name__}: {error}"


def decide(
    environ: Mapping[str, str],
    version_info: tuple[int, ...],
    python_implementation: str,
    import_core: Callable[[], ModuleType] = _import_core,
) -> tuple[Implementation, str, ModuleType | None]:
    """The implementation, the reason, and the C core module (None for pure Python)."""
    forced = environ.get("FTMAP_PURE_PYTHON", "")
    if forced not in ("", "0"):
        return "python", f"FTMAP_PURE_PYTHON={forced}", None
    version = ".".join(str(part) for part in version_info[:3])
    if python_implementation != "CPython":
        return "python", f"{python_implementation} {version} is not CPython", None
    if tuple(version_info[:2]) < MIN_VERSION:
        minimum = ".".join(map(str, MIN_VERSION))
        return "python", f"CPython {version} is older than {minimum}", None
    try:
        module = import_core()
    except Exception as error:  # any failure to import means: fall back, and say why
        return "python", _why_not_importable(error), None
    info = getattr(module, "build_info", {})
    build = "free-threaded build" if info.get("free_threaded") else "GIL build"
    extras = [f"{name} sanitizer" for name in [info.get("sanitizer")] if name]
    extras += ["test hooks"] if info.get("test_hooks") else []
    suffix = f", {', '.join(extras)}" if extras else ""
    return "c", f"ftmap._core imported (CPython {version}, {build}{suffix})", module


implementation: Implementation
implementation_reason: str
core: ModuleType | None
implementation, implementation_reason, core = decide(
    os.environ, tuple(sys.version_info[:3]), platform.python_implementation()
)

_core_for_variants: list[ModuleType | None] = []  # [module or None], filled on first use


def _any_core() -> ModuleType | None:
    """The C core if it can be imported at all, even when FTMAP_PURE_PYTHON forced Python."""
    if core is not None:
        return core
    if not _core_for_variants:
        module: ModuleType | None = None
        if platform.python_implementation() == "CPython" and sys.version_info[:2] >= MIN_VERSION:
            try:
                module = _import_core()
            except Exception:
                module = None
        _core_for_variants.append(module)
    return _core_for_variants[0]


def _pure(name: str) -> Any:
    try:
        module_name = PURE[name]
    except KeyError:
        raise KeyError(f"{name!r} has no implementations registered in ftmap._impl.PURE") from None
    return getattr(importlib.import_module(module_name), name)


def _c_variant(module: ModuleType | None, name: str) -> Any:
    """name's C variant given the C core module (None if absent), or None."""
    if module is None:
        return None
    if name in C_MODULES:
        found = getattr(importlib.import_module(C_MODULES[name]), name, None)
    else:
        found = getattr(module, name, None)
    if isinstance(found, type):
        _register_like(found, _pure(name))
    return found


def _register_like(c_class: type, pure_class: Any) -> None:
    """Make isinstance(m, collections.abc.MutableMapping) etc. hold for the C class exactly where
    it holds for the pure one (a C type cannot inherit from the ABCs; it is registered)."""
    for abc in (MutableMapping, Mapping, Collection, Iterable, Container, Sized):
        if isinstance(pure_class, type) and issubclass(pure_class, abc) and not issubclass(c_class, abc):
            abc.register(c_class)


def select(name: str) -> Any:
    """The implementation of name that ftmap exports: C when implementation == "c" and the C core
    defines it, else the pure-Python one."""
    pure = _pure(name)
    found = _c_variant(core, name)
    return pure if found is None else found


def implementation_of(name: str) -> Implementation:
    """Which implementation select(name) gives: "c" or "python"."""
    return "c" if _c_variant(core, name) is not None else "python"


def variants(name: str) -> dict[str, Any]:
    """{"python": the pure one, "c": the C one}; "c" only where the C core (importable even when
    FTMAP_PURE_PYTHON is set) defines name. For differential tests."""
    found: dict[str, Any] = {"python": _pure(name)}
    c_variant = _c_variant(_any_core(), name)
    if c_variant is not None:
        found["c"] = c_variant
    return found


def rebuild(name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
    """Unpickle helper: build name's variant selected in this process from args and kwargs."""
    return select(name)(*args, **(kwargs or {}))


def _construct(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)


def reduce(
    obj: object, name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """The __reduce__ value for obj, an instance of name's C or pure class (or of a subclass).

    The C and the pure class pickle as rebuild(name, ...): portable between implementations.
    A subclass pickles as itself, as it always did."""
    cls = type(obj)
    if any(cls is variant for variant in variants(name).values()):
        return (rebuild, (name, args) if not kwargs else (name, args, kwargs))
    if kwargs:
        return (_construct, (cls, args, kwargs))
    return (cls, args)


def describe() -> str:
    """One line for reports: the implementation, why, and which names are in C."""
    in_c = [name for name in PURE if implementation_of(name) == "c"]
    in_python = [name for name in PURE if name not in in_c]
    parts = [f"implementation {implementation} ({implementation_reason})"]
    if implementation == "c":
        parts.append(f"in C: {', '.join(in_c) or 'nothing yet'}")
        if in_python:
            parts.append(f"pure Python still: {', '.join(in_python)}")
    return "; ".join(parts)
