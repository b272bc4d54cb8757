"""Release races, step by step: a store and a release tick interleaved at chosen points.

The real `Releaser.tick()` runs in a thread that stops before and after every call it makes to
the bucket store (and before every ring flush); the test decides what happens at each stop. The
stores are the real bucketer `Placer` (its writes made durable only when the test says so, then
its re-check) and the real dispatcher (`Dispatcher._reschedule_via_ring`, reached through a
failed REST delivery), each on the same in-memory stores and a ManualClock.

The invariant, after a last quiescent tick far in the future: every message that was stored was
released into the ring by a releaser, or sent directly by whoever stored it. The stranding the
claim fixes: a row that becomes durable while its bucket is being released (after the listing,
or in a partition already read and then dropped) and whose re-check happens before the releaser
moves past the bucket.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import httpx
import pytest
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.domain.buckets import bucket_start
from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.store.ports import BucketStore, LogEntry, MessageContent, StatusUpdate
from scheduler.testing.fakes import InMemoryApps, InMemoryBucketStore, InMemoryMessageStore
from scheduler_bucketer.metrics import BucketerMetrics
from scheduler_bucketer.placer import Entry, Outbox, Placer
from scheduler_bucketer.routing import Router
from scheduler_bucketer.writer import SaveRecord, StoreRow, WriteOp, WriteStatus
from scheduler_releaser.dispatcher.apps import AppCache
from scheduler_releaser.dispatcher.core import Dispatcher
from scheduler_releaser.dispatcher.httpx_post import HttpxPost
from scheduler_releaser.dispatcher.outbound import OutboundGuard
from scheduler_releaser.dispatcher.rest import RestDeliverer
from scheduler_releaser.dispatcher.timers import Position
from scheduler_releaser.metrics import DispatchMetrics, ReleaseMetrics
from scheduler_releaser.releaser.core import Releaser
from scheduler_releaser.settings import DispatchSettings

from .harness import (
    CODECS,
    KAFKA,
    REST_APP,
    SCHEDULING,
    TOPICS,
    InlineExecutor,
    KnownTopics,
    LiveView,
    ManualSleep,
    RecordingSink,
    RecordsWritten,
    public_resolver,
)

pytestmark = pytest.mark.unit
WIDTH = SCHEDULING.bucket_width_ms
LOOKAHEAD = SCHEDULING.lookahead_ms
APP_A = REST_APP
APP_B = replace(REST_APP, app_id="app-b")
STUCK_S = 10.0  # a paused actor that does not reach its next stop within this is a test bug
BOTH = ("call", "done")


# -- stepping a real actor from stop to stop -------------------------------------------------


class Stop(NamedTuple):
    """Where a paused actor stands: before ("call") or after ("done") a call."""

    name: str
    args: tuple[Any, ...]
    phase: str


class Crash(BaseException):
    """Raised inside a paused actor to end it where it stands (a kill -9). A BaseException, so
    no `except Exception` of the product code can swallow it."""


class Stepper:
    """Runs `target` in a thread that stops at every `checkpoint` until it is told to go on.

    Exactly one side runs at a time (the test or the thread), so every interleaving is
    deterministic. `crash()` ends the thread at its current stop."""

    def __init__(self, target: Callable[[], object]) -> None:
        self._target = target
        self._go = threading.Semaphore(0)
        self._paused = threading.Semaphore(0)
        self._crash = False
        self.at: Stop | None = None
        self.done = False
        self.crashed = False
        self.result: object = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.result = self._target()
        except Crash:
            self.crashed = True
        except BaseException as exc:  # surfaced in the test's thread by _wait
            self._error = exc
        finally:
            self.at = None
            self.done = True
            self._paused.release()

    def checkpoint(self, stop: Stop) -> None:
        """Called by the actor (from any of its threads): stop here until told to go on."""
        self.at = stop
        self._paused.release()
        self._go.acquire()
        if self._crash:
            raise Crash

    def start(self) -> Stepper:
        self._thread.start()
        self._wait()
        return self

    def step(self) -> None:
        """Let the actor run to its next stop (or to its end)."""
        if not self.done:
            self._go.release()
            self._wait()

    def run_until(self, wanted: Callable[[Stop], bool], *, or_end: bool = False) -> None:
        while not self.done and not (self.at is not None and wanted(self.at)):
            self.step()
        if self.done and not or_end:
            raise AssertionError("the actor ended before the wanted stop")

    def finish(self) -> object:
        while not self.done:
            self.step()
        self._thread.join(STUCK_S)
        return self.result

    def crash(self) -> None:
        if not self.done:
            self._crash = True
            self._go.release()
            self._wait()
        self._thread.join(STUCK_S)

    def _wait(self) -> None:
        if not self._paused.acquire(timeout=STUCK_S):
            raise AssertionError(f"the actor did not reach its next stop (last: {self.at})")
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def before(name: str, bucket: int | None = None) -> Callable[[Stop], bool]:
    return lambda s: s.phase == "call" and s.name == name and _in(bucket, s)


def after(name: str, bucket: int | None = None) -> Callable[[Stop], bool]:
    return lambda s: s.phase == "done" and s.name == name and _in(bucket, s)


def _in(bucket: int | None, stop: Stop) -> bool:
    return bucket is None or (bool(stop.args) and stop.args[0] == bucket)


def looked_for(bucket: int) -> Callable[[Stop], bool]:
    """Right after the releaser looked for the bucket's rows: its index read (a range that
    covers the bucket) or, where there is no index (the previous version), its listing."""

    def wanted(s: Stop) -> bool:
        if s.phase != "done":
            return False
        if s.name == "stored_buckets":
            return bool(s.args[0] <= bucket < s.args[1])
        return s.name == "partitions" and s.args[0] == bucket

    return wanted


class HookedBuckets:
    """One actor's view of the shared bucket store: every call stops at a checkpoint before it
    runs and after it returned. `read` is consumed inside the call, so "after read" means the
    partition was read."""

    def __init__(
        self,
        inner: InMemoryBucketStore,
        checkpoint: Callable[[Stop], None],
        phases: Sequence[str] = BOTH,
    ) -> None:
        self._inner = inner
        self._checkpoint = checkpoint
        self._phases = tuple(phases)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any) -> Any:
            if "call" in self._phases:
                self._checkpoint(Stop(name, args, "call"))
            result = attr(*args)
            if name == "read":
                result = iter(list(result))
            if "done" in self._phases:
                self._checkpoint(Stop(name, args, "done"))
            return result

        return call


class RingPublisher:
    """A releaser's ring producer: a chunk is in the ring once its flush (the transaction
    commit) went through; a crash at the flush stop loses the chunk (an aborted transaction)."""

    def __init__(self, published: list[DueMessage], checkpoint: Callable[[Stop], None]) -> None:
        self._published = published
        self._checkpoint = checkpoint
        self._queued: list[DueMessage] = []

    def publish(self, message: DueMessage, now_ms: int) -> None:
        self._queued.append(message)

    def flush(self) -> None:
        self._checkpoint(Stop("flush", (len(self._queued),), "call"))
        self._published += self._queued
        self._queued.clear()


# -- the actors ------------------------------------------------------------------------------


class World:
    """The shared stores and clock, and what reached the ring."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.clock = ManualClock() if start_ms is None else ManualClock(start_ms)
        self.buckets = InMemoryBucketStore()
        self.messages = InMemoryMessageStore()
        self.apps = InMemoryApps(APP_A, APP_B)
        self.published: list[DueMessage] = []  # committed to the ring by a releaser
        self._ids = itertools.count()

    def message(self, due_ms: int, app_id: str = APP_A.app_id, attempt: int = 1) -> DueMessage:
        n = next(self._ids)
        return DueMessage(
            message_id=f"01J{n:023d}",
            app_id=app_id,
            generation=0,
            attempt=attempt,
            due_ms=due_ms,
            send_at_ms=due_ms,
            created_ms=self.clock.now_ms(),
            payload_json=f'{{"n": {n}}}',
        )

    def releaser(self, phases: Sequence[str] = BOTH) -> ReleaserActor:
        return ReleaserActor(self, phases)

    def bucketer(self) -> BucketerActor:
        return BucketerActor(self)

    def tick(self) -> None:
        """One whole release tick by a releaser nobody pauses."""
        self.releaser().releaser.tick()

    def quiesce(self, beyond_ms: int = 0) -> None:
        """The last tick, by a new releaser, once every stored message is long due."""
        self.clock.set(max(self.clock.now_ms(), beyond_ms) + 10 * LOOKAHEAD + 60_000)
        self.tick()

    def published_ids(self) -> set[str]:
        return {m.message_id for m in self.published}

    def record(self, message: DueMessage, status: Status) -> None:
        self.messages.save(
            content_of(message),
            StatusUpdate(status, message.generation, message.attempt, message.due_ms, 0),
            LogEntry(0, "test", status),
        )


def content_of(m: DueMessage) -> MessageContent:
    return MessageContent(
        app_id=m.app_id,
        message_id=m.message_id,
        payload_json=m.payload_json,
        send_at_ms=m.send_at_ms,
        created_ms=m.created_ms,
    )


class ReleaserActor:
    """A releaser replica: a real `Releaser` whose tick runs in a `Stepper`, stopping around
    every bucket-store call and before every ring flush."""

    def __init__(self, world: World, phases: Sequence[str] = BOTH) -> None:
        self.stepper: Stepper | None = None
        buckets: Any = HookedBuckets(world.buckets, self._checkpoint, phases)
        self.releaser = Releaser(
            clock=world.clock,
            scheduling=SCHEDULING,
            buckets=buckets,
            messages=world.messages,
            apps=world.apps,
            publisher=RingPublisher(world.published, self._checkpoint),
            writers=InlineExecutor(),
            metrics=ReleaseMetrics(CollectorRegistry()),
            initial_backfill_ms=10_000,
        )

    def _checkpoint(self, stop: Stop) -> None:
        if self.stepper is not None:
            self.stepper.checkpoint(stop)

    @property
    def running(self) -> bool:
        return self.stepper is not None and not self.stepper.done

    def start(self) -> Stepper:
        assert not self.running
        self.stepper = Stepper(self.releaser.tick)
        return self.stepper.start()


class GatedWriter:
    """The bucketer's Writer, whose submitted writes become durable only when the test says
    so (`make_durable`), or when the placer drains it (it waits for durability)."""

    def __init__(self, messages: InMemoryMessageStore, buckets: BucketStore) -> None:
        self._messages = messages
        self._buckets = buckets
        self._queued: list[WriteOp] = []

    def submit(self, ops: Sequence[WriteOp]) -> None:
        self._queued += ops

    def make_durable(self) -> None:
        ops, self._queued = self._queued, []
        for op in ops:
            if isinstance(op, SaveRecord):
                self._messages.save(op.content, op.state, op.log)
            elif isinstance(op, WriteStatus):
                self._messages.update_status(op.app_id, op.message_id, op.state, op.log)
            else:
                assert isinstance(op, StoreRow)
                self._buckets.store(op.bucket_ms, op.shard, op.message)

    @property
    def queued(self) -> bool:
        """Some submitted write is not durable yet."""
        return bool(self._queued)

    def drain(self) -> None:
        self.make_durable()

    def close(self) -> None:
        pass


class BucketerActor:
    """The real bucketer `Placer` (and `Router`) in three separately driven steps: route (and
    submit the writes), make them durable, re-check (`Placer.finish`)."""

    def __init__(self, world: World, cache_ms: int = 0) -> None:
        self.writer = GatedWriter(world.messages, world.buckets)
        router = Router(world.buckets, SCHEDULING, TOPICS.ring, world.clock, cache_ms)
        self.placer = Placer(router, self.writer, world.clock, BucketerMetrics(CollectorRegistry()))
        self.outbox = Outbox()
        self.pending: list[Entry] = []

    def route(self, messages: Iterable[DueMessage], shards: int = 1) -> bool:
        """Route and submit; True if anything is to be stored (and re-checked)."""
        entries = [Entry(m, shards, "scheduled", m.created_ms, content_of(m)) for m in messages]
        self.pending = self.placer.submit(entries, self.outbox)
        return bool(self.pending)

    def make_durable(self) -> None:
        self.writer.make_durable()

    def recheck(self) -> None:
        self.placer.finish(self.pending, self.outbox)
        self.pending = []

    def place(self, messages: Iterable[DueMessage], shards: int = 1) -> None:
        self.route(messages, shards)
        self.make_durable()
        self.recheck()

    def sent_directly(self) -> set[str]:
        return {m.message_id for _, m in self.outbox.direct}


class DispatcherActor:
    """A real dispatcher on the shared stores, its bucket-store calls stopping at checkpoints;
    every REST delivery fails with a 500, so every attempt is settled with a retry."""

    def __init__(
        self, world: World, backoff_base_ms: int = 60_000, phases: Sequence[str] = BOTH
    ) -> None:
        self.world = world
        self.stepper: Stepper | None = None
        clock = world.clock
        commands = LiveView(clock.now_ms())
        transport = httpx.MockTransport(lambda request: httpx.Response(500))
        client = httpx.AsyncClient(transport=transport, follow_redirects=False)
        self.sink = RecordingSink(clock=clock)
        buckets: Any = HookedBuckets(world.buckets, self._checkpoint, phases)
        self.dispatcher = Dispatcher(
            clock=clock,
            kafka=KAFKA,
            scheduling=SCHEDULING,
            settings=DispatchSettings(
                max_attempts=3, backoff_base_ms=backoff_base_ms, prefetch_ms=0
            ),
            states=world.messages,  # the fake is its own StatusReader
            buckets=buckets,
            apps=AppCache(world.apps, clock, ttl_ms=0),
            commands=commands,
            rest=RestDeliverer(HttpxPost(client), OutboundGuard(False, public_resolver), clock, 4),
            topic_check=KnownTopics(),
            sink=self.sink,
            codecs=CODECS,
            metrics=DispatchMetrics(CollectorRegistry()),
            records=RecordsWritten(clock),
            sleep=ManualSleep(clock),
            reads=InlineExecutor(),
        )

    def _checkpoint(self, stop: Stop) -> None:
        if self.stepper is not None:
            self.stepper.checkpoint(stop)

    def fire(self, message: DueMessage) -> Stepper:
        """Deliver `message` (due now) through the public path: accept, then fire_due."""
        self.world.record(message, Status.QUEUED)
        self.dispatcher.accept(message, Position("ring", 0, 1))
        self.stepper = Stepper(lambda: asyncio.run(self.dispatcher.fire_due()))
        return self.stepper.start()

    def reschedule(self, retry: DueMessage, shards: int | None) -> Stepper:
        """Place one retry (store, re-check): True means the dispatcher sends it to the ring."""
        coroutine = self.dispatcher._reschedule_via_ring
        self.stepper = Stepper(lambda: asyncio.run(coroutine(retry, shards)))
        return self.stepper.start()

    def returned_for_the_ring(self) -> set[tuple[str, int]]:
        return {(m.message_id, m.attempt) for m in self.sink.retries()}


# -- a. a store lands after the listing of its bucket ----------------------------------------


def far_bucket(w: World) -> int:
    """A bucket well beyond the claim (and its margin) now: messages due in it are stored."""
    return bucket_start(w.clock.now_ms() + 30_000, WIDTH)


@pytest.mark.parametrize("recheck", ["at once", "after the releaser dropped b's partition"])
def test_a_store_durable_after_the_listing_is_released_or_sent_directly(recheck: str) -> None:
    w = World()
    w.tick()  # a current releaser: claimed up to now + look-ahead
    b = far_bucket(w)
    sibling = w.message(b + 100, APP_B.app_id)
    w.bucketer().place([sibling])  # so b is indexed and listed: (b, app-b, 0)
    m = w.message(b + 200)  # its partition (b, app-a, 0) is not listed yet
    bucketer = w.bucketer()
    assert bucketer.route([m])  # stored: b is far beyond the claim

    w.clock.set(b - LOOKAHEAD // 2)  # b is due within the look-ahead now
    releaser = w.releaser().start()
    releaser.run_until(after("partitions", b))
    bucketer.make_durable()
    if recheck != "at once":
        releaser.run_until(after("drop_partition", b))
    bucketer.recheck()
    releaser.finish()
    w.quiesce(b)

    assert m.message_id in w.published_ids() | bucketer.sent_directly()
    assert sibling.message_id in w.published_ids()


def test_a_store_durable_after_the_releaser_looked_for_its_empty_bucket() -> None:
    """Nothing else in b: the releaser's index read (or listing) finds it empty."""
    w = World()
    w.tick()
    b = far_bucket(w)
    m = w.message(b + 200)
    bucketer = w.bucketer()
    assert bucketer.route([m])

    w.clock.set(b - LOOKAHEAD // 2)
    releaser = w.releaser().start()
    releaser.run_until(looked_for(b))
    bucketer.make_durable()
    bucketer.recheck()
    releaser.finish()
    w.quiesce(b)

    assert m.message_id in w.published_ids() | bucketer.sent_directly()


# -- b. a store lands in a partition already read, which is then dropped ---------------------


@pytest.mark.parametrize("recheck", ["before the drop", "after the drop"])
def test_b_store_into_a_partition_already_read_then_dropped(recheck: str) -> None:
    w = World()
    w.tick()
    b = far_bucket(w)
    sibling = w.message(b + 100)
    w.bucketer().place([sibling])  # partition (b, app-a, 0)
    m = w.message(b + 200)  # the same partition
    bucketer = w.bucketer()
    assert bucketer.route([m])

    w.clock.set(b - LOOKAHEAD // 2)
    releaser = w.releaser().start()
    releaser.run_until(after("read", b))
    bucketer.make_durable()  # lands in the partition the releaser has read
    if recheck == "after the drop":
        releaser.run_until(after("drop_partition", b))
    bucketer.recheck()
    releaser.finish()
    w.quiesce(b)

    assert m.message_id in w.published_ids() | bucketer.sent_directly()
    assert sibling.message_id in w.published_ids()


# -- c. a dispatcher retry stored while its bucket is released -------------------------------


@pytest.mark.parametrize("lands", ["after the listing", "after the read of its partition"])
def test_c_dispatcher_retry_stored_while_its_bucket_is_released(lands: str) -> None:
    w = World()
    w.tick()
    dispatcher = DispatcherActor(w)  # a failed attempt is retried ~60 s later
    m = w.message(w.clock.now_ms())
    d = dispatcher.fire(m)
    d.run_until(before("store"))  # placed (claim read, STORE): about to store the retry
    assert d.at is not None
    b, shard, retry = d.at.args
    assert (retry.message_id, retry.attempt) == (m.message_id, 2)
    assert b >= bucket_start(w.clock.now_ms() + LOOKAHEAD + SCHEDULING.placement_margin_ms, WIDTH)
    if lands == "after the listing":  # stored earlier in another partition of b
        sibling = w.message(b + 1, APP_B.app_id)
    else:  # stored earlier in the retry's partition
        sibling = w.message(b + 1, m.app_id)
    w.record(sibling, Status.READY)
    w.buckets.store(b, shard, sibling)

    w.clock.set(b - LOOKAHEAD // 2)
    releaser = w.releaser().start()
    if lands == "after the listing":
        releaser.run_until(after("partitions", b))
    else:
        releaser.run_until(after("read", b))
    d.finish()  # the retry is stored, the claim re-read, the attempt settled
    releaser.finish()
    w.quiesce(b)

    released = {(x.message_id, x.attempt) for x in w.published}
    assert (m.message_id, 2) in released | dispatcher.returned_for_the_ring()
    assert sibling.message_id in w.published_ids()


# -- d. a stale second releaser --------------------------------------------------------------


@pytest.mark.parametrize(
    "paused_before", ["claim", "stored_buckets", "partitions", "advance_watermark", "forget_day"]
)
def test_d_stale_releaser_resuming_between_the_live_listing_and_the_store(
    paused_before: str,
) -> None:
    """The stale releaser started long ago (its claim is below b) and is paused; the live one
    claims past b and lists it; the stale one resumes and finishes (its claim, listings and
    watermark land now); then m lands in b and re-checks; the live one finishes."""
    w = World()
    w.tick()
    b = far_bucket(w)
    sibling = w.message(b + 100, APP_B.app_id)
    w.bucketer().place([sibling])
    early = w.message(b - 9_500)  # a bucket the stale releaser's tick covers
    w.bucketer().place([early])
    m = w.message(b + 200)
    bucketer = w.bucketer()
    assert bucketer.route([m])

    w.clock.set(b - 12_000)  # the stale releaser claims up to b - 8 s
    stale = w.releaser().start()
    stale.run_until(before(paused_before), or_end=True)
    w.clock.set(b - LOOKAHEAD // 2)
    live = w.releaser().start()
    live.run_until(after("partitions", b))
    stale.finish()
    bucketer.make_durable()
    bucketer.recheck()
    live.finish()
    w.quiesce(b)

    assert m.message_id in w.published_ids() | bucketer.sent_directly()
    assert {sibling.message_id, early.message_id} <= w.published_ids()


@pytest.mark.parametrize("stale_paused", ["after its read of b", "before its drop of b"])
def test_d_stale_releaser_paused_inside_b_while_the_live_one_releases_it(stale_paused: str) -> None:
    """Both releasers work on b; m lands in the partition after the live releaser read it and
    re-checks before the live releaser moves on; the stale one drops the partition last."""
    w = World()
    w.tick()
    b = far_bucket(w)
    sibling = w.message(b + 100)
    w.bucketer().place([sibling])  # partition (b, app-a, 0)
    m = w.message(b + 200)
    bucketer = w.bucketer()
    assert bucketer.route([m])

    w.clock.set(b - LOOKAHEAD // 2)
    stale = w.releaser().start()
    if stale_paused == "after its read of b":
        stale.run_until(after("read", b))
    else:
        stale.run_until(before("drop_partition", b))
    w.clock.advance(WIDTH)
    live = w.releaser().start()
    live.run_until(after("read", b))
    bucketer.make_durable()
    bucketer.recheck()
    live.finish()
    stale.finish()
    w.quiesce(b)

    assert m.message_id in w.published_ids() | bucketer.sent_directly()
    assert sibling.message_id in w.published_ids()


def test_d_stale_releaser_dropping_b_after_the_live_one_passed_it() -> None:
    """The stale releaser read b's partition and stops before dropping it; the live one
    releases b and moves past it; m lands in that partition, re-checks, and the stale releaser
    then drops the partition with m's row in it."""
    w = World()
    w.tick()
    b = far_bucket(w)
    sibling = w.message(b + 100)
    w.bucketer().place([sibling])
    m = w.message(b + 200)
    bucketer = w.bucketer()
    assert bucketer.route([m])

    w.clock.set(b - LOOKAHEAD // 2)
    stale = w.releaser().start()
    stale.run_until(before("drop_partition", b))
    w.clock.advance(WIDTH)
    live = w.releaser().start()
    live.finish()
    bucketer.make_durable()
    bucketer.recheck()
    stale.finish()
    w.quiesce(b)

    assert m.message_id in w.published_ids() | bucketer.sent_directly()


def test_a_crashed_releaser_leaves_nothing_behind_for_its_successor() -> None:
    """A releaser killed after its claim and listing, before it read b: the next releaser (a
    new instance on the same stores) still releases b; m, which landed meanwhile, is either
    released or was sent directly."""
    w = World()
    w.tick()
    b = far_bucket(w)
    sibling = w.message(b + 100, APP_B.app_id)
    w.bucketer().place([sibling])
    m = w.message(b + 200)
    bucketer = w.bucketer()
    assert bucketer.route([m])

    w.clock.set(b - LOOKAHEAD // 2)
    first = w.releaser().start()
    first.run_until(after("partitions", b))
    bucketer.make_durable()
    bucketer.recheck()
    first.crash()
    assert first.crashed
    w.releaser().start().finish()
    w.quiesce(b)

    assert m.message_id in w.published_ids() | bucketer.sent_directly()
    assert sibling.message_id in w.published_ids()
