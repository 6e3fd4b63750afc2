from __future__ import annotations

import pytest

from tests.conftest import FREE_THREADED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.stress)
        if not FREE_THREADED:
            item.add_marker(pytest.mark.skip(reason="stress tests need the free-threaded build"))
