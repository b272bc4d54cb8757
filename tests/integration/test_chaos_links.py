"""chaos.links.NodeLinks: a service process's proxies to the Cassandra nodes (and a broker's
link), hosted in a child process and driven over its pipe. Against local echo servers standing
in for two nodes (two loopback addresses, one port): the address map names a proxy per node,
bytes go through, delay() slows every node's link, cut() drops and refuses them all, restore()
and close() work."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from chaos.links import NodeLinks
from tests.support.echo import echo_server

pytestmark = [pytest.mark.integration]

NODES = ["127.0.0.1", "127.0.0.2"]


@pytest.fixture
def links() -> Iterator[NodeLinks]:
    first = echo_server(NODES[0], 0)
    port = first.getsockname()[1]
    second = echo_server(NODES[1], port)
    links = NodeLinks.cassandra(NODES, port)
    yield links
    links.close()
    first.close()
    second.close()


def port_of(links: NodeLinks, node: str) -> int:
    return links.ports[links.upstreams.index(node)]


def round_trip(port: int, data: bytes = b"ping") -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        assert conn.recv(100) == data
    return time.monotonic() - started


def refused(port: int) -> bool:
    """The proxy accepts and closes at once (unreachable): EOF or a reset, never an echo."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"x")
            return conn.recv(10) == b""
    except ConnectionResetError:
        return True


def test_each_node_gets_a_proxy_the_address_map_names(links: NodeLinks) -> None:
    mapping = json.loads(links.env["SCHEDULER_CASSANDRA_ADDRESS_MAP"])
    assert set(mapping) == set(NODES)
    assert len(set(links.ports)) == 2
    for node in NODES:
        assert mapping[node] == f"127.0.0.1:{port_of(links, node)}"
        assert round_trip(port_of(links, node)) < 1.0


def test_delay_slows_every_link_and_undelay_restores_them(links: NodeLinks) -> None:
    links.delay(0.5)
    for node in NODES:
        assert round_trip(port_of(links, node)) >= 0.5
    links.undelay()
    assert round_trip(port_of(links, NODES[1])) < 0.5


def test_cut_refuses_every_link_until_restored(links: NodeLinks) -> None:
    links.cut()
    for node in NODES:
        assert refused(port_of(links, node))
    links.restore()
    for node in NODES:
        assert round_trip(port_of(links, node)) < 1.0


def test_a_broker_link_listens_on_the_port_given() -> None:
    upstream = echo_server("127.0.0.1", 0)
    free = socket.create_server(("127.0.0.1", 0))
    listen = free.getsockname()[1]
    free.close()
    links = NodeLinks.broker(listen, upstream.getsockname()[1])
    try:
        assert links.ports == [listen]
        assert round_trip(listen) < 1.0
        links.cut()
        assert refused(listen)
    finally:
        links.close()
        upstream.close()


def test_close_ends_the_child_process(links: NodeLinks) -> None:
    links.close()
    assert links._process.returncode == 0
