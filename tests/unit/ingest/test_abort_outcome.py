"""An abort answers 200 only when the message will not be delivered.

The command certainly wins when Kafka acknowledged it by due - G (the dispatcher fires only with
a commands view fresh as of due - G). A slower abort (its writes took longer than the guard)
is answered from the dispatcher's own result of the attempt, here a fake lookup; manual clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from scheduler.clock import ManualClock
from scheduler.domain.status import Status
from scheduler.records import DeliveryOutcome, DeliveryResult
from scheduler.store.ports import LogEntry, StatusUpdate
from scheduler.testing.fakes import InMemoryMessageStore
from scheduler_ingest.outcomes import NOT_DELIVERED_SKIPS, decisive, not_delivered
from scheduler_releaser.dispatcher.verdict import SKIP_REASONS, Verdict

from .harness import SCHEDULING, T0, Harness

pytestmark = pytest.mark.unit

GUARD = SCHEDULING.cancel_guard_ms  # 200
DUE = T0 + 10_000
WAIT_MS = 5_000  # IngestSettings' default abort_outcome_wait_ms


class SlowAbortStore(InMemoryMessageStore):
    """A store whose ABORTED write takes `delay_ms` (a slow replica): the clock moves on."""

    def __init__(self, clock: ManualClock, delay_ms: int) -> None:
        super().__init__()
        self._clock = clock
        self._delay_ms = delay_ms

    def update_status(
        self, app_id: str, message_id: str, state: StatusUpdate, log: LogEntry
    ) -> None:
        super().update_status(app_id, message_id, state, log)
        if state.status is Status.ABORTED:
            self._clock.advance(self._delay_ms)


@dataclass
class FakeResults:
    """Answers with `result`; with None it "waits" until the deadline, as the real one does."""

    clock: ManualClock
    result: DeliveryResult | None = None
    asked: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    apps_asked: list[str] = field(default_factory=list)

    async def find(
        self,
        app_id: str,
        message_id: str,
        generation: int,
        attempt: int,
        since_ms: int,
        deadline_ms: int,
    ) -> DeliveryResult | None:
        self.apps_asked.append(app_id)
        self.asked.append((message_id, generation, attempt, since_ms, deadline_ms))
        if self.result is None:
            self.clock.set(max(self.clock.now_ms(), deadline_ms))
        return self.result

    def close(self) -> None:
        pass


def _result(message_id: str, outcome: DeliveryOutcome, error: str | None = None) -> DeliveryResult:
    return DeliveryResult(
        message_id=message_id,
        app_id="app-alice",
        generation=0,
        attempt=1,
        outcome=outcome,
        due_ms=DUE,
        finished_ms=DUE + 3,
        lateness_ms=3,
        http_status=200 if outcome is DeliveryOutcome.SENT else None,
        error=error,
    )


@dataclass
class Rig:
    h: Harness
    results: FakeResults
    message_id: str

    def abort(self) -> tuple[int, dict[str, str]]:
        r = self.h.client.put(f"/messages/{self.message_id}/abort", headers=self.h.alice.data)
        return r.status_code, r.json()

    def counted(self, outcome: str) -> float:
        value = self.h.registry.get_sample_value(
            "scheduler_ingest_abort_outcomes_total", {"outcome": outcome}
        )
        return value or 0.0


def _rig(
    write_delay_ms: int, result_outcome: DeliveryOutcome | None, error: str | None = None
) -> Rig:
    clock = ManualClock(T0)
    results = FakeResults(clock)
    h = Harness(clock=clock, messages=SlowAbortStore(clock, write_delay_ms), results=results)
    r = h.schedule({"payload": "p", "sendAt": DUE})
    assert r.status_code == 200, r.text
    message_id = str(r.json()["messageId"])
    if result_outcome is not None:
        results.result = _result(message_id, result_outcome, error)
    # Just outside the guard: the early too_late check lets the abort through.
    clock.set(DUE - GUARD - 50)
    return Rig(h, results, message_id)


@pytest.fixture
def closing() -> Iterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for h in made:
        h.close()


def test_a_slow_abort_the_dispatcher_beat_is_too_late_not_200(closing: list[Harness]) -> None:
    # The ABORTED write takes 150 ms: the command is acknowledged at due - 50 ms, after the
    # dispatcher's view was due to be fresh (due - G). It fired; its result says SENT.
    rig = _rig(150, DeliveryOutcome.SENT)
    closing.append(rig.h)
    status, body = rig.abort()
    assert (status, body.get("error")) == (409, "too_late"), body
    assert "delivered" in body["message"]
    assert rig.results.asked == [(rig.message_id, 0, 1, DUE - GUARD - 1_000, DUE + WAIT_MS)]
    assert rig.results.apps_asked == [rig.h.alice.app_id]
    assert rig.counted("too_late_delivered") == 1
    # The record writer will count the SENT result out of pending: the abort gave its -1 back.
    assert rig.h.usage.pending(rig.h.alice.app_id) == 1


def test_a_slow_abort_the_dispatcher_skipped_is_200(closing: list[Harness]) -> None:
    rig = _rig(150, DeliveryOutcome.SKIPPED, "aborted")
    closing.append(rig.h)
    status, body = rig.abort()
    assert status == 200 and body["status"] == "ABORTED", body
    assert [a[:3] for a in rig.results.asked] == [(rig.message_id, 0, 1)]
    assert rig.counted("confirmed_not_delivered") == 1
    assert rig.h.usage.pending(rig.h.alice.app_id) == 0


def test_a_slow_abort_whose_attempt_failed_and_will_retry_is_too_late(
    closing: list[Harness],
) -> None:
    # RETRY: the request went out (a 5xx or a timeout); the receiver may have it.
    rig = _rig(150, DeliveryOutcome.RETRY, "503")
    closing.append(rig.h)
    status, body = rig.abort()
    assert (status, body.get("error")) == (409, "too_late"), body
    assert "may have received it" in body["message"]
    assert rig.counted("too_late_delivered") == 1


def test_a_slow_abort_without_a_result_in_time_is_too_late_unconfirmed(
    closing: list[Harness],
) -> None:
    rig = _rig(150, None)
    closing.append(rig.h)
    status, body = rig.abort()
    assert (status, body.get("error")) == (409, "too_late"), body
    assert "could not be confirmed" in body["message"]
    assert rig.h.clock.now_ms() == DUE + WAIT_MS  # it waited for the bound, no longer
    assert rig.counted("unconfirmed") == 1
    # The record stays ABORTED (precedence: a SENT result would overwrite it).
    view = rig.h.messages.get(rig.h.alice.app_id, rig.message_id)
    assert view is not None and view.state.status is Status.ABORTED


def test_an_abort_slower_than_the_wait_still_reads_briefly(closing: list[Harness]) -> None:
    # Writes that end past due + wait: the lookup still gets a second to read what is there.
    rig = _rig(GUARD + 50 + WAIT_MS + 700, DeliveryOutcome.SKIPPED, "aborted")
    closing.append(rig.h)
    status, _ = rig.abort()
    assert status == 200
    assert rig.results.asked[0][4] == DUE + WAIT_MS + 700 + 1_000


def test_an_abort_acknowledged_before_due_minus_guard_is_200_without_asking(
    closing: list[Harness],
) -> None:
    rig = _rig(50, DeliveryOutcome.SENT)  # acknowledged at due - G exactly
    closing.append(rig.h)
    status, body = rig.abort()
    assert status == 200 and body["status"] == "ABORTED", body
    assert rig.results.asked == []
    assert rig.counted("certain") == 1


def test_the_not_delivered_skips_are_the_dispatchers_verdicts() -> None:
    assert {
        SKIP_REASONS[Verdict.ABORTED],
        SKIP_REASONS[Verdict.APP_DELETED],
        SKIP_REASONS[Verdict.APP_MISSING],
    } == NOT_DELIVERED_SKIPS


@pytest.mark.parametrize(
    ("outcome", "error", "is_decisive", "skipped_for_good"),
    [
        (DeliveryOutcome.SENT, None, True, False),
        (DeliveryOutcome.RETRY, "503", True, False),
        (DeliveryOutcome.FAILED, "404", True, False),
        (DeliveryOutcome.SKIPPED, "aborted", True, True),
        (DeliveryOutcome.SKIPPED, "app_deleted", True, True),
        (DeliveryOutcome.SKIPPED, "stale", False, False),
        (DeliveryOutcome.SKIPPED, "done", False, False),
    ],
)
def test_which_results_settle_an_abort(
    outcome: DeliveryOutcome, error: str | None, is_decisive: bool, skipped_for_good: bool
) -> None:
    result = _result("m", outcome, error)
    assert (decisive(result), not_delivered(result)) == (is_decisive, skipped_for_good)
