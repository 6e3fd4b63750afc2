"""ftmap._core as a module: GIL stays off, imports in any order, subinterpreters, build info."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from ftmap import _impl

core = _impl.core
pytestmark = pytest.mark.skipif(core is None, reason=f"no C core: {_impl.implementation_reason}")
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env: str) -> str:
    """Run code in a fresh interpreter (no pytest, no plugins) and return its stdout."""
    import os  # noqa: PLC0415

    done = subprocess.run(
        [sys.executable, "-X", "warn_default_encoding", "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "imports",
    [
        "import ftmap._core",
        "import ftmap._errors, ftmap._markers; import ftmap._core",
        "import ftmap",
        "from ftmap import _core; import ftmap",
    ],
)
def test_importing_the_core_leaves_the_gil_off_in_any_import_order(imports: str) -> None:
    out = run_python(
        f"""
        import sys, warnings
        warnings.simplefilter("error")  # "The global interpreter lock (GIL) has been enabled ..."
        {imports}
        import ftmap
        print(ftmap.implementation, getattr(sys, "_is_gil_enabled", lambda: True)())
        """
    )
    assert out.split() == ["c", str(not FREE_THREADED)]


def test_the_core_uses_the_error_classes_and_markers_of_ftmap() -> None:
    # The module state holds ftmap._errors' classes; exercising them from C is the map types' job,
    # but the same module objects must be the ones imported (no second copy of ftmap._errors).
    out = run_python(
        """
        import sys
        import ftmap._core
        import ftmap._errors
        print(sys.modules["ftmap._errors"] is ftmap._errors, "ftmap" in sys.modules)
        """
    )
    assert out.split() == ["True", "True"]


def test_the_core_imports_in_an_isolated_subinterpreter() -> None:
    # Py_MOD_PER_INTERPRETER_GIL_SUPPORTED: per-interpreter state, heap types, no static state.
    pytest.importorskip("_interpreters")
    inner = "\n".join(
        [
            "import sys",
            f"sys.path[:0] = {sys.path!r}",
            "import ftmap",
            "from ftmap import _core",
            "assert ftmap.implementation == 'c', ftmap.implementation_reason",
            "assert _core.fnv1a_32(b'foobar') == 0xBF9CF968",
            "assert _core._PublishedRef(1).load() == 1",
        ]
    )
    out = run_python(
        f"""
        import _interpreters
        interp = _interpreters.create()
        failure = _interpreters.exec(interp, {inner!r})
        _interpreters.destroy(interp)
        import ftmap._core
        print(failure, ftmap._core.fnv1a_32(b"a") == 0xE40C292C)
        """
    )
    assert out.split() == ["None", "True"], out


def test_build_info_describes_the_build() -> None:
    info = core.build_info
    assert set(info) == {"free_threaded", "test_hooks", "sanitizer"}
    assert info["free_threaded"] is FREE_THREADED
    assert info["sanitizer"] in ("", "thread")
    assert ("test hooks" in _impl.implementation_reason) is info["test_hooks"]


def test_module_level_names() -> None:
    assert core.SHARD_BITS_MAX == 20
    for name in ("fnv1_32", "fnv1a_32", "fnv1a_64", "shard_of", "_PublishedRef", "_Payload"):
        assert hasattr(core, name), name
    assert core.__name__ == "ftmap._core" and "C core" in (core.__doc__ or "")
