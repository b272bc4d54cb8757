import itertools

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scheduler.clock import ManualClock
from scheduler.domain.backoff import Backoff
from scheduler.domain.buckets import bucket_start, buckets_between, shard_of
from scheduler.domain.ids import (
    _encode128,
    derived_message_id,
    is_message_id,
    new_message_id,
    occurrence_message_id,
)
from scheduler.domain.placement import Placement, claimed, place
from scheduler.domain.ring import Ring
from scheduler.domain.status import (
    ABORTABLE,
    TERMINAL,
    TRANSITIONS,
    Status,
    TransitionError,
    check_transition,
    precedence,
    shown_status,
    stored_ready,
)

pytestmark = pytest.mark.unit

times = st.integers(min_value=0, max_value=253_402_300_799_999)
widths = st.integers(min_value=1, max_value=7 * 86_400_000)


@given(times, widths)
def test_bucket_contains_its_time(t: int, width: int) -> None:
    start = bucket_start(t, width)
    assert start <= t < start + width
    assert start % width == 0


@given(times, st.integers(min_value=0, max_value=10**7), widths)
def test_buckets_tile_the_interval(start: int, length: int, width: int) -> None:
    assume(length // width < 2_000)
    starts = list(buckets_between(start, start + length, width))
    if length == 0:
        assert starts == []
        return
    assert starts[0] <= start < starts[0] + width
    assert all(b - a == width for a, b in itertools.pairwise(starts))
    assert starts[-1] < start + length <= starts[-1] + width


@given(st.text(min_size=1), st.integers(min_value=1, max_value=1024))
def test_shard_is_stable_and_in_range(message_id: str, count: int) -> None:
    shard = shard_of(message_id, count)
    assert 0 <= shard < count
    assert shard == shard_of(message_id, count)


def test_shards_spread() -> None:
    ids = [new_message_id(1_900_000_000_000, i) for i in range(4000)]
    counts = [0] * 8
    for message_id in ids:
        counts[shard_of(message_id, 8)] += 1
    assert min(counts) > 400  # ~500 each


rings = st.builds(
    Ring,
    prefix=st.just("scheduler.due."),
    size=st.integers(min_value=3, max_value=1000),
    slot_ms=st.integers(min_value=1, max_value=3_600_000),
)


@given(rings, times)
def test_ring_topic_names_round_trip(ring: Ring, due: int) -> None:
    topic = ring.topic_for(due)
    assert ring.slot_of_topic(topic) == ring.slot_of(due)
    assert ring.slot_start(due) <= due < ring.slot_start(due) + ring.slot_ms
    assert ring.topic_for(due + ring.cycle_ms) == topic


@given(rings, times, times)
def test_a_past_due_send_goes_to_the_current_slot(ring: Ring, due: int, now: int) -> None:
    topic = ring.topic_for_send(due, now)
    if due >= now:
        assert topic == ring.topic_for(due)  # its own slot
    else:
        assert topic == ring.topic_for(now)  # never a slot that is already behind


def test_ring_default_names() -> None:
    ring = Ring("scheduler.due.")
    assert ring.topics()[0] == "scheduler.due.00"
    assert ring.topics()[59] == "scheduler.due.59"
    assert len(set(ring.topics())) == 60
    assert ring.topic_for(1_893_499_200_000 + 5 * 60_000 + 59_999) == "scheduler.due.05"
    for bad in ("scheduler.due.60", "scheduler.due.5", "other.05", "scheduler.due.005"):
        with pytest.raises(ValueError):
            ring.slot_of_topic(bad)


@given(times, times, st.integers(min_value=0, max_value=600_000), widths)
def test_placement_rule(due: int, claim: int, margin: int, width: int) -> None:
    """Facts that do not restate the rule's formula."""
    decision = place(due, claim, margin, width)
    if due < claim + margin:  # due inside the claim plus the margin: never stored
        assert decision is Placement.DIRECT
    if due >= claim + margin + width:  # its whole bucket starts after claim + margin
        assert decision is Placement.STORE
    # one decision per bucket, and a later bucket is never placed more directly
    start = bucket_start(due, width)
    assert place(start, claim, margin, width) is decision
    assert place(start + width - 1, claim, margin, width) is decision
    if decision is Placement.STORE:
        assert place(due + width, claim, margin, width) is Placement.STORE


# A small model of the release path (docs/ARCHITECTURE.md, "The release path: claim, index,
# fencing"): a releaser claims buckets one at a time and then lists the claimed bucket; a store
# places a message with the claim it read earlier (possibly stale), makes its row durable, then
# re-checks with a fresh claim. Stranded: stored, never listed after its row was durable, and
# not sent directly by the re-check.
MINUTE = 60_000


def _release_events(buckets: int) -> list[tuple[str, int]]:
    events: list[tuple[str, int]] = []
    for i in range(buckets):
        events += [("claim", (i + 1) * MINUTE), ("list", i * MINUTE)]
    return events


def _delivered(due: int, margin: int, order: list[tuple[str, int]]) -> bool:
    claim, read_for_placement, placement, durable, listed_after_durable = 0, 0, None, False, False
    for kind, value in order:
        if kind == "claim":
            claim = value
        elif kind == "read":
            read_for_placement = claim
        elif kind == "write":
            placement = place(due, read_for_placement, margin, MINUTE)
            if placement is Placement.DIRECT:
                return True
            durable = True
        elif kind == "list" and durable and value == bucket_start(due, MINUTE):
            listed_after_durable = True
        elif kind == "recheck" and claimed(due, claim, MINUTE):
            return True  # sent directly by the store
    return listed_after_durable


@pytest.mark.parametrize("margin", [0, MINUTE])
@pytest.mark.parametrize("due", [0, MINUTE - 1, MINUTE, 2 * MINUTE + 30_000])
def test_no_interleaving_of_store_and_release_strands_a_message(due: int, margin: int) -> None:
    release = _release_events(4)
    n = len(release)
    checked = 0
    # the store's three steps in order (read claim, durable write, re-check), anywhere among
    # the releaser's claim/list steps
    for read, write, recheck in itertools.combinations_with_replacement(range(n + 1), 3):
        store = [(read, "read"), (write, "write"), (recheck, "recheck")]
        order = [(step, 0) for at, step in store if at == 0]
        for i, event in enumerate(release, start=1):
            order += [event, *((step, 0) for at, step in store if at == i)]
        assert _delivered(due, margin, order), order
        checked += 1
    assert checked == 165  # C(8 + 3, 3): every interleaving


def test_the_release_model_strands_without_the_recheck() -> None:
    """The model can fail: listed before the row is durable, and no re-check, is stranded."""
    order = [("read", 0), ("claim", MINUTE), ("list", 0), ("write", 0)]
    assert not _delivered(30_000, 0, order)
    assert _delivered(30_000, 0, [*order, ("recheck", 0)])


def test_placement_examples() -> None:
    minute = 60_000
    watermark = 10 * minute  # buckets before minute 10 are released
    assert place(9 * minute + 59_999, watermark, 0, minute) is Placement.DIRECT
    assert place(10 * minute, watermark, 0, minute) is Placement.STORE
    assert place(10 * minute, watermark, minute, minute) is Placement.DIRECT
    assert place(11 * minute, watermark, minute, minute) is Placement.STORE


@given(st.integers(min_value=1, max_value=30), st.floats(min_value=0, max_value=0.999))
def test_backoff_grows_and_is_bounded(attempt: int, draw: float) -> None:
    backoff = Backoff(max_attempts=40, base_ms=1000, factor=2.0, max_delay_ms=60_000, jitter=0.2)
    delay = backoff.delay_ms(attempt, draw)
    assert 0 <= delay <= 60_000
    nominal = min(1000 * 2 ** (attempt - 1), 60_000)
    assert abs(delay - nominal) <= nominal * 0.2 + 1


def test_backoff_schedule_ends() -> None:
    backoff = Backoff(max_attempts=3, base_ms=1000, factor=2.0, jitter=0.0)
    assert backoff.next_due_ms(1, 0) == 1000
    assert backoff.next_due_ms(2, 0) == 2000
    assert backoff.next_due_ms(3, 0) is None


def test_transitions() -> None:
    for terminal in (Status.SENT, Status.ABORTED):
        for target in Status:
            with pytest.raises(TransitionError):
                check_transition(terminal, target)
    check_transition(Status.FAILED, Status.READY)  # redrive
    with pytest.raises(TransitionError):
        check_transition(Status.FAILED, Status.ABORTED)
    for source in ABORTABLE:
        check_transition(source, Status.ABORTED)
    assert {Status.SENT, Status.FAILED, Status.ABORTED} == TERMINAL
    assert set(TRANSITIONS) == set(Status)


statuses = st.sampled_from(list(Status))
gens = st.integers(min_value=0, max_value=1000)
attempts = st.integers(min_value=0, max_value=1000)


@given(statuses, gens, attempts, statuses, gens, attempts)
def test_precedence_never_moves_backwards(
    s1: Status, g1: int, a1: int, s2: Status, g2: int, a2: int
) -> None:
    p1, p2 = precedence(s1, g1, a1), precedence(s2, g2, a2)
    assert p1 > 0
    if g1 != g2:
        assert (p1 > p2) == (g1 > g2)  # a newer generation always wins
    elif s1.terminal and not s2.terminal:
        assert p1 > p2  # terminal beats READY/QUEUED of any attempt
    elif not s1.terminal and not s2.terminal and a1 != a2:
        assert (p1 > p2) == (a1 > a2)  # a later attempt wins
    if (s1, g1, a1 if not s1.terminal else 0) == (s2, g2, a2 if not s2.terminal else 0):
        assert p1 == p2  # replays are idempotent


def test_precedence_examples() -> None:
    assert precedence(Status.SENT, 0, 3) > precedence(Status.QUEUED, 0, 3)
    assert precedence(Status.SENT, 0, 1) > precedence(Status.ABORTED, 0, 1)
    assert precedence(Status.ABORTED, 0, 1) > precedence(Status.QUEUED, 0, 9)
    assert precedence(Status.READY, 1, 1) > precedence(Status.FAILED, 0, 5)  # redrive
    assert precedence(Status.QUEUED, 0, 1) > precedence(Status.READY, 0, 1)
    assert precedence(Status.QUEUED, 0, 1) > precedence(Status.READY, 0, 1, stored=True)
    assert precedence(Status.READY, 0, 1, stored=True) > precedence(Status.READY, 0, 1)
    assert precedence(Status.READY, 1, 1) > precedence(Status.READY, 0, 9, stored=True)


@given(statuses, gens, attempts)
def test_only_a_ready_written_with_its_bucket_row_reads_as_stored(
    status: Status, generation: int, attempt: int
) -> None:
    stored = precedence(status, generation, attempt, stored=True)
    assert stored_ready(status, stored) is (status is Status.READY)
    assert not stored_ready(status, precedence(status, generation, attempt))


def test_a_stored_ready_below_the_watermark_shows_queued() -> None:
    assert shown_status(Status.READY, True, 59_999, 60_000) is Status.QUEUED
    assert shown_status(Status.READY, True, 60_000, 60_000) is Status.READY
    assert shown_status(Status.READY, False, 0, 60_000) is Status.READY
    assert shown_status(Status.SENT, True, 0, 60_000) is Status.SENT


@given(times.filter(lambda t: t < 1 << 48), st.integers(min_value=0, max_value=(1 << 80) - 1))
def test_ulids_are_valid_and_time_sortable(t: int, rand: int) -> None:
    message_id = new_message_id(t, rand)
    assert is_message_id(message_id)
    assert new_message_id(t + 1, 0) > message_id


def reference_encode(value: int) -> str:
    """The first implementation, one character at a time."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(alphabet[(value >> (5 * i)) & 31] for i in reversed(range(26)))


@given(st.integers(min_value=0, max_value=(1 << 130) - 1))
def test_ids_encode_as_they_always_did(value: int) -> None:
    assert _encode128(value) == reference_encode(value)


def test_ids_of_keys_and_occurrences_are_those_of_earlier_versions() -> None:
    """Replicas of two versions side by side must give a key or an occurrence the same id."""
    assert derived_message_id("app-1", "order-42") == "09NNVQE320WAY29S1PYK3CKX0W"
    assert occurrence_message_id("app-1", "sched-7", 1_900_000_000_000) == (
        "01Q9GD6E00MPTXCRVQCDE54DF8"
    )
    assert new_message_id(1_900_000_000_000, 123456789) == "01Q9GD6E0000000000003NQK8N"


@given(st.text(max_size=40), st.text(max_size=40))
def test_derived_ids_are_deterministic_and_app_scoped(app: str, key: str) -> None:
    message_id = derived_message_id(app, key)
    assert is_message_id(message_id)
    assert derived_message_id(app, key) == message_id
    assert derived_message_id(app + "x", key) != message_id


def test_manual_clock() -> None:
    clock = ManualClock(1000)
    clock.advance(500)
    assert clock.now_ms() == 1500
    assert clock.monotonic_ms() == 500
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(1000)
