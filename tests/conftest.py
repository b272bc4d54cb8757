"""Fixtures shared by the whole suite."""

from collections.abc import Iterator

import pytest

from scheduler.testing.servers import Servers, resolve_servers

# Per-test topics, keyspaces and shrunk horizons (tests/fixtures.py).
pytest_plugins = ["tests.fixtures"]


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """Kafka and Cassandra for this session: from the environment, testcontainers or the local
    stack (ARCHITECTURE.md, decision 12)."""
    resolved = resolve_servers()
    yield resolved
    resolved.close()
