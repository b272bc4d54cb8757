"""Release races, at random: nothing stored is ever stranded, whatever the interleaving.

Hypothesis generates a list of steps and this test plays them against the real code on shared
in-memory stores and a ManualClock (the actors of test_release_interleavings):

- two bucketer replicas, each a real `Placer` driven one step at a time: route (with its cached
  claim), make the writes durable, re-check (`Placer.finish`); a bucketer may crash before its
  re-check, and the batch is then routed again (Kafka delivers it again);
- a dispatcher storing retries (`Dispatcher._reschedule_via_ring`), stopped before each of its
  bucket-store calls (claim read, store, re-check);
- two releaser replicas, each a real `Releaser` whose tick stops before and after each of its
  bucket-store calls (claim, index read, listing, read, drop, watermark, forget) and before each
  ring flush; a step moves one of them on by a few stops, or on to its next call about the
  bucket of a message being stored. Both may be inside a tick at once (a stale releaser), and
  either may be killed at any stop and replaced by a new instance on the same stores (a crash
  and a restart);
- clock advances; the releaser's index page size; optionally a keyspace upgraded from the
  version without the bucket index (rows stored without index entries, index incomplete) and
  its backfill.

The steps that aim at a message's bucket only steer the search towards the races; a plain
random walk seldom stops a releaser between its listing of a bucket and its moving past it.
Three known races are also kept as explicit examples.

At the end every actor finishes what it was doing, and a new releaser ticks once far in the
future. Then every message that entered placement must have been committed to the ring by a
releaser or sent directly by whoever stored it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st

import scheduler_releaser.releaser.core as releaser_module
from scheduler.domain.buckets import bucket_start, shard_of
from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.store.ports import BucketStore

from .harness import SCHEDULING
from .test_release_interleavings import (
    APP_A,
    APP_B,
    BucketerActor,
    DispatcherActor,
    Stepper,
    Stop,
    World,
    looked_for,
)

pytestmark = pytest.mark.unit
WIDTH = SCHEDULING.bucket_width_ms
LOOKAHEAD = SCHEDULING.lookahead_ms
CALLS = ("call",)  # the dispatcher stops before each call: every interleaving of whole calls
START_MS = 1_767_225_600_000 - 20_000  # 20 s before a UTC day ends: the index's days turn over

backfill: Callable[[BucketStore, int], Any] | None
try:
    from scheduler.store.bucket_index import backfill
except ImportError:  # a version without the upgrade backfill
    backfill = None


# -- the steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Idle:
    """Nothing happens (what a shrunk example is padded with)."""


@dataclass(frozen=True)
class Clock:
    ms: int


@dataclass(frozen=True)
class ClockTo:
    """The clock moves to `lead_ms` before the bucket of a message (`Race._target`), if that
    is ahead."""

    target: int
    lead_ms: int


@dataclass(frozen=True)
class Route:
    """Bucketer `slot`, if idle, routes the next message (a redelivered one first)."""

    slot: int
    ahead_ms: int
    app: str
    shards: int


@dataclass(frozen=True)
class Store:
    """Bucketer `slot` (or the other, if `slot` has no batch in flight) moves on: its writes
    become durable, or (when they are) it re-checks; `through`: both at once."""

    slot: int
    through: bool = False


@dataclass(frozen=True)
class BucketerCrash:
    """Bucketer `slot` dies before its re-check: Kafka will deliver its batch again."""

    slot: int


@dataclass(frozen=True)
class Retry:
    """The dispatcher places a retry due `ahead_ms` from now, or its retry in progress moves on
    to its next bucket-store call."""

    ahead_ms: int
    shards: int | None


@dataclass(frozen=True)
class Release:
    """Releaser `slot` starts a tick if it has none running, then runs `stops` stops on, or,
    with a `target`, on to its next stop about the bucket of a message (`Race._target`; see
    `about`), or with `looked`, to right after it looked for that bucket's rows (its index
    read, or without an index its listing), or to its end."""

    slot: int
    stops: int
    target: int | None = None
    looked: bool = False


@dataclass(frozen=True)
class Restart:
    """Releaser `slot` is killed where it stands (if inside a tick) and a new instance takes
    its place on the same stores."""

    slot: int


@dataclass(frozen=True)
class Backfill:
    """The upgrade backfill (once no writer of the previous version runs)."""


Step = Idle | Clock | ClockTo | Route | Store | BucketerCrash | Retry | Release | Restart | Backfill

SLOTS = st.integers(0, 1)
TARGETS = st.integers(0, 7)  # a message being stored, or one stored (Race._target)
STEPS = st.lists(
    st.one_of(
        st.just(Idle()),
        st.builds(Clock, st.sampled_from([1, 300, 1_000, 2_500, 6_000, 20_000])),
        st.builds(ClockTo, TARGETS, st.integers(1, LOOKAHEAD)),
        st.builds(ClockTo, TARGETS, st.integers(1, LOOKAHEAD)),
        st.builds(
            Route,
            SLOTS,
            st.integers(0, 40_000),
            st.sampled_from([APP_A.app_id, APP_B.app_id]),
            st.sampled_from([1, 2]),
        ),
        st.builds(Store, SLOTS),
        st.builds(Store, SLOTS),
        st.builds(Store, SLOTS, st.just(True)),
        st.builds(BucketerCrash, SLOTS),
        st.builds(Retry, st.integers(0, 40_000), st.sampled_from([1, None])),
        st.builds(Retry, st.integers(0, 40_000), st.sampled_from([1, None])),
        st.builds(Release, SLOTS, st.sampled_from([1, 1, 2, 3, 6, 40])),
        st.builds(Release, SLOTS, st.just(0), TARGETS),
        st.builds(Release, SLOTS, st.just(0), TARGETS),
        st.builds(Release, SLOTS, st.just(0), TARGETS, st.just(True)),
        st.builds(Restart, SLOTS),
        st.just(Backfill()),
    ),
    min_size=20,  # Hypothesis would draw about 5 steps on average otherwise
    max_size=60,
)
UPGRADE = st.one_of(
    st.none(),  # a keyspace created with the index
    st.lists(st.integers(LOOKAHEAD, 40_000), max_size=3),  # upgraded: rows stored unindexed
)


# -- playing them ----------------------------------------------------------------------------


class Race:
    """The actors on one set of stores, and what became of every message."""

    def __init__(self, legacy_rows: list[int] | None) -> None:
        self.w = World(START_MS)
        self.entered: dict[str, DueMessage] = {}  # every message that entered placement
        self.direct: set[str] = set()  # sent directly by whoever stored it
        self.bucketers = [BucketerActor(self.w, cache_ms=1_000) for _ in range(2)]
        self.routed: list[list[DueMessage]] = [[], []]  # per bucketer: its batch in flight
        self.redeliver: list[DueMessage] = []  # batches of crashed bucketers, to route again
        self._dispatcher: DispatcherActor | None = None
        self.retry: Stepper | None = None
        self.releasers = [self.w.releaser() for _ in range(2)]
        self.upgraded = legacy_rows is not None and hasattr(self.w.buckets, "store_unindexed")
        if self.upgraded:
            self._upgrade(legacy_rows or [])
        else:
            self.w.tick()  # a running installation: its releaser has ticked before

    def _upgrade(self, legacy_rows: list[int]) -> None:
        """Rows a writer of the previous version stored (no index entries) before it stopped;
        the previous releaser had released up to now + look-ahead."""
        buckets: Any = self.w.buckets
        now = self.w.clock.now_ms()
        buckets.advance_watermark(bucket_start(now + LOOKAHEAD, WIDTH), now)
        buckets.mark_index_incomplete()
        for ahead in legacy_rows:
            m = self.w.message(now + LOOKAHEAD + SCHEDULING.placement_margin_ms + ahead)
            self.w.record(m, Status.READY)
            shard = shard_of(m.message_id, SCHEDULING.shards_per_bucket)
            buckets.store_unindexed(bucket_start(m.due_ms, WIDTH), shard, m)
            self.entered[m.message_id] = m

    def play(self, step: Step) -> None:
        if isinstance(step, Idle):
            pass
        elif isinstance(step, Clock):
            self.w.clock.advance(step.ms)
        elif isinstance(step, ClockTo):
            target = self._target(step.target)
            if target is not None:
                self.w.clock.set(max(self.w.clock.now_ms(), target - step.lead_ms))
        elif isinstance(step, Route):
            self._route(step)
        elif isinstance(step, Store):
            self._store(step.slot, step.through)
        elif isinstance(step, BucketerCrash):
            self._bucketer_crash(step.slot)
        elif isinstance(step, Retry):
            self._retry(step)
        elif isinstance(step, Release):
            self._release(step)
        elif isinstance(step, Restart):
            self._restart(step.slot)
        elif backfill is not None and self.upgraded and not self.w.buckets.index_complete():
            backfill(self.w.buckets, self.w.clock.now_ms())
            note("backfill: index complete")

    def _route(self, step: Route) -> None:
        if self.routed[step.slot]:
            return
        if self.redeliver:
            m = self.redeliver.pop(0)
        else:
            m = self.w.message(self.w.clock.now_ms() + step.ahead_ms, step.app)
            self.entered[m.message_id] = m
        bucketer = self.bucketers[step.slot]
        if bucketer.route([m], step.shards):
            self.routed[step.slot] = [m]
            note(f"bucketer {step.slot}: {m.message_id} routed to bucket {self._bucket(m)}")
        else:
            self._collect(bucketer)
            note(f"bucketer {step.slot}: {m.message_id} sent directly at once")

    def _store(self, slot: int, through: bool) -> None:
        if not self.routed[slot]:
            slot = 1 - slot  # the other one, if it has a batch in flight
            if not self.routed[slot]:
                return
        bucketer = self.bucketers[slot]
        just_durable = bucketer.writer.queued
        if bucketer.writer.queued:
            bucketer.make_durable()
            note(f"bucketer {slot}: {self.routed[slot][0].message_id} durable")
        if not bucketer.writer.queued and (through or not just_durable):
            bucketer.recheck()
            self._collect(bucketer)
            note(f"bucketer {slot}: re-checked, direct: {sorted(bucketer.sent_directly())}")
            self.routed[slot] = []

    def _bucketer_crash(self, slot: int) -> None:
        if self.routed[slot]:
            self.redeliver += self.routed[slot]
            self.routed[slot] = []
            self.bucketers[slot] = BucketerActor(self.w, cache_ms=1_000)
            note(f"bucketer {slot}: crashed before its re-check")

    def _collect(self, bucketer: BucketerActor) -> None:
        self.direct |= bucketer.sent_directly()

    def _retry(self, step: Retry) -> None:
        if self.retry is None:
            now = self.w.clock.now_ms()
            retry = self.w.message(now + step.ahead_ms, APP_A.app_id, attempt=2)
            self.entered[retry.message_id] = retry
            if self._dispatcher is None:
                self._dispatcher = DispatcherActor(self.w, phases=CALLS)
            self.retry = self._dispatcher.reschedule(retry, step.shards)
            self._retry_id = retry.message_id
            note(f"dispatcher: retry {retry.message_id} due in bucket {self._bucket(retry)}")
        else:
            self.retry.step()
        if self.retry.done:
            if self.retry.result is True:
                self.direct.add(self._retry_id)
            note(f"dispatcher: retry {self._retry_id} placed, for the ring: {self.retry.result}")
            self.retry = None

    def _release(self, step: Release) -> None:
        actor = self.releasers[step.slot]
        stops = step.stops
        if not actor.running:
            actor.start()
            stops -= 1
        stepper = actor.stepper
        assert stepper is not None
        target = self._target(step.target)
        if target is not None:
            wanted = looked_for(target) if step.looked else (lambda s: about(s, target))
            stepper.step()
            stepper.run_until(wanted, or_end=True)
        for _ in range(stops):
            stepper.step()
        note(f"releaser {step.slot}: at {stepper.at}")

    def _target(self, index: int | None) -> int | None:
        """The bucket of the `index`-th message being stored (routed or placed by the
        dispatcher, not re-checked yet), or else of the `index`-th that entered placement."""
        if index is None:
            return None
        in_flight = [m for batch in self.routed for m in batch]
        if self.retry is not None:
            in_flight.append(self.entered[self._retry_id])
        candidates = in_flight or list(self.entered.values())
        if not candidates:
            return None
        return self._bucket(candidates[index % len(candidates)])

    def _restart(self, slot: int) -> None:
        actor = self.releasers[slot]
        if actor.running:
            assert actor.stepper is not None
            note(f"releaser {slot}: killed at {actor.stepper.at}")
            actor.stepper.crash()
        self.releasers[slot] = self.w.releaser()

    def _bucket(self, m: DueMessage) -> int:
        return bucket_start(m.due_ms, WIDTH)

    def settle(self) -> None:
        """Everyone finishes what they were doing; then a last tick far in the future."""
        for slot, bucketer in enumerate(self.bucketers):
            if self.routed[slot]:
                bucketer.make_durable()
                bucketer.recheck()
                self._collect(bucketer)
                self.routed[slot] = []
        while self.redeliver:
            bucketer = BucketerActor(self.w)
            bucketer.place([self.redeliver.pop(0)])
            self._collect(bucketer)
        if self.retry is not None:
            if self.retry.finish() is True:
                self.direct.add(self._retry_id)
            self.retry = None
        for actor in self.releasers:  # stale ticks land last
            if actor.stepper is not None:
                actor.stepper.finish()
        due = max((m.due_ms for m in self.entered.values()), default=0)
        self.w.quiesce(due)

    def stop(self) -> None:
        """After a failure: end every thread still paused."""
        for stepper in [self.retry] + [a.stepper for a in self.releasers]:
            if stepper is not None:
                stepper.crash()


def about(stop: Stop, bucket: int) -> bool:
    """Right after a releaser call about `bucket`: the claim that covers it, the index read
    whose range holds it, its listing, the read or drop of one of its partitions, the watermark
    moving past it. (Right after one call is right before the next: no interleaving is lost.)"""
    args = stop.args
    if stop.phase != "done":
        return False
    if stop.name in ("partitions", "read", "drop_partition"):
        return bool(args[0] == bucket)
    if stop.name in ("claim", "advance_watermark"):
        return bool(args[0] > bucket)
    if stop.name == "stored_buckets":
        return bool(args[0] <= bucket < args[1])
    return False


# The two races the claim closes (found by the search on the previous version, kept as examples):
# a bucketer store, and a dispatcher retry, durable and re-checked right after the releaser
# looked for their bucket's rows, before it moved past it.
RACED_STORE = [
    Route(0, 20_000, APP_A.app_id, 1),
    ClockTo(0, 2_000),
    Release(0, 0, target=0, looked=True),  # right after its index read (or listing of b)
    Store(0, through=True),
]
RACED_RETRY = [
    Retry(20_000, 1),  # stops before its claim read
    Retry(0, 1),  # read: stored; stops before the store
    ClockTo(0, 2_000),
    Release(0, 0, target=0, looked=True),
    Retry(0, 1),  # stored; stops before the re-check
    Retry(0, 1),  # re-checked
]

# A stale releaser's lower claim lands after the live releaser's claim and index read; then the
# store lands and re-checks: only a claim that never moves backwards makes it send directly.
RACED_STALE_CLAIM = [
    Route(0, 20_000, APP_A.app_id, 1),
    Clock(2_500),
    Release(1, 5),  # the stale releaser: stops before its claim (up to now + look-ahead)
    ClockTo(0, 2_000),
    Release(0, 0, target=0, looked=True),  # the live releaser: claimed past b, read the index
    Release(1, 40),  # the stale releaser finishes: its lower claim lands
    Store(0, through=True),
]


@example(steps=RACED_STALE_CLAIM, upgrade=None, index_page=1_000)
@example(steps=RACED_STORE, upgrade=None, index_page=1_000)
@example(steps=RACED_RETRY, upgrade=None, index_page=1_000)
@settings(
    max_examples=200,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=STEPS, upgrade=UPGRADE, index_page=st.sampled_from([1, 2, 1_000]))
def test_no_interleaving_strands_a_stored_message(
    steps: list[Step], upgrade: list[int] | None, index_page: int
) -> None:
    saved_page = getattr(releaser_module, "INDEX_PAGE", None)
    if saved_page is not None:
        releaser_module.INDEX_PAGE = index_page
    busy = [step for step in steps if not isinstance(step, Idle)]
    note(f"steps (Idle left out)={busy!r} upgrade={upgrade!r} index_page={index_page}")
    race = Race(upgrade)
    try:
        for step in steps:
            race.play(step)
        race.settle()
    except BaseException:
        race.stop()
        raise
    finally:
        if saved_page is not None:
            releaser_module.INDEX_PAGE = saved_page

    released = race.w.published_ids()
    stranded = {
        m.message_id: race._bucket(m)
        for m in race.entered.values()
        if m.message_id not in released | race.direct
    }
    assert not stranded, f"stored, never released nor sent directly (id: bucket): {stranded}"
