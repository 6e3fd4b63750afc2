"""pytest plugin (registered through the ``pytest11`` entry point).

Fails any test during which an UnsafeMap detected a race in any thread, even
when the ConcurrentMapError was raised in a worker thread and lost there.
A test that provokes races on purpose says so with
``@pytest.mark.ftmap_races_expected``.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from ._unsafe import race_log

MARKER = "ftmap_races_expected"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: the test provokes UnsafeMap race reports on purpose; do not fail it for them"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    before = race_log.total
    result = yield
    detected = race_log.total - before
    if detected and item.get_closest_marker(MARKER) is None:
        latest = "\n".join(f"  {error}" for error in list(race_log.recent)[-min(detected, 5) :])
        pytest.fail(
            f"UnsafeMap detected {detected} concurrent map misuse(s) during this test:\n{latest}",
            pytrace=False,
        )
    return result
