"""Fixtures shared by the whole suite."""

from collections.abc import Iterator

import pytest

from scheduler.testing.servers import Servers, resolve_servers

# Per-test topics, keyspaces and shrunk horizons (tests/fixtures.py).
pytest_plugins = ["tests.fixtures"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`cluster` tests start 3 Kafka + 3 Cassandra JVMs (minutes on 2 cores, ~4 GiB): only when
    the marker expression names them (`make test-cluster`: -m cluster). Elsewhere they are
    deselected, which pytest reports ("N deselected"), never skipped."""
    if "cluster" in (config.getoption("markexpr") or ""):
        return
    keep = [item for item in items if item.get_closest_marker("cluster") is None]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """Kafka and Cassandra for this session: from the environment, testcontainers or the local
    stack (ARCHITECTURE.md, decision 12)."""
    resolved = resolve_servers()
    yield resolved
    resolved.close()
