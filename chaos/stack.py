"""The campaign's own Kafka + Cassandra: a PrivateStack on ports and a state dir of its own
(neither the shared stack's 9092/9042 nor the fault tests' 29092/29042), so a broker kill or a
Cassandra pause never reaches anyone else's run.

The ports are below Linux's ephemeral range (32768-60999): while the broker is down, clients
reconnect in a loop, and a connect to a port of that range can be given the same port as its
own source and connect to itself (TCP simultaneous open); the restarted broker then found its
port taken ("Address already in use"; seen with 39092)."""

from __future__ import annotations

from scheduler.testing.stack import find_repo
from tests.support.faultstack import PrivateStack

MAKE_CHAOS_PORTS = 25000  # `make chaos`
CI_PORTS = 26000  # tests/e2e/test_chaos.py: a campaign by hand does not stop the CI one's stack


def chaos_stack(base: int = MAKE_CHAOS_PORTS) -> PrivateStack:
    """Kafka on base+92 (controller base+93), Cassandra on base+42 (storage base+0)."""
    suffix = "" if base == MAKE_CHAOS_PORTS else f"-{base}"
    return PrivateStack(
        kafka_port=base + 92,
        kafka_controller_port=base + 93,
        cassandra_port=base + 42,
        cassandra_storage_port=base,
        state_dir=find_repo() / ".local" / f"chaos-stack{suffix}",
    )
