"""The launcher's ports: handed out below the kernel's ephemeral range, where no outgoing
connection's local port can take one before the service binds it, and never twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.testing.processes import free_port

pytestmark = pytest.mark.unit


def ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_ports_are_outside_the_ephemeral_range_and_never_handed_out_twice() -> None:
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert all(not low <= p <= high for p in ports), sorted(ports)
    assert len(set(ports)) == len(ports)
