"""Reading a batch without waiting out its timeout.

librdkafka's `consume(num_messages, timeout)` returns only once `num_messages` records are in
or `timeout` is over, however early the first record came: a record produced 0.1 s into
`consume(500, 2.0)` was handed out at 2.0 s (measured on the local broker, confluent-kafka
2.16). A loop that waits for work with it adds up to its timeout to every quiet arrival.
"""

from __future__ import annotations

from typing import Any, Protocol


class Consuming(Protocol):
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]: ...


def consume_available(consumer: Consuming, limit: int, timeout_s: float) -> list[Any]:
    """Up to `limit` records: waits at most `timeout_s` for the first one, then takes what else
    is already fetched. Under load the queue holds plenty and batches fill at once; when quiet,
    the first record is handed out when it comes."""
    first = consumer.consume(1, timeout_s)
    if not first or limit <= 1:
        return first
    return first + consumer.consume(limit - 1, 0)
