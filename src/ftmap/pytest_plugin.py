"""pytest plugin (registered through the ``pytest11`` entry point).

- Fails any test during which an UnsafeMap detected a race in any thread, even
  when the ConcurrentMapError was raised in a worker thread and lost there.
  A test that provokes races on purpose says so with
  ``@pytest.mark.ftmap_races_expected``.
- The ``ftmap_seed`` fixture gives a test a seed for ``ftmap.testing.run_threads``
  (random, or ``--ftmap-seed N``); a failing test's report shows it and the
  option that replays it.
"""

from __future__ import annotations

import random
from collections.abc import Generator

import pytest

from ._unsafe import race_log

MARKER = "ftmap_races_expected"
_SEED = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("ftmap").addoption(
        "--ftmap-seed", type=int, default=None, help="seed for the ftmap_seed fixture (replays a failed run)"
    )


@pytest.fixture
def ftmap_seed(request: pytest.FixtureRequest) -> int:
    """A seed for run_threads: ``--ftmap-seed`` if given, else random; reported when the test fails."""
    chosen = request.config.getoption("--ftmap-seed")
    seed = random.randrange(2**32) if chosen is None else int(chosen)
    request.node.stash[_SEED] = seed
    return seed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    report = yield
    seed = item.stash.get(_SEED, None)
    if seed is not None and getattr(report, "failed", False):
        report.sections.append(("ftmap", f"ftmap_seed was {seed}: replay with --ftmap-seed={seed}"))  # type: ignore[attr-defined]
    return report


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
