"""Session-wide guards.

On a free-threaded build the session fails at once if the GIL is on: an
extension module that does not declare free-threading support turns it back
on silently at import, and every stress test after that would pass without
testing anything. The check runs at start-up, after collection (imports of
test modules) and after every test, so the message can name the culprit.
"""

from __future__ import annotations

import sys
import sysconfig
import warnings

import pytest

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


def pytest_configure(config: pytest.Config) -> None:
    _record_gil_warnings()
    if gil_enabled():
        pytest.exit(_why_gil_is_on("at start-up"), returncode=3)


def pytest_collection_finish(session: pytest.Session) -> None:
    if gil_enabled():
        pytest.exit(_why_gil_is_on("after importing the test modules"), returncode=3)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    if gil_enabled():
        pytest.exit(_why_gil_is_on(f"during {item.nodeid}"), returncode=3)


def pytest_report_header() -> str:
    build = "free-threaded build" if FREE_THREADED else "GIL build"
    return f"ftmap: Python {sys.version.split()[0]}, {build}, GIL {'on' if gil_enabled() else 'off'}"
