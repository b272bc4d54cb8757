import pytest

from scheduler_releaser.dispatcher.runtime import TransactionWatch

pytestmark = pytest.mark.unit


def test_a_stuck_transaction_stops_the_heartbeat_until_it_finishes() -> None:
    watch = TransactionWatch(stuck_ms=60_000)
    assert watch.healthy(0)  # nothing in flight
    watch.started(1_000)
    assert watch.healthy(60_999)
    assert not watch.healthy(61_000)
    assert not watch.healthy(90_000)
    watch.finished()
    assert watch.healthy(90_001)
    watch.started(100_000)  # a later, quick transaction is fine again
    assert watch.healthy(100_500)
