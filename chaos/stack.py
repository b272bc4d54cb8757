"""The campaign's own Kafka + Cassandra: a PrivateStack on ports and a state dir of its own
(neither the shared stack's 9092/9042 nor the fault tests' 29092/29042), so a broker kill or a
Cassandra pause never reaches anyone else's run."""

from __future__ import annotations

from scheduler.testing.stack import find_repo
from tests.support.faultstack import PrivateStack


def chaos_stack() -> PrivateStack:
    return PrivateStack(
        kafka_port=39092,
        kafka_controller_port=39093,
        cassandra_port=39042,
        cassandra_storage_port=37000,
        state_dir=find_repo() / ".local" / "chaos-stack",
    )
