"""Session-wide guards.

On a free-threaded build the session fails at once if the GIL is on: an
extension module that does not declare free-threading support turns it back
on silently at import, and every stress test after that would pass without
testing anything. The check runs at start-up, after collection (imports of
test modules) and after every test, so the message can name the culprit.

The implementation under test is never silent either: the report header names it and why
(ftmap.implementation, ftmap.implementation_reason), and FTMAP_EXPECT_IMPLEMENTATION=c or
=python (set by the Makefile) fails the session at start-up if the other one was loaded, so a
broken C build fails CI instead of testing pure Python twice. FTMAP_EXPECT_TEST_HOOKS=1 also
requires a C core built with the test hooks (FTMAP_DEV_BUILD=1).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import warnings

import pytest

from ftmap import _impl

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
_gil_warnings: list[str] = []


def gil_enabled() -> bool:
    return FREE_THREADED and sys._is_gil_enabled()


def _record_gil_warnings() -> None:
    # CPython warns "The global interpreter lock (GIL) has been enabled to load module X";
    # keep a copy of that text, since pytest may capture the warning itself.
    original = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]  # noqa: PLR0917
        if "global interpreter lock" in str(message):
            _gil_warnings.append(str(message))
        original(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def _why_gil_is_on(where: str) -> str:
    reasons = []
    if getattr(sys.flags, "gil", None) == 1:
        reasons.append("it was forced on with PYTHON_GIL=1 or -X gil=1")
    reasons.extend(_gil_warnings)
    if not reasons:
        extensions = sorted(
            name
            for name, module in list(sys.modules.items())
            if str(getattr(module, "__file__", "") or "").endswith((".so", ".pyd"))
            and "site-packages" in str(getattr(module, "__file__", ""))
        )
        reasons.append(
            "an extension module without free-threading support was imported; third-party "
            f"extension modules loaded: {', '.join(extensions) or 'none found'}"
        )
    return f"the GIL is enabled on a free-threaded build ({where}): " + "; ".join(reasons)


def _implementation_mismatch() -> str | None:
    expected = os.environ.get("FTMAP_EXPECT_IMPLEMENTATION", "")
    if expected and expected != _impl.implementation:
        return (
            f"FTMAP_EXPECT_IMPLEMENTATION={expected} but ftmap.implementation is "
            f"{_impl.implementation!r}: {_impl.implementation_reason}"
        )
    if os.environ.get("FTMAP_EXPECT_TEST_HOOKS", "") not in ("", "0"):
        info = getattr(_impl.core, "build_info", {})
        if not info.get("test_hooks"):
            return (
                "FTMAP_EXPECT_TEST_HOOKS=1 but the C core in use was not built with the test hooks "
                f"(FTMAP_DEV_BUILD=1): {_impl.implementation_reason}"
            )
    return None


def pytest_configure(config: pytest.Config) -> None:
    _record_gil_warnings()
    if gil_enabled():
        pytest.exit(_why_gil_is_on("at start-up"), returncode=3)
    mismatch = _implementation_mismatch()
    if mismatch:
        pytest.exit(mismatch, returncode=3)


def pytest_collection_finish(session: pytest.Session) -> None:
    if gil_enabled():
        pytest.exit(_why_gil_is_on("after importing the test modules"), returncode=3)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    if gil_enabled():
        pytest.exit(_why_gil_is_on(f"during {item.nodeid}"), returncode=3)


def pytest_report_header() -> list[str]:
    build = "free-threaded build" if FREE_THREADED else "GIL build"
    return [
        f"ftmap: Python {sys.version.split()[0]}, {build}, GIL {'on' if gil_enabled() else 'off'}",
        f"ftmap: {_impl.describe()}",
    ]
