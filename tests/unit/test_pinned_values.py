"""Values that must be the same in every process and every version, pinned to known values.

Comparing a function with itself in one process cannot tell a stable hash from Python's salted
`hash()` (the same within a process, different in the next): a replayed write would then land in
another Cassandra partition, a derived id would no longer match its idempotency key, a replayed
retry would move. So these are literal values, computed once; changing one is a data migration.
"""

from __future__ import annotations

import hashlib

import pytest

from scheduler.domain.buckets import shard_of
from scheduler.domain.idempotency import fingerprint
from scheduler.domain.ids import derived_message_id, is_message_id, occurrence_message_id
from scheduler_releaser.dispatcher.verdict import jitter_draw

pytestmark = pytest.mark.unit

IDS = ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "01J00000000000000000000000", "01KTZZZZZZZZZZZZZZZZZZZZZZ"]


def test_shards_are_pinned() -> None:
    # blake2b-64 of the id, big-endian, modulo the count
    assert [shard_of(m, 8) for m in IDS] == [5, 2, 4]
    assert [shard_of(m, 3) for m in IDS] == [2, 2, 1]
    assert [shard_of(m, 1024) for m in IDS] == [357, 554, 124]
    assert [shard_of(m, 1) for m in IDS] == [0, 0, 0]


def test_derived_message_ids_are_pinned() -> None:
    assert derived_message_id("app-1", "order-42") == "09NNVQE320WAY29S1PYK3CKX0W"
    assert derived_message_id("app-2", "order-42") == "0S1D0KPTQBQEM6FTMTJ69NB3HY"
    assert derived_message_id("", "") == "0VHM1EEFZCVTK2EAAH76QDW0MB"
    # the separator keeps ("ab", "c") and ("a", "bc") apart
    assert derived_message_id("ab", "c") != derived_message_id("a", "bc")
    assert all(is_message_id(derived_message_id(a, "k")) for a in ("", "x", "app-1"))


def test_occurrence_message_ids_are_pinned() -> None:
    # ULID: 48-bit occurrence instant, then BLAKE2b-80 (person "pit-occurrence") of
    # len(app) as 4 bytes big-endian + app + schedule. Changing it duplicates every occurrence
    # already created (a new id for the same occurrence).
    t = 1_830_000_000_000
    assert occurrence_message_id("app-1", "sched-1", t) == "01N8A7ZZ002ER18SG1AB08YFWY"
    assert occurrence_message_id("app-1", "sched-2", t) == "01N8A7ZZ00Z6CRHFCQC2M4XHHG"
    assert occurrence_message_id("app-2", "sched-1", t) == "01N8A7ZZ009J59821E7NHY0B4K"
    # the next minute: another timestamp, the same schedule part
    assert occurrence_message_id("app-1", "sched-1", t + 60_000) == "01N8A81SK02ER18SG1AB08YFWY"
    assert occurrence_message_id("", "", 0) == "0000000000KKCKXT07ESBX0F70"
    assert occurrence_message_id("ab", "c", t) != occurrence_message_id("a", "bc", t)


def test_retry_jitter_draws_are_pinned() -> None:
    # blake2b-64 of "<message id>:<attempt>" over 2**64: a replay retries at the same instant
    assert jitter_draw(IDS[0], 1) == 0.7776115557643758
    assert jitter_draw(IDS[0], 2) == 0.014253668678045001
    assert jitter_draw(IDS[1], 1) == 0.9585657810766383


def test_request_fingerprints_are_pinned() -> None:
    # SHA-256 of the canonical JSON [payload with sorted keys and no spaces, sendAt, kafka key]
    canonical = '["{\\"a\\":1,\\"b\\":[1,2]}",1767225600000,null]'
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert expected == "719780ad22f4c2027dd38933c84e2bf9cd191e356f9e6d886ca9113475703f48"
    assert fingerprint('{"b": [1, 2], "a": 1}', 1_767_225_600_000, None) == expected
    assert fingerprint('{"a":1,"b":[1,2]}', 1_767_225_600_000, None) == expected
    assert fingerprint('{"a":1,"b":[1,2]}', 1_767_225_600_000, "") != expected
    assert fingerprint('{"a":1,"b":[1,2]}', 1_767_225_600_001, None) != expected
