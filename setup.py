"""Builds the optional C core, ftmap._core, from csrc/*.c. pyproject.toml holds the metadata.

- Only CPython 3.13 and newer (free-threaded and default builds) get the extension. Anywhere
  else, or when it fails to compile (no compiler, missing headers), the install still succeeds
  with the pure-Python maps, and the reason is recorded in ftmap/_core_build_failure<ABI>.txt,
  where ftmap._impl finds it and reports it (ftmap.implementation_reason).
- The wheel is never tagged pure (py3-none-any), even when the C core was skipped: a pure wheel
  built on 3.11 must not be reused from pip's cache by a 3.13 install, which should compile.

Environment, for ftmap's own builds (the Makefile sets them; a user's pip install sets none):
  FTMAP_DEV_BUILD=1     -Wall -Wextra -Werror (and more), the test hooks (FTMAP_TEST_HOOKS), and a
                        failed build fails the install instead of falling back.
  FTMAP_SANITIZE=thread -fsanitize=thread -g -O1 (make tsan); implies nothing else.
  FTMAP_NO_EXTENSION=1  skip the C core (a pure-Python install on any interpreter).
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
import traceback
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
# One record per interpreter ABI (".cpython-313t-x86_64-linux-gnu"): several interpreters share
# src/ftmap in editable installs, and one's reason must never be reported by another.
FAILURE_FILE = (
    "_core_build_failure" + os.path.splitext(sysconfig.get_config_var("EXT_SUFFIX") or ".so")[0] + ".txt"
)
STRICT_WARNINGS = [
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wshadow",
    "-Wstrict-prototypes",
    "-Wmissing-prototypes",
    "-Wno-missing-field-initializers",  # PyModuleDef_HEAD_INIT and {NULL} sentinels
    "-Wno-cast-function-type",  # METH_FASTCALL functions through _PyCFunction_CAST
]


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _skip_reason() -> str | None:
    """Why this interpreter gets no C core, or None if it should build one."""
    if _flag("FTMAP_NO_EXTENSION"):
        return "FTMAP_NO_EXTENSION=1 was set at install time"
    if platform.python_implementation() != "CPython":
        return f"{platform.python_implementation()} is not CPython"
    if sys.version_info < (3, 13):
        return f"CPython {platform.python_version()} is older than 3.13"
    return None


def _extension() -> Extension:
    macros: list[tuple[str, str | None]] = []
    compile_args: list[str] = []
    link_args: list[str] = []
    if _flag("FTMAP_DEV_BUILD"):
        compile_args += STRICT_WARNINGS
        macros.append(("FTMAP_TEST_HOOKS", "1"))
    sanitizer = os.environ.get("FTMAP_SANITIZE", "")
    if sanitizer:
        if sanitizer != "thread":
            raise SystemExit(f"FTMAP_SANITIZE={sanitizer!r}: only 'thread' is supported")
        compile_args += ["-fsanitize=thread", "-g", "-O1", "-fno-omit-frame-pointer"]
        link_args += ["-fsanitize=thread"]
        macros.append(("FTMAP_SANITIZER", '"thread"'))
    sources = sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").glob("*.c"))
    return Extension(
        "ftmap._core",
        sources=sources,
        include_dirs=["csrc"],
        depends=sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").glob("*.h")),
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        # Optional for users; required for ftmap's own builds (a broken C core must fail CI).
        optional=not _flag("FTMAP_DEV_BUILD"),
    )


class BuildExt(build_ext):
    """build_ext that records why the optional C core was not built, and clears the record when it was."""

    def finalize_options(self) -> None:
        super().finalize_options()
        # One object directory per flavour: distutils recompiles only when a source is newer than
        # its object, so a release build must never link objects compiled with other flags.
        flavour = os.environ.get("FTMAP_SANITIZE", "") or ("dev" if _flag("FTMAP_DEV_BUILD") else "release")
        self.build_temp = os.path.join(self.build_temp, flavour)

    def _failure_paths(self) -> list[Path]:
        # The package directory in the build tree, and (for editable installs) in the source tree.
        paths = [Path(self.build_lib) / "ftmap" / FAILURE_FILE]
        if self.inplace or getattr(self, "editable_mode", False):
            paths.append(HERE / "src" / "ftmap" / FAILURE_FILE)
        return paths

    def _record(self, reason: str | None) -> None:
        for path in self._failure_paths():
            if reason is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(reason + "\n", encoding="utf-8")

    def run(self) -> None:
        if not self.extensions:
            self._record(_skip_reason())
            return
        try:
            super().run()
        except Exception as error:
            if not all(ext.optional for ext in self.extensions):
                raise
            self._fail(error)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:
            if not ext.optional:
                raise
            self._fail(error)
        else:
            self._record(None)

    def _fail(self, error: BaseException) -> None:
        summary = "".join(traceback.format_exception_only(type(error), error)).strip()
        if len(summary) > 300:
            summary = summary[:297] + "..."
        reason = f"the C core failed to build at install time ({summary}); see the install log"
        self.warn(f"ftmap: building the optional C core failed; installing pure Python only: {summary}")
        self._record(reason)

    def get_outputs(self) -> list[str]:
        # Only what exists: a failed optional extension must not be listed for the wheel.
        return [path for path in super().get_outputs() if os.path.exists(path)]


class PlatformDistribution(Distribution):
    def has_ext_modules(self) -> bool:
        return True


skip = _skip_reason()
setup(
    ext_modules=[] if skip else [_extension()],
    cmdclass={"build_ext": BuildExt},
    distclass=PlatformDistribution,
)
