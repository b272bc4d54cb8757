"""The checker on synthetic facts: a clean run passes, and each violation kind is detected (a
checker that cannot fail proves nothing)."""

from __future__ import annotations

import pytest

from chaos.checker import AbortAnswer, Acked, Facts, FaultSpan, check, fault_stats
from scheduler.testing.receiver import Arrival

pytestmark = pytest.mark.unit

T0 = 1_800_000_000_000


def clean() -> Facts:
    """Two messages delivered on time, one aborted with a 200 and not delivered, a flaky one
    refused three times then redriven and accepted, a keyed one answered twice the same."""
    return Facts(
        acked=[
            Acked("r1", "rest", T0 + 1_000, T0),
            Acked("k1", "kafka", T0 + 2_000, T0),
            Acked("a1", "rest", T0 + 5_000, T0),
            Acked("f1", "rest", T0 + 1_000, T0, flaky=True),
        ],
        aborts=[AbortAnswer("a1", 200, T0 + 4_000)],
        arrivals=[
            Arrival("r1", T0 + 1_010, 1, "rest"),
            Arrival("k1", T0 + 2_020, 0, "kafka"),
            *(Arrival("f1", T0 + 1_000 + i * 200, i + 1, "rest", 500) for i in range(3)),
            Arrival("f1", T0 + 9_000, 1, "rest", 204),
        ],
        statuses={"r1": "SENT", "k1": "SENT", "a1": "ABORTED", "f1": "SENT"},
        faults=[],
        idempotency={"app/key": {"r1"}},
        redriven={"f1"},
    )


def test_a_clean_run_passes() -> None:
    verdict = check(clean())
    assert verdict.ok, verdict.violations
    assert verdict.delivered == 3
    assert verdict.http_duplicates == 0
    # the redriven flaky message is out of the lateness figures (due again at its redrive)
    assert verdict.lateness == [(T0 + 1_000, 10), (T0 + 2_000, 20)]


def test_a_message_never_delivered_is_lost() -> None:
    facts = clean()
    facts.arrivals = [a for a in facts.arrivals if a.message_id != "k1"]
    verdict = check(facts)
    assert verdict.lost == ["k1"] and not verdict.ok


def test_an_abort_without_a_clear_answer_is_lost_unless_the_record_says_aborted() -> None:
    facts = clean()
    facts.aborts.append(AbortAnswer("r1", 0, T0 + 500))
    facts.arrivals = [a for a in facts.arrivals if a.message_id != "r1"]
    facts.statuses["r1"] = "ABORTED"
    assert check(facts).lost == []
    facts.statuses["r1"] = "SENT"
    assert check(facts).lost == ["r1"]


def test_a_delivery_before_send_at_is_early() -> None:
    facts = clean()
    facts.arrivals.append(Arrival("r1", T0 + 999, 2, "rest"))
    verdict = check(facts)
    assert verdict.early == ["r1"] and not verdict.ok


def test_a_refused_delivery_before_send_at_is_early_too() -> None:
    facts = clean()
    facts.arrivals.append(Arrival("f1", T0 + 999, 1, "rest", 500))
    assert check(facts).early == ["f1"]


def test_a_second_kafka_delivery_is_a_violation_and_a_second_http_one_is_only_counted() -> None:
    facts = clean()
    facts.faults = [FaultSpan("kill9", "dispatcher", T0 + 1_500, T0 + 3_000)]
    facts.arrivals += [Arrival("k1", T0 + 2_500, 0, "kafka"), Arrival("r1", T0 + 2_600, 1, "rest")]
    verdict = check(facts)
    assert verdict.kafka_duplicates == ["k1"] and not verdict.ok
    assert verdict.http_duplicates == 1
    assert verdict.http_duplicates_by_fault == {f"kill9 dispatcher @{T0 + 1_500}": 1}
    assert verdict.faults[0].http_duplicates == 1


def test_an_http_duplicate_is_explained_by_the_dispatcher_stop_between_its_two_deliveries() -> None:
    """Seed 2027: 280 deliveries made while a dispatcher could not commit (its transaction
    coordinator loading), delivered again after its kill -9 and restart; the second deliveries
    fell in a later fault's window (an ingest pause), which they were counted against."""
    facts = clean()
    kill = FaultSpan("kill9", "dispatcher-1-of-3-s1", T0 + 1_500, T0 + 3_000)
    facts.faults = [
        FaultSpan("kafka_kill", "kafka-3", T0 + 500, T0 + 1_400),
        kill,
        FaultSpan("pause", "ingest-2", T0 + 4_000, T0 + 5_000),
        FaultSpan("kill9", "bucketer", T0 + 8_000, T0 + 8_500),
    ]
    facts.acked.append(Acked("t1", "rest", T0 + 8_000, T0))
    facts.arrivals += [
        Arrival("r1", T0 + 4_500, 1, "rest"),  # first at +1,010: the kill lies between
        Arrival("f1", T0 + 9_100, 1, "rest"),  # first at +9,000: nothing ended a dispatcher
        # answered 2xx, but too late for the dispatcher: retried as attempt 2
        Arrival("t1", T0 + 8_100, 1, "rest"),
        Arrival("t1", T0 + 9_300, 2, "rest"),
    ]
    facts.statuses["t1"] = "SENT"
    verdict = check(facts)
    assert verdict.ok and verdict.http_duplicates == 3
    assert verdict.http_duplicates_by_fault == {
        f"kill9 dispatcher-1-of-3-s1 @{T0 + 1_500}": 1,
        "retried: the answer not seen in time": 1,
        "unexplained": 1,
    }
    assert [f.http_duplicates for f in verdict.faults] == [0, 1, 0, 0]


def test_a_rolling_restart_explains_a_duplicate_first_delivered_during_it() -> None:
    facts = clean()
    facts.faults = [FaultSpan("rolling_restart", "dispatcher", T0 + 1_000, T0 + 40_000)]
    facts.arrivals.append(Arrival("r1", T0 + 21_000, 1, "rest"))  # first at +1,010
    verdict = check(facts)
    assert verdict.http_duplicates_by_fault == {f"rolling_restart dispatcher @{T0 + 1_000}": 1}
    # killed before the first delivery was even sent (received 2 s after the kill)
    facts.faults = [FaultSpan("kill9", "dispatcher-0-of-2", T0 - 990, T0 + 5_000)]
    assert check(facts).http_duplicates_by_fault == {"unexplained": 1}


def test_a_delivery_in_flight_at_a_kill_and_delivered_again_is_explained_by_it() -> None:
    """Seed 2029: two deliveries received 17 ms after a dispatcher's kill -9 was sent (their
    requests were in flight: the receiver stamps them when it reads them) and again after its
    restart were reported unexplained."""
    facts = clean()
    kill = FaultSpan("kill9", "dispatcher-0-of-1-s3", T0 + 993, T0 + 15_000)
    facts.faults = [kill]
    facts.arrivals.append(Arrival("r1", T0 + 15_100, 1, "rest"))  # first at +1,010
    verdict = check(facts)
    assert verdict.http_duplicates_by_fault == {f"kill9 dispatcher-0-of-1-s3 @{T0 + 993}": 1}


def test_refused_http_attempts_are_not_duplicates() -> None:
    assert check(clean()).http_duplicates == 0


def test_a_delivery_after_an_abort_answered_200_is_a_violation() -> None:
    facts = clean()
    facts.arrivals.append(Arrival("a1", T0 + 5_001, 1, "rest"))
    verdict = check(facts)
    assert verdict.delivered_after_abort == ["a1"] and not verdict.ok


def test_an_abort_answered_409_may_be_delivered() -> None:
    facts = clean()
    facts.aborts = [AbortAnswer("a1", 409, T0 + 4_900)]
    facts.arrivals.append(Arrival("a1", T0 + 5_001, 1, "rest"))
    facts.statuses["a1"] = "SENT"
    assert check(facts).ok


@pytest.mark.parametrize("status", ["READY", "QUEUED", None])
def test_a_record_not_terminal_or_unreadable_at_the_end_is_a_violation(status: str | None) -> None:
    facts = clean()
    facts.statuses["r1"] = status
    verdict = check(facts)
    assert verdict.not_terminal == ["r1"] and not verdict.ok


def test_one_idempotency_key_answered_with_two_ids_is_a_violation() -> None:
    facts = clean()
    facts.idempotency["app/key"] = {"r1", "k1"}
    verdict = check(facts)
    assert verdict.idempotency_split == ["app/key"] and not verdict.ok


def test_worst_lateness_and_time_back_to_steady_per_fault() -> None:
    # 10 ms late before the fault, 3 s late while it lasts, back to 10 ms 4 s after the heal
    lateness = [(T0 + ms, 10) for ms in range(0, 30_000, 100)]
    fault_at, healed = T0 + 30_000, T0 + 35_000
    lateness += [(T0 + ms, 3_000) for ms in range(30_000, 39_000, 100)]
    lateness += [(T0 + ms, 10) for ms in range(39_000, 60_000, 100)]
    [stats] = fault_stats(lateness, [FaultSpan("pause", "releaser", fault_at, healed)], [])
    assert stats.worst_lateness_ms == 3_000
    assert stats.baseline_p99_ms == 10
    assert stats.steady_after_heal_ms == 4_000


def test_a_fault_never_recovered_from_says_so() -> None:
    lateness = [(T0 + ms, 10) for ms in range(0, 30_000, 100)]
    lateness += [(T0 + ms, 3_000) for ms in range(30_000, 60_000, 100)]
    kill = FaultSpan("kafka_kill", "kafka", T0 + 30_000, T0 + 35_000)
    [stats] = fault_stats(lateness, [kill], [])
    assert stats.steady_after_heal_ms is None


def test_a_fault_during_a_backlog_is_steady_only_when_the_backlog_is_gone() -> None:
    # steady at 10 ms before the first fault; after it, 20 s late for a long while, and the
    # second fault comes in the middle of that backlog: its 30 s before are 20 s late, so
    # against those alone it would read "steady at once"
    lateness = [(T0 + ms, 10) for ms in range(0, 30_000, 100)]
    lateness += [(T0 + ms, 20_000) for ms in range(30_000, 100_000, 100)]
    lateness += [(T0 + ms, 10) for ms in range(100_000, 120_000, 100)]
    first = FaultSpan("kafka_kill", "kafka", T0 + 30_000, T0 + 35_000)
    second = FaultSpan("pause", "ingest", T0 + 70_000, T0 + 72_000)
    _, stats = fault_stats(lateness, [first, second], [])
    assert stats.baseline_p99_ms == 10  # the steady state before any fault, not the backlog
    assert stats.steady_after_heal_ms == 100_000 - 72_000


def test_one_good_window_between_bad_ones_is_not_back_to_steady() -> None:
    # after the heal: 6 s of on-time deliveries, then 6 s late for 10 s (a restarted
    # dispatcher taking over), then on time for good from 16 s after the heal
    lateness = [(T0 + ms, 10) for ms in range(0, 30_000, 100)]
    fault_at, healed = T0 + 30_000, T0 + 35_000
    lateness += [(T0 + ms, 3_000) for ms in range(30_000, 35_000, 100)]
    lateness += [(T0 + ms, 10) for ms in range(35_000, 41_000, 100)]
    lateness += [(T0 + ms, 6_000) for ms in range(41_000, 51_000, 100)]
    lateness += [(T0 + ms, 10) for ms in range(51_000, 90_000, 100)]
    [stats] = fault_stats(lateness, [FaultSpan("kill9", "dispatcher", fault_at, healed)], [])
    assert stats.steady_after_heal_ms == 16_000


def test_the_warm_up_baseline_is_its_last_minute_not_the_cold_start() -> None:
    # the first 60 s of load 8 s late (cold JVMs), the next 60 s 100 ms; a fault comes while
    # its predecessor's backlog (5 s) lasts: its bound is twice the warm-up's last minute
    lateness = [(T0 + ms, 8_000) for ms in range(0, 60_000, 100)]
    lateness += [(T0 + ms, 100) for ms in range(60_000, 120_000, 100)]
    lateness += [(T0 + ms, 5_000) for ms in range(120_000, 200_000, 100)]
    lateness += [(T0 + ms, 150) for ms in range(200_000, 260_000, 100)]
    first = FaultSpan("kill9", "bucketer", T0 + 120_000, T0 + 125_000)
    second = FaultSpan("pause", "ingest", T0 + 160_000, T0 + 165_000)
    _, stats = fault_stats(lateness, [first, second], [])
    assert stats.baseline_p99_ms == 100
    assert stats.steady_after_heal_ms == 200_000 - 165_000


def test_a_fault_not_back_to_steady_says_how_long_it_was_watched() -> None:
    lateness = [(T0 + ms, 10) for ms in range(0, 30_000, 100)]
    lateness += [(T0 + ms, 3_000) for ms in range(30_000, 200_000, 100)]
    kill = FaultSpan("kafka_kill", "kafka", T0 + 30_000, T0 + 35_000)
    nxt = FaultSpan("pause", "ingest", T0 + 125_000, T0 + 127_000)
    stats, _ = fault_stats(lateness, [kill, nxt], [])
    assert stats.steady_after_heal_ms is None
    # windows of 5 s, held 10 s, ending before the next fault: a steady point by 75 s
    assert stats.watched_ms == 125_000 - 35_000 - 5_000 - 10_000
