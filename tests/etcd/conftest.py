"""Fixtures that start real etcd servers (ftmap.testing.etcd): never a mock.

Every test here is marked ``etcd`` (registered below, since it starts servers:
a run may deselect them with ``-m "not etcd"``). If no etcd binary is found
the fixtures fail, with how to install one: tests that need etcd are never
skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from ftmap.testing.etcd import EtcdCluster, EtcdNotFoundError


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/etcd/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.etcd)


def start_cluster(size: int, **options: object) -> EtcdCluster:
    try:
        return EtcdCluster(size, **options).start()  # type: ignore[arg-type]
    except EtcdNotFoundError as error:
        pytest.fail(f"etcd is needed for this test and was not found: {error}", pytrace=False)


@pytest.fixture(scope="module")
def etcd1() -> Iterator[EtcdCluster]:
    """One etcd member, shared by a module's tests (each uses its own prefix)."""
    cluster = start_cluster(1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def etcd3() -> Iterator[EtcdCluster]:
    """Three etcd members, shared by a module's tests; a test that kills one restarts it."""
    cluster = start_cluster(3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own, so tests sharing a cluster never see each other's keys."""
    return "/t/" + re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name) + "/"
