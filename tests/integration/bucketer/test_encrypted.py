"""Kafka-native requests stored by a bucketer with payload encryption on: the record and the
bucket row hold ciphertext, and the stores read the payload back."""

from __future__ import annotations

import json

import pytest

from scheduler.encryption import ColumnCipher, Keyring, is_sealed, new_key
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.cassandra_messages import CassandraMessageStore

from .support import CLOCK, Stack, wait_until

pytestmark = pytest.mark.integration

CIPHER = ColumnCipher(
    Keyring.parse(json.dumps({"primary": "k1", "keys": {"k1": new_key()}})),
    secrets=True,
    payloads=True,
)


def test_a_kafka_native_payload_is_stored_encrypted(stack: Stack) -> None:
    request = stack.request(CLOCK.now_ms() + 3_600_000)
    stack.produce_requests([request])
    with stack.bucketer_thread(cipher=CIPHER):
        wait_until(lambda: stack.stored_ids() == [request.message_id], 60, "the stored row")
        wait_until(stack.committed_everything, 30, "offsets committed")

    [row] = stack.session.execute("SELECT bucket_ms, shard, payload_json FROM due_by_bucket")
    record = stack.session.execute(
        "SELECT payload_json FROM messages WHERE app_id = %s AND message_id = %s",
        (request.app_id, request.message_id),
    ).one()
    assert is_sealed(row.payload_json) and is_sealed(record.payload_json)
    assert "world" not in row.payload_json + record.payload_json

    view = CassandraMessageStore(stack.session, CIPHER).get(request.app_id, request.message_id)
    assert view is not None and view.content.payload_json == request.payload_json
    buckets = CassandraBucketStore(stack.session, cipher=CIPHER)
    [stored] = buckets.read(row.bucket_ms, request.app_id, row.shard)
    assert stored.payload_json == request.payload_json
