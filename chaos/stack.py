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


def chaos_stack() -> PrivateStack:
    return PrivateStack(
        kafka_port=25092,
        kafka_controller_port=25093,
        cassandra_port=25042,
        cassandra_storage_port=25000,
        state_dir=find_repo() / ".local" / "chaos-stack",
    )
