"""Contract of MessageStore.claim_keys (idempotency keys), for the fake and the Cassandra adapter.

Exactly one of concurrent claimers of a key wins, whoever they are; a recorded message holds its
key for good; a claim is kept for its TTL only."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from scheduler.domain.idempotency import KeyClaim, fingerprint
from scheduler.domain.ids import derived_message_id
from scheduler.domain.status import Status
from scheduler.store.ports import LogEntry, MessageContent, MessageStore, StatusUpdate

T0 = 1_893_499_200_000
TTL = 3_600_000


def claim(key: str, payload: str = '{"n":1}', created: int = T0, app: str = "app-a") -> KeyClaim:
    return KeyClaim(
        app_id=app,
        idempotency_key=key,
        message_id=derived_message_id(app, key),
        fingerprint=fingerprint(payload, T0 + 60_000, None),
        created_ms=created,
    )


def test_the_first_claim_wins_and_later_ones_see_it(message_store: MessageStore) -> None:
    first, second = claim("k1"), claim("k1", payload='{"n":2}', created=T0 + 5)
    [won] = message_store.claim_keys([first], TTL)
    assert (won.claim, won.won, won.status) == (first, True, None)
    [lost] = message_store.claim_keys([second], TTL)
    assert (lost.claim, lost.won, lost.status) == (first, False, None)
    [again] = message_store.claim_keys([first], TTL)  # the winner asking again: not won twice
    assert (again.claim, again.won) == (first, False)
    # the same key in another app is another key
    [other] = message_store.claim_keys([claim("k1", app="app-b")], TTL)
    assert other.won


def test_claims_of_one_key_in_one_call_have_one_winner(message_store: MessageStore) -> None:
    a, b, c = claim("k2"), claim("k2", payload="2", created=T0 + 1), claim("k3")
    holders = message_store.claim_keys([a, b, c, a], TTL)
    assert [(h.claim, h.won) for h in holders] == [(a, True), (a, False), (c, True), (a, False)]


def test_two_concurrent_claimers_of_one_key_exactly_one_wins(message_store: MessageStore) -> None:
    keys = [f"race-{n}" for n in range(8)]
    barrier = threading.Barrier(2)

    def claimer(side: int) -> list[tuple[KeyClaim, bool]]:
        out = []
        for key in keys:
            mine = claim(key, payload=f'{{"side":{side}}}', created=T0 + side)
            barrier.wait(timeout=30)
            [holder] = message_store.claim_keys([mine], TTL)
            out.append((holder.claim, holder.won))
        return out

    with ThreadPoolExecutor(2) as pool:
        left, right = pool.map(claimer, (0, 1))
    for (held_l, won_l), (held_r, won_r) in zip(left, right, strict=True):
        assert won_l != won_r  # exactly one winner
        assert held_l == held_r  # and both see the same holder
        assert held_l.created_ms == (T0 if won_l else T0 + 1)


def test_a_recorded_message_holds_its_key(message_store: MessageStore) -> None:
    app, key = "app-a", "k-recorded"
    content = MessageContent(
        app_id=app,
        message_id=derived_message_id(app, key),
        payload_json='{"b": 1, "a": [1, 2]}',  # another spelling of the same JSON value
        send_at_ms=T0 + 60_000,
        created_ms=T0 - 1_000,
        idempotency_key=key,
    )
    state = StatusUpdate(Status.SENT, 0, 1, due_ms=T0 + 60_000, at_ms=T0 + 60_010)
    message_store.save(content, state, LogEntry(T0, "0:1:sent", Status.SENT))
    ours = claim(key, payload='{"a":[1,2],"b":1}')
    [holder] = message_store.claim_keys([ours], TTL)
    assert not holder.won and holder.status is Status.SENT
    assert holder.claim.same_request(ours) and holder.claim.created_ms == T0 - 1_000
    [other] = message_store.claim_keys([claim(key, payload='{"a":2}')], TTL)
    assert not other.won and not other.claim.same_request(claim(key, payload='{"a":2}'))


def test_a_claim_is_kept_for_its_ttl_only(message_store: MessageStore) -> None:
    [first] = message_store.claim_keys([claim("k-ttl")], 3_000)
    assert first.won
    [held] = message_store.claim_keys([claim("k-ttl", payload="2", created=T0 + 1)], 3_000)
    assert not held.won
    time.sleep(4.2)  # Cassandra's TTL has a one-second resolution
    later = claim("k-ttl", payload="3", created=T0 + 2)
    [after] = message_store.claim_keys([later], 3_000)
    assert (after.claim, after.won) == (later, True)
