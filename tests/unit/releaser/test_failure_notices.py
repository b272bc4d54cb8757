"""The failure notifier's core with fakes and a ManualClock: a signed notice per failed message,
retries with backoff and their bounds, one app's dead destination never delaying another's,
skipped apps, and offsets that never pass an unfinished notice."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace

import pytest
from confluent_kafka import KafkaError
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.encryption import UnreadableValue
from scheduler_releaser.dispatcher.rest import (
    HEADER_ATTEMPT,
    HEADER_DUE,
    HEADER_MESSAGE_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
)
from scheduler_releaser.dispatcher.signing import verify
from scheduler_releaser.failures.notice import (
    EVENT_FAILED,
    HEADER_EVENT,
    notice_body,
    same_origin,
)
from scheduler_releaser.failures.offsets import NoticeOffsets

from .failure_harness import (
    DLQ,
    HOOK,
    SETTINGS,
    build,
    kafka_failure_app,
    rest_failure_app,
)
from .harness import REST_APP

pytestmark = pytest.mark.unit

OTHER_DLQ = (DLQ[0], 1)


def test_a_notice_per_failed_message_signed_as_deliveries_are() -> None:
    async def scenario() -> None:
        n = build(rest_failure_app("app-a"))
        letters = [n.letter("app-a", i) for i in range(3)]
        for letter in letters:
            n.add(letter)
        await n.run()
        posted = n.http.to(HOOK)
        assert [p.headers[HEADER_MESSAGE_ID] for p in posted] == [
            letter.message_id for letter in letters
        ]
        first, letter = posted[0], letters[0]
        assert first.json() == {
            "messageId": letter.message_id,
            "appId": "app-a",
            "generation": 0,
            "attempts": 5,
            "dueAt": "2025-12-31T23:59:00.000Z",
            "failedAt": "2026-01-01T00:00:00.000Z",
            "lastError": "http 500: boom",
            "lastHttpStatus": 500,
            "bodyExcerpt": "boom",
            "payload": {"orderId": 42, "note": "café"},
        }
        h = first.headers
        assert h["Content-Type"] == "application/json"
        assert h[HEADER_EVENT] == EVENT_FAILED == "message.failed"
        assert h[HEADER_DUE] == "2025-12-31T23:59:00.000Z"
        assert h[HEADER_ATTEMPT] == "1"
        assert h[HEADER_TIMESTAMP] == str(n.clock.now_ms())
        assert verify("s3cret", int(h[HEADER_TIMESTAMP]), first.body, h[HEADER_SIGNATURE])
        assert not verify("other", int(h[HEADER_TIMESTAMP]), first.body, h[HEADER_SIGNATURE])
        assert n.sent("REST") == 3
        # every notice accepted: the offsets may pass all three
        assert n.notifier.offsets.commits() == {DLQ: 3}
        assert n.notifier.pending == 0

    asyncio.run(scenario())


def test_the_payload_is_spliced_in_as_is_and_nulls_stay_null() -> None:
    n = build()
    letter = n.letter("app-a", payload_json="[1, 2]", last_http_status=None, body_excerpt=None)
    body = json.loads(notice_body(letter))
    assert body["payload"] == [1, 2]
    assert body["lastHttpStatus"] is None and body["bodyExcerpt"] is None


def test_signed_with_both_secrets_during_a_rotation() -> None:
    async def scenario() -> None:
        n = build()
        app = rest_failure_app(
            "app-a",
            previous_signing_secret="old",
            previous_secret_valid_until_ms=n.clock.now_ms() + 1,
        )
        n.apps.apps[app.app_id] = app
        n.add(n.letter("app-a"))
        await n.run()
        [posted] = n.http.posted
        ts = int(posted.headers[HEADER_TIMESTAMP])
        header = posted.headers[HEADER_SIGNATURE]
        assert len(header.split()) == 2
        assert verify("s3cret", ts, posted.body, header) and verify("old", ts, posted.body, header)

    asyncio.run(scenario())


def test_the_app_credential_goes_only_to_a_failure_url_of_the_endpoint_origin() -> None:
    async def scenario() -> None:
        auth = {"auth_header_name": "X-Hook-Token", "auth_header_value": "t0ken"}
        same = rest_failure_app("same", url="http://receiver.example/failed", **auth)
        other = rest_failure_app("other", url="https://elsewhere.example/failed", **auth)
        n = build(same, other)
        n.add(n.letter("same"))
        n.add(n.letter("other"))
        await n.run()
        by_url = {p.url: p.headers for p in n.http.posted}
        assert by_url["http://receiver.example/failed"]["X-Hook-Token"] == "t0ken"
        assert "X-Hook-Token" not in by_url["https://elsewhere.example/failed"]

    asyncio.run(scenario())
    assert same_origin("http://a.example/x", "http://a.example:80/y")
    assert not same_origin("http://a.example/x", "https://a.example/x")
    assert not same_origin("http://a.example/x", "http://a.example:8080/x")
    assert not same_origin("http://a.example:bad/x", "http://a.example/x")


def test_a_kafka_failure_destination_gets_a_record_keyed_by_message_id() -> None:
    async def scenario() -> None:
        n = build(kafka_failure_app("app-k"))
        letter = n.letter("app-k")
        n.add(letter)
        await n.run()
        [record] = n.producer.records
        assert record.topic == "alerts.failed"
        assert record.key == letter.message_id.encode()
        assert record.value == notice_body(letter)
        headers = dict(record.headers)
        assert headers[HEADER_EVENT] == b"message.failed"
        assert headers[HEADER_MESSAGE_ID] == letter.message_id.encode()
        assert n.sent("KAFKA") == 1 and n.http.posted == []
        assert n.notifier.offsets.commits() == {DLQ: 1}

    asyncio.run(scenario())


def test_the_scheduler_topics_and_topics_outside_the_prefixes_are_refused() -> None:
    async def scenario() -> None:
        own = kafka_failure_app("own", topic="sched.results")
        outside = kafka_failure_app("outside", topic="other.failed")
        allowed = kafka_failure_app("allowed", topic="ok.failed")
        n = build(own, outside, allowed, allowed_prefixes=("ok.",))
        for app in (own, outside, allowed):
            n.add(n.letter(app.app_id))
        await n.run()
        assert [r.topic for r in n.producer.records] == ["ok.failed"]
        assert n.dropped("KAFKA", "refused_topic") == 2
        assert n.notifier.offsets.commits() == {DLQ: 3}

    asyncio.run(scenario())


def test_a_topic_refusing_the_record_for_good_drops_the_notice_a_missing_one_retries() -> None:
    async def scenario() -> None:
        big = kafka_failure_app("big", topic="alerts.small")
        missing = kafka_failure_app("missing", topic="alerts.missing")
        n = build(big, missing)
        n.producer.errors["alerts.small"] = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
        n.producer.errors["alerts.missing"] = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
        n.add(n.letter("big"))
        n.add(n.letter("missing"))
        await n.run()
        assert n.dropped("KAFKA", "msg_size_too_large") == 1
        assert n.retried("KAFKA", "unknown_topic_or_part") == 1
        assert n.notifier.pending == 1

    asyncio.run(scenario())


def test_internal_addresses_are_refused_unless_private_destinations_are_allowed() -> None:
    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def scenario(allow_private: bool) -> tuple[int, float]:
        n = build(
            rest_failure_app("app-a", url="http://internal.example/failed"),
            allow_private=allow_private,
            resolver=loopback,
        )
        n.add(n.letter("app-a"))
        await n.run()
        return len(n.http.posted), n.dropped("REST", "refused_address")

    assert asyncio.run(scenario(False)) == (0, 1)
    assert asyncio.run(scenario(True)) == (1, 0)


def test_retried_with_backoff_while_the_url_answers_500_then_dropped_after_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        n = build(rest_failure_app("app-a"))
        n.http.answers[HOOK] = 500
        letter = n.letter("app-a")
        n.add(letter)
        await n.run()
        assert len(n.http.posted) == 1
        times = [n.clock.now_ms()]
        for _ in range(SETTINGS.max_attempts - 1):
            retry_at = n.notifier.next_retry_ms()
            assert retry_at is not None
            # about 1 s, then 2 s (20 % jitter): not before
            assert retry_at - n.clock.now_ms() >= 0.8 * SETTINGS.backoff_base_ms
            n.clock.set(retry_at - 1)
            await n.run()
            assert len(n.http.posted) == len(times), "retried before its backoff"
            assert n.notifier.offsets.commits() == {}, "committed before it was finished"
            n.clock.set(retry_at)
            await n.run()
            times.append(n.clock.now_ms())
            assert len(n.http.posted) == len(times)
        assert [p.headers[HEADER_ATTEMPT] for p in n.http.posted] == ["1", "2", "3"]
        assert times[2] - times[1] > times[1] - times[0]  # exponential
        assert n.retried("REST", "5xx") == SETTINGS.max_attempts - 1
        assert n.dropped("REST", "attempts") == 1
        assert n.notifier.next_retry_ms() is None and n.notifier.pending == 0
        # given up: its offset may be committed now
        assert n.notifier.offsets.commits() == {DLQ: 1}
        n.clock.advance(3_600_000)
        await n.run()
        assert len(n.http.posted) == SETTINGS.max_attempts

    with caplog.at_level("WARNING", logger="scheduler_releaser.failures"):
        asyncio.run(scenario())
    assert any("dropped after 3 attempt(s): attempts" in r.getMessage() for r in caplog.records)


def test_a_retry_that_is_accepted_is_sent_once_more_and_finished() -> None:
    async def scenario() -> None:
        n = build(rest_failure_app("app-a"))
        n.http.script[HOOK] = [503, "timeout"]  # type: ignore[list-item]
        n.add(n.letter("app-a"))
        for _ in range(3):
            await n.run()
            retry_at = n.notifier.next_retry_ms()
            if retry_at is not None:
                n.clock.set(retry_at)
        assert len(n.http.posted) == 3
        assert n.retried("REST", "5xx") == 1 and n.retried("REST", "timeout") == 1
        assert n.sent("REST") == 1
        assert n.notifier.offsets.commits() == {DLQ: 1}

    asyncio.run(scenario())


def test_a_notice_past_its_age_is_dropped_unsent_and_no_retry_goes_past_it() -> None:
    async def scenario() -> None:
        n = build(rest_failure_app("app-a"))
        old = n.letter("app-a", 1, failed_ms=n.clock.now_ms() - SETTINGS.max_age_ms - 1)
        n.add(old)
        await n.run()
        assert n.http.posted == [] and n.dropped("REST", "age") == 1
        # failed just under the bound ago: tried once, and the retry would come too late
        n.http.answers[HOOK] = 500
        late = n.letter("app-a", 2, failed_ms=n.clock.now_ms() - SETTINGS.max_age_ms + 100)
        n.add(late)
        await n.run()
        assert len(n.http.posted) == 1 and n.dropped("REST", "age") == 2
        assert n.notifier.offsets.commits() == {DLQ: 2}

    asyncio.run(scenario())


def test_one_apps_dead_endpoint_does_not_delay_another_apps_notice() -> None:
    async def scenario() -> None:
        dead = rest_failure_app("dead", url="https://dead.example/failed")
        alive = rest_failure_app("alive", url="https://alive.example/failed")
        n = build(dead, alive)
        n.http.answers[dead.failure_endpoint or ""] = "hang"
        # the dead app's notices come first in the partition, many more than its slots
        for i in range(10):
            n.add(n.letter("dead", i))
        n.add(n.letter("alive"))
        n.notifier.start_due()
        await n.spin()
        assert len(n.http.to("https://alive.example/failed")) == 1
        assert n.sent("REST") == 1
        # the dead one holds only its own slots
        assert n.http.hanging == SETTINGS.per_app_concurrency
        # ... and the offsets: the alive app's notice is finished, the first is not
        assert n.notifier.offsets.commits() == {}
        # from now on it times out at once: each of its notices is tried once, then waits
        n.http.release(dead.failure_endpoint or "")
        await n.notifier.drain()
        assert len(n.http.to("https://dead.example/failed")) == 10
        assert n.retried("REST", "timeout") == 10 and n.notifier.pending == 10
        n.add(n.letter("alive", 1))
        await n.run()
        assert n.sent("REST") == 2
        assert n.notifier.offsets.commits() == {}

    asyncio.run(scenario())


def test_retries_waiting_hold_no_slot_of_their_app() -> None:
    async def scenario() -> None:
        n = build(rest_failure_app("app-a"))
        n.http.script[HOOK] = [500, 500]
        for i in range(2):
            n.add(n.letter("app-a", i))
        await n.run()
        assert n.notifier.pending == 2 and n.notifier.in_flight == 0
        n.add(n.letter("app-a", 2))
        await n.run()
        assert n.sent("REST") == 1  # the third went at once, the first two wait
        assert n.notifier.offsets.commits() == {}

    asyncio.run(scenario())


def test_an_app_whose_destination_fails_with_too_many_unfinished_loses_its_further_ones_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        dead = rest_failure_app("dead", url="https://dead.example/failed")
        alive = rest_failure_app("alive", url="https://alive.example/failed")
        n = build(dead, alive, settings=SETTINGS.model_copy(update={"per_app_max_pending": 3}))
        n.http.answers[dead.failure_endpoint or ""] = 500
        for i in range(3):
            n.add(n.letter("dead", i))
        await n.run()  # each tried once: they wait for their retries
        for i in range(3, 5):
            n.add(n.letter("dead", i))
        n.add(n.letter("alive"))
        await n.run()
        assert n.dropped("REST", "overflow") == 2
        assert n.notifier.pending == 3
        assert n.sent("REST") == 1
        assert len(n.http.to("https://dead.example/failed")) == 3
        # the dropped ones are finished: only the unfinished first one holds the offset back
        assert n.notifier.offsets.commits() == {}

    with caplog.at_level("WARNING", logger="scheduler_releaser.failures"):
        asyncio.run(scenario())
    overflow = [r for r in caplog.records if "further notices are dropped" in r.getMessage()]
    assert len(overflow) == 1  # once, not per notice


def test_a_burst_to_a_destination_that_answers_is_not_dropped_whatever_its_size() -> None:
    async def scenario() -> None:
        n = build(
            rest_failure_app("app-a"),
            settings=SETTINGS.model_copy(update={"per_app_max_pending": 3}),
        )
        for i in range(12):
            n.add(n.letter("app-a", i))
        assert n.notifier.pending == 12
        await n.run()
        assert n.sent("REST") == 12 and n.dropped("unknown", "overflow") == 0
        assert n.notifier.offsets.commits() == {DLQ: 12}

    asyncio.run(scenario())


def test_apps_without_destination_deleted_or_missing_are_skipped() -> None:
    async def scenario() -> None:
        none = replace(REST_APP, app_id="none")
        deleted = rest_failure_app("deleted", deleted_ms=1)
        n = build(none, deleted, rest_failure_app("app-a"))
        for app_id in ("none", "deleted", "missing", "app-a"):
            n.add(n.letter(app_id))
        await n.run()
        assert [p.headers[HEADER_MESSAGE_ID] for p in n.http.posted] == ["msg-app-a-0"]
        assert n.skipped("no_destination") == 1 and n.skipped("app_gone") == 2
        assert n.notifier.offsets.commits() == {DLQ: 4}

    asyncio.run(scenario())


def test_an_app_whose_secrets_do_not_decrypt_is_skipped_and_nothing_else_stops() -> None:
    async def scenario() -> None:
        n = build(rest_failure_app("sealed"), rest_failure_app("app-a"))
        n.apps.failing["sealed"] = [UnreadableValue("no key 'k2' in the keyring")]
        n.add(n.letter("sealed"))
        n.add(n.letter("app-a"))
        await n.run()
        assert n.skipped("secrets") == 1
        assert [p.headers[HEADER_MESSAGE_ID] for p in n.http.posted] == ["msg-app-a-0"]
        assert n.notifier.offsets.commits() == {DLQ: 2}

    asyncio.run(scenario())


def test_an_app_that_cannot_be_read_waits_without_spending_an_attempt() -> None:
    async def scenario() -> None:
        n = build(rest_failure_app("app-a"))
        n.apps.failing["app-a"] = [RuntimeError("Cassandra unavailable")] * 4
        n.add(n.letter("app-a"))
        for _ in range(5):
            await n.run()
            retry_at = n.notifier.next_retry_ms()
            if retry_at is not None:
                n.clock.set(retry_at)
        [posted] = n.http.posted
        assert posted.headers[HEADER_ATTEMPT] == "1"
        assert n.sent("REST") == 1

    asyncio.run(scenario())


def test_a_revoked_partition_abandons_its_notices_to_the_next_owner() -> None:
    async def scenario() -> None:
        slow = rest_failure_app("slow", url="https://slow.example/failed")
        n = build(slow, rest_failure_app("app-a"))
        n.http.answers[slow.failure_endpoint or ""] = "hang"
        n.http.answers[HOOK] = 500
        n.notifier.add(n.letter("slow"), DLQ, 0)  # in flight when revoked
        n.notifier.add(n.letter("app-a"), DLQ, 1)  # waiting for its retry when revoked
        n.notifier.add(n.letter("app-a", 1), OTHER_DLQ, 0)
        n.notifier.start_due()
        await n.spin()
        assert n.notifier.revoke({DLQ}) == 2
        await n.spin()
        assert n.http.hanging == 0 and n.notifier.pending == 1
        assert DLQ not in n.notifier.offsets.partitions()
        n.clock.advance(60_000)
        await n.run()
        # only the other partition's notice is tried again
        assert [p.headers[HEADER_MESSAGE_ID] for p in n.http.posted[-1:]] == ["msg-app-a-1"]
        assert n.sent("REST") == 0 and n.dropped("REST", "attempts") == 0

    asyncio.run(scenario())


def test_the_apps_take_turns_within_the_total_concurrency() -> None:
    async def scenario() -> None:
        apps = [rest_failure_app(f"app-{i}", url=f"https://{i}.example/f") for i in range(3)]
        n = build(*apps, settings=SETTINGS.model_copy(update={"concurrency": 3}))
        for app in apps:
            n.http.answers[app.failure_endpoint or ""] = "hang"
            for k in range(4):
                n.add(n.letter(app.app_id, k))
        n.notifier.start_due()
        await n.spin()
        # one each, not three of the first app
        assert sorted(p.url for p in n.http.posted) == sorted(a.failure_endpoint for a in apps)

    asyncio.run(scenario())


@given(
    st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=30),
    st.randoms(use_true_random=False),
)
@settings(max_examples=200, deadline=None)
def test_offsets_never_pass_an_unfinished_notice(gaps: list[int], rnd: random.Random) -> None:
    offsets = NoticeOffsets()
    received, offset = [], 0
    for gap in gaps:
        offset += gap  # transaction markers and other records between dead letters
        offsets.received(DLQ, offset)
        received.append(offset)
        offset += 1
    unfinished = set(received)
    for done in rnd.sample(received, len(received)):
        offsets.finished(DLQ, done)
        unfinished.discard(done)
        point = offsets.commits().get(DLQ)
        if unfinished:
            assert point is None or point <= min(unfinished)
        offsets.confirm(offsets.commits())
    assert offsets.commit_point(DLQ) == received[-1] + 1


def test_the_notifier_commits_no_further_than_its_oldest_unfinished_notice() -> None:
    """Apps answering 200, 404 (dropped at once), 500 or 503 (retried, then dropped), their
    notices interleaved in one partition: at every step the commit point is at most the oldest
    offset whose notice is still open, and once all are finished it is past the last."""

    async def scenario() -> None:
        rnd = random.Random(7)
        apps = [rest_failure_app(f"app-{i}", url=f"https://{i}.example/f") for i in range(4)]
        n = build(*apps)
        for app, answer in zip(apps, (200, 404, 500, 503), strict=True):
            n.http.answers[app.failure_endpoint or ""] = answer
        for k in range(40):
            n.add(n.letter(rnd.choice(apps).app_id, k))
        checked = 0
        while True:
            await n.run()
            open_offsets = {note.offset for note in n.notifier._open_notices()}
            point = n.notifier.offsets.commits().get(DLQ)
            if open_offsets:
                assert point is None or point <= min(open_offsets)
                checked += 1
            retry_at = n.notifier.next_retry_ms()
            if retry_at is None:
                break
            n.clock.set(retry_at)
        assert checked >= 2
        assert n.notifier.pending == 0
        assert n.notifier.offsets.commit_point(DLQ) == 40

    asyncio.run(scenario())
