"""CassandraSettings.address_map: the driver reaches a node at the host:port the map gives,
for the contact point and for every node the cluster announces, so a proxy per node carries
all of a process's Cassandra traffic (the fault campaign's cluster topology relies on it).
Proved by cutting the proxy: a query through the mapped session then fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cassandra.cluster import NoHostAvailable

from scheduler.settings import CassandraSettings
from scheduler.store.cassandra import connect
from scheduler.testing.proxy import CuttableProxy
from scheduler.testing.servers import Servers

pytestmark = [pytest.mark.integration]


@pytest.fixture
def proxy(servers: Servers) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(servers.cassandra_contact_points[0], servers.cassandra_port)
    yield proxy
    proxy.close()


def test_every_connection_goes_to_the_mapped_endpoint(
    servers: Servers, proxy: CuttableProxy
) -> None:
    node = servers.cassandra_contact_points[0]
    settings = CassandraSettings(
        contact_points=[node],
        port=servers.cassandra_port,
        request_timeout_s=2.0,
        address_map={node: f"127.0.0.1:{proxy.port}"},
    )
    cluster, session = connect(settings)
    try:
        endpoints = {(h.endpoint.address, h.endpoint.port) for h in cluster.metadata.all_hosts()}
        assert endpoints == {("127.0.0.1", proxy.port)}
        assert session.execute("SELECT release_version FROM system.local").one() is not None
        proxy.cut()  # the only way to the node: every query must now fail
        with pytest.raises(NoHostAvailable):
            session.execute("SELECT release_version FROM system.local")
        proxy.restore()
    finally:
        cluster.shutdown()
