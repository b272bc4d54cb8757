"""Bad input goes to the rejected topic with a reason and never blocks the records behind it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.codec import RecordCodec
from scheduler.records import DueMessage
from scheduler_bucketer.intake import Accepted, Rejection

from .harness import REQUESTS, Harness

pytestmark = pytest.mark.unit


def test_poison_records_are_rejected_and_the_valid_ones_behind_them_processed() -> None:
    h = Harness()
    now = h.clock.now_ms()
    wrong_schema = RecordCodec(DueMessage).encode(
        DueMessage(
            message_id="x",
            app_id="app-a",
            generation=0,
            attempt=1,
            due_ms=now,
            send_at_ms=now,
            created_ms=now,
            payload_json="{}",
        )
    )
    poison = [
        (h.raw(b"\x00garbage bytes"), "unknown_schema"),  # Confluent magic, unknown id
        (h.raw(b"not avro at all"), "not_avro"),
        (h.raw(b"\xc3\x01\x01\x02"), "malformed"),  # truncated single-object header
        (h.raw(wrong_schema), "wrong_schema"),
        (h.raw(None), "empty"),
        (h.record(h.request(now + 1_000, message_id="not-a-ulid")), "invalid_message_id"),
        (h.record(h.request(now + 1_000, payload_json="{oops")), "invalid_payload"),
        (h.record(h.request(1_700_000_000)), "invalid_sendAt"),  # seconds, not ms
        (h.record(h.request(now + 1_000, app_id="nobody")), "unknown_app"),
        (h.record(h.request(now + 1_000, app_id="app-gone")), "app_deleted"),
    ]
    valid_near, valid_far = h.request(now + 1_000), h.request(now + 86_400_000)
    batch = [record for record, _ in poison[:5]]
    batch.append(h.record(valid_near))
    batch += [record for record, _ in poison[5:]]
    batch.append(h.record(valid_far))
    h.process(*batch)

    rejected = h.rejected()
    assert [r.reason for r in rejected] == [reason for _, reason in poison]
    for rejection, (record, _) in zip(rejected, poison, strict=True):
        assert rejection.original == (record.value or b"")
        assert (rejection.source_topic, rejection.source_partition, rejection.source_offset) == (
            record.topic,
            record.partition,
            record.offset,
        )
        assert rejection.detail
    assert rejected[-1].app_id == "app-gone" and rejected[-1].message_id is not None
    assert [due.message_id for _, due in h.direct()] == [valid_near.message_id]
    assert [m.message_id for m in h.stored()] == [valid_far.message_id]
    assert h.metric("scheduler_bucketer_rejected_total", reason="unknown_app") == 1
    assert h.metric("scheduler_bucketer_consumed_total", kind="requests") == len(batch)


def test_far_beyond_the_horizon_is_rejected() -> None:
    h = Harness()
    now = h.clock.now_ms()
    h.process(h.record(h.request(now + 101 * 366 * 86_400_000)))
    [rejection] = h.rejected()
    assert rejection.reason == "invalid_sendAt" and "future" in rejection.detail
    assert h.stored() == [] and h.direct() == []


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200), mutate_at=st.integers(min_value=0, max_value=400))
def test_no_byte_string_raises_out_of_intake(body: bytes, mutate_at: int) -> None:
    """Random bodies behind a valid header, and corrupted valid records: always a verdict."""
    h = Harness()
    valid = REQUESTS.encode(h.request(h.clock.now_ms() + 60_000))
    corrupted = bytearray(valid)
    corrupted[mutate_at % len(valid)] ^= 0xFF
    for value in (valid[:10] + body, bytes(corrupted), valid[: mutate_at % len(valid)]):
        verdict = h.processor._intake.admit(h.raw(value))
        assert isinstance(verdict, Accepted | Rejection)
