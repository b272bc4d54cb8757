"""CassandraSettings.address_map and the driver's endpoint factory built from it: announced
nodes and contact points in the map are reached at the mapped host:port, others as announced."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from cassandra.policies import IdentityTranslator

from scheduler.settings import CassandraSettings
from scheduler.store.cassandra import MappedEndPointFactory

pytestmark = pytest.mark.unit


def peer_row(address: str, port: int | None) -> dict[str, object]:
    """A system.peers_v2 row as the driver reads it (only what endpoint creation looks at)."""
    return {"native_address": address, "native_port": port, "host_id": uuid.uuid4()}


def factory_of(address_map: dict[str, str], port: int) -> MappedEndPointFactory:
    factory = MappedEndPointFactory(address_map, port)
    factory.configure(SimpleNamespace(address_translator=IdentityTranslator()))
    return factory


def test_a_mapped_peer_is_reached_at_the_mapped_host_and_port() -> None:
    factory = factory_of({"127.0.0.2": "127.0.0.1:41002"}, 19042)
    endpoint = factory.create(peer_row("127.0.0.2", 19042))
    assert (endpoint.address, endpoint.port) == ("127.0.0.1", 41002)


def test_an_unmapped_peer_is_reached_as_announced() -> None:
    factory = factory_of({"127.0.0.2": "127.0.0.1:41002"}, 19042)
    endpoint = factory.create(peer_row("127.0.0.3", 19042))
    assert (endpoint.address, endpoint.port) == ("127.0.0.3", 19042)


def test_contact_points_are_mapped_too() -> None:
    factory = MappedEndPointFactory({"10.0.0.1": "proxy.local:9142"}, 9042)
    assert (factory.mapped("10.0.0.1", 9042).address, factory.mapped("10.0.0.1", 9042).port) == (
        "proxy.local",
        9142,
    )
    assert factory.mapped("10.0.0.9", 9042).port == 9042


@pytest.mark.parametrize("target", ["10.0.0.1", "10.0.0.1:", ":9042", "10.0.0.1:99999", "h:x"])
def test_an_address_map_target_must_be_host_and_port(target: str) -> None:
    with pytest.raises(ValueError, match="expected host:port"):
        CassandraSettings(address_map={"10.0.0.1": target})


def test_the_map_is_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_CASSANDRA_ADDRESS_MAP", '{"127.0.0.2": "127.0.0.1:41002"}')
    assert CassandraSettings().address_map == {"127.0.0.2": "127.0.0.1:41002"}
