"""The six sections of the suite, each a function of the running World and a Profile, returning
plain data for results.json (and the raw series the plots need)."""

from __future__ import annotations

import asyncio
import bisect
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import feeder
from bench.delivery import CLOCK, Outcome, collect
from bench.ingest_bench import drive
from bench.stats import (
    held_without_falling_behind,
    lateness_summary,
    median_summaries,
    per_second,
    percentile,
    recovery_s,
    spread,
)
from bench.storage import flushed_keyspace_bytes, wait_compactions_done
from bench.world import World

LEAD_MS = 8_000  # a steady message is due this long after it is scheduled: the long path
DRAIN_S = 20.0  # after the last due instant, wait at most this long for stragglers
FEEDER_START_S = 30.0  # a spawned feeder imports the library before it produces
SATURATION_S = 60  # a rate counts as held when the pipeline keeps up with it this long
SATURATION_TAIL_MS = 10_000  # ... judged by the lateness of the messages due last
BEHIND_MS = 1_000  # ... at their p99


@dataclass(frozen=True)
class Profile:
    name: str
    ingest_seconds: float
    ingest_runs: int
    native_messages: int
    rates: tuple[int, ...]
    steady_seconds: int
    steady_runs: int
    hotspot: int
    pending: tuple[int, ...]
    recovery_rate: int
    recovery_seconds: int
    idle_seconds: int = 30  # nothing scheduled: the stack alone, then with the services up
    # rates tried in turn, each for SATURATION_S, until one is not held (Kafka destination)
    saturation_rates: tuple[int, ...] = (1_000, 1_500, 2_000, 3_000, 4_000)
    # dispatcher instances of the production-horizon world (its ring topics have 2 partitions)
    production_dispatchers: int = 2


QUICK = Profile(
    "quick", 2.0, 3, 5_000, (100, 1_000), 5, 1, 5_000, (20_000,), 200, 30, 10, (500, 1_000)
)
FULL = Profile("full", 5.0, 3, 30_000, (100, 1_000, 5_000), 10, 3, 100_000, (1_000_000,), 1_000, 60)


def app_for(world: World, destination: str) -> str:
    return world.rest.app_id if destination == "rest" else world.kafka_app.app_id


def run_feeder(world: World, spec: feeder.Feed, timeout_s: float) -> feeder.Fed:
    process = feeder.start(world.kafka, world.scheduling, spec)
    try:
        process.join(timeout_s)
        if process.is_alive() or process.exitcode != 0:
            raise RuntimeError(f"the feeder failed or overran (exit {process.exitcode})")
    finally:
        if process.is_alive():
            process.kill()
            process.join(5)
    return feeder.read(spec)


def steady_run(
    world: World, workdir: Path, destination: str, rate: int, seconds: int
) -> tuple[feeder.Fed, Outcome]:
    spec = feeder.Feed(
        app_for(world, destination),
        count=rate * seconds,
        rate=rate,
        lead_ms=LEAD_MS,
        out=str(workdir / f"steady-{destination}-{rate}.ledger"),
    )
    fed = run_feeder(world, spec, FEEDER_START_S + seconds * 3)
    last_due = max(fed.planned.values())
    return fed, collect(world.arrivals, fed.planned, last_due + int(DRAIN_S * 1000))


def steady(world: World, workdir: Path, destination: str, rate: int, p: Profile) -> dict[str, Any]:
    """Lateness at a fixed rate of messages coming due: the median over p.steady_runs runs."""
    runs, pooled, first_points, achieved = [], [], [], []
    totals = {"planned": 0, "delivered": 0, "lost": 0, "duplicates": 0, "early": 0}
    for i in range(p.steady_runs):
        fed, outcome = steady_run(world, workdir, destination, rate, p.steady_seconds)
        achieved.append(fed.achieved_rate)
        runs.append(lateness_summary(outcome.lateness))
        pooled.extend(outcome.lateness)
        if i == 0:
            origin = min(fed.planned.values())
            first_points = [((due - origin) / 1000, late) for due, late in outcome.points]
        for key, value in outcome.counts().items():
            totals[key] += value
    return {
        "destination": destination,
        "rate": rate,
        "seconds": p.steady_seconds,
        "runs": p.steady_runs,
        "achieved_rate": spread(achieved),
        "lateness_ms": median_summaries([r for r in runs if r.get("count")]),
        "totals": totals,
        "series": {"pooled": pooled, "first_run": first_points},
    }


CpuBetween = Callable[[int, int], dict[str, float]]
"""CPU seconds of each watched process between two wall-clock instants in epoch ms
(resources.Sampler.cpu_between)."""


def steady_window_cpu(planned: dict[str, int], cpu_between: CpuBetween) -> dict[str, Any]:
    """CPU at the run's rate: between the first due instant and the last schedule (LEAD_MS
    before the last due), messages are scheduled and come due at the rate at once. Not the
    setup, the lead before the first delivery or the drain after the last schedule, which the
    phase figures of the suite include."""
    dues = sorted(planned.values())
    start_ms, end_ms = dues[0], dues[-1] - LEAD_MS
    if end_ms - start_ms < 10_000:
        return {}
    due_in_window = bisect.bisect_right(dues, end_ms) - bisect.bisect_left(dues, start_ms)
    return {
        "seconds": (end_ms - start_ms) / 1000,
        "messages": due_in_window,
        "cpu_s": cpu_between(start_ms, end_ms),
    }


def saturation(
    world: World,
    workdir: Path,
    p: Profile,
    seconds: int = SATURATION_S,
    cpu_between: CpuBetween | None = None,
) -> dict[str, Any]:
    """The saturation rate: the highest of p.saturation_rates held for `seconds` to the Kafka
    destination without falling behind (stats.held_without_falling_behind); the rates are
    tried in increasing order until one is not held. With `cpu_between`, each rate's CPU in
    its steady window too."""
    tried: list[dict[str, Any]] = []
    held_rate = None
    for rate in p.saturation_rates:
        fed, outcome = steady_run(world, workdir, "kafka", rate, seconds)
        held, why = held_without_falling_behind(
            outcome.points,
            len(fed.planned),
            fed.achieved_rate,
            rate,
            SATURATION_TAIL_MS,
            BEHIND_MS,
        )
        tried.append(
            {
                "rate": rate,
                "achieved_rate": fed.achieved_rate,
                "held": held,
                "why_not": why,
                "lateness_ms": lateness_summary(outcome.lateness),
                "totals": outcome.counts(),
                "cpu_window": steady_window_cpu(fed.planned, cpu_between) if cpu_between else {},
            }
        )
        if not held:
            break
        held_rate = rate
    return {
        "destination": "kafka",
        "seconds": seconds,
        "tail_s": SATURATION_TAIL_MS / 1000,
        "behind_ms": BEHIND_MS,
        "held_rate": held_rate,
        "tried": tried,
    }


def hotspot(world: World, workdir: Path, p: Profile) -> dict[str, Any]:
    """p.hotspot messages all due within one second, to the Kafka destination."""
    lead_ms = hotspot_lead_ms(p.hotspot)
    due_at = CLOCK.now_ms() + lead_ms
    spec = feeder.Feed(
        world.kafka_app.app_id,
        count=p.hotspot,
        due_at_ms=due_at,
        out=str(workdir / "hotspot.ledger"),
    )
    fed = run_feeder(world, spec, FEEDER_START_S + lead_ms / 1000)
    stored_by_ms = wait_stored(world, due_at)
    wait_ms = hotspot_wait_ms(p.hotspot)
    outcome = collect(world.arrivals, fed.planned, due_at + 1_000 + wait_ms)
    last = max(outcome.received_ms) if outcome.received_ms else None
    return {
        "messages": p.hotspot,
        "destination": "kafka",
        "lead_s": lead_ms / 1000,
        "wait_s": (1_000 + wait_ms) / 1000,
        "scheduled_in_s": round(fed.elapsed_s, 1),
        "stored_before_due": stored_by_ms is not None,
        "last_delivered_after_s": round((last - due_at) / 1000, 2) if last else None,
        "lateness_ms": lateness_summary(outcome.lateness),
        "totals": outcome.counts(),
        "series": {
            "lateness": outcome.lateness,
            "received_s": sorted((r - due_at) / 1000 for r in outcome.received_ms),
        },
    }


def hotspot_lead_ms(n: int) -> int:
    """Time to schedule and store them all before they are due (~2,000/s end to end on a
    busy 2-core machine)."""
    return 15_000 + n // 2


def hotspot_wait_ms(n: int) -> int:
    """How long after the due second to wait for the last (~1,000/s delivered, at worst)."""
    return 60_000 + n


def wait_stored(world: World, until_ms: int) -> int | None:
    """Wait until the bucketer stored every request (lag 0), at most until `until_ms`."""
    while CLOCK.now_ms() < until_ms:
        if world.bucketer_lag() == 0:
            return CLOCK.now_ms()
        time.sleep(0.5)
    return None


def recovery(world: World, workdir: Path, service: str, p: Profile) -> dict[str, Any]:
    """kill -9 of one service a third into a steady stream to the Kafka destination, restarted
    at once (as an orchestrator would); lateness per due second, lost, duplicates."""
    spec = feeder.Feed(
        world.kafka_app.app_id,
        count=p.recovery_rate * p.recovery_seconds,
        rate=p.recovery_rate,
        lead_ms=LEAD_MS,
        out=str(workdir / f"recovery-{service}.ledger"),
    )
    world.arrivals.take()  # earlier runs' stragglers must not look like this stream starting
    process = feeder.start(world.kafka, world.scheduling, spec)
    kill_at_s = p.recovery_seconds / 3
    try:
        # the feeder's first message is due LEAD_MS after it started producing: wait for the
        # stream to be delivering, then a third of the run
        wait_first_arrival(world, FEEDER_START_S + LEAD_MS / 1000)
        time.sleep(kill_at_s)
        killed_ms = CLOCK.now_ms()
        world.system.kill9(service)
        world.system.restart(service, wait=False)
        process.join(FEEDER_START_S + p.recovery_seconds * 3)
        if process.exitcode != 0:
            raise RuntimeError(f"the feeder failed or overran (exit {process.exitcode})")
    finally:
        if process.is_alive():
            process.kill()
    world.system.wait_ready(service)
    fed = feeder.read(spec)
    last_due = max(fed.planned.values())
    outcome = collect(world.arrivals, fed.planned, last_due + int(DRAIN_S * 1000) * 3)
    origin = min(fed.planned.values())
    seconds = per_second(outcome.points, origin)
    kill_second = (killed_ms - origin) // 1000
    # steady = what was received before the kill (messages in flight at the kill are not)
    before = sorted(late for due, late in outcome.points if due + late < killed_ms)
    steady_p99 = lateness_summary(before).get("p99", 0.0)
    threshold = max(2 * steady_p99, steady_p99 + 100.0)
    back = recovery_s(seconds, kill_second, threshold)
    return {
        "service": service,
        "rate": p.recovery_rate,
        "seconds": p.recovery_seconds,
        "killed_after_s": round((killed_ms - origin) / 1000, 1),
        "steady_p99_ms": steady_p99,
        "threshold_ms": threshold,
        "back_to_steady_s": back,
        "lateness_ms": lateness_summary(outcome.lateness),
        "totals": outcome.counts(),
        "series": {"seconds": seconds, "kill_second": kill_second},
    }


def wait_first_arrival(world: World, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not world.arrivals.snapshot():
        time.sleep(0.1)


def ingest(world: World, workdir: Path, p: Profile) -> dict[str, Any]:
    """HTTP single, HTTP batch (500 a request) and the Kafka-native producer, each into storage:
    acknowledged per second, and stored per second (until the bucketer's lag is back to 0)."""
    auth = world.rest.client.headers["Authorization"]
    out: dict[str, Any] = {}

    # one run: (messages acknowledged, seconds they took, request latencies, failures, wall
    # clock ms of the first request)
    Once = Callable[[], tuple[int, float, list[float], int, int]]

    def measure(name: str, once: Once) -> None:
        acked, stored, p50, p99, failures = [], [], [], [], 0
        for _ in range(p.ingest_runs):
            messages, wall, latencies, failed, started_ms = once()
            acked.append(messages / wall)
            done_ms = wait_stored(world, CLOCK.now_ms() + 120_000) or CLOCK.now_ms()
            stored.append(messages * 1000 / max(done_ms - started_ms, 1))
            failures += failed
            if latencies:
                ordered = sorted(latencies)
                p50.append(percentile(ordered, 0.5))
                p99.append(percentile(ordered, 0.99))
        out[name] = {
            "acked_per_s": spread(acked),
            "stored_per_s": spread(stored),
            "request_p50_ms": spread(p50),
            "request_p99_ms": spread(p99),
            "failures": failures,
        }

    def http(batch: int, concurrency: int) -> Once:
        def once() -> tuple[int, float, list[float], int, int]:
            started, started_ms = time.monotonic(), CLOCK.now_ms()
            _, messages, latencies, failures = asyncio.run(
                drive(world.system.ingest, auth, p.ingest_seconds, concurrency, batch)
            )
            return messages, time.monotonic() - started, latencies, failures, started_ms

        return once

    def native() -> tuple[int, float, list[float], int, int]:
        spec = feeder.Feed(
            world.rest.app_id,
            count=p.native_messages,
            due_at_ms=CLOCK.now_ms() + 86_400_000,
            spread_s=3_600,
            out=str(workdir / "ingest-native.ledger"),
            ledger=False,
        )
        fed = run_feeder(world, spec, FEEDER_START_S + 300)
        return fed.produced, fed.elapsed_s, [], 0, fed.started_ms

    asyncio.run(drive(world.system.ingest, auth, 1.0, 8, 0))  # warm-up: connections, caches
    measure("http_single", http(0, 32))
    measure("http_batch", http(500, 4))
    measure("kafka_native", native)
    return out


def pending(
    world: World, workdir: Path, target: int, p: Profile, deadline_ms: int
) -> dict[str, Any]:
    """Load `target` far-future messages through the Kafka-native producer and the bucketer,
    recording the stored rate against the count pending; then the storage per pending message
    and steady runs at 1,000/s (or the profile's highest rate below it) with them in place,
    once Cassandra's compactions of the load are done, as many as section 2 makes on an empty
    system."""
    before_bytes = flushed_keyspace_bytes(world.cassandra)
    rejected_before = world.rejected_end()
    spec = feeder.Feed(
        world.rest.app_id,
        count=target,
        due_at_ms=CLOCK.now_ms() + 2 * 86_400_000,
        spread_s=6 * 3_600,
        out=str(workdir / "pending.ledger"),
        ledger=False,
    )
    process = feeder.start(world.kafka, world.scheduling, spec)
    curve: list[tuple[float, int, float]] = []  # (seconds, stored so far, stored per s)
    base = world.bucketer_committed()
    started, last_n = time.monotonic(), base
    fed_s: float | None = None  # when the load generator had written the whole load
    try:
        # the curve starts with the first request stored (a spawned feeder takes seconds)
        while last_n == base and CLOCK.now_ms() < deadline_ms:
            time.sleep(0.2)
            started, last_n = time.monotonic(), world.bucketer_committed()
        last_t = started
        while CLOCK.now_ms() < deadline_ms and last_n - base < target:
            time.sleep(2.0)
            now, n = time.monotonic(), world.bucketer_committed()
            t = round(now - started, 1)
            curve.append((t, n - base, (n - last_n) / (now - last_t)))
            last_t, last_n = now, n
            if fed_s is None and not process.is_alive():
                fed_s = t  # the samples after this one had the cores without it
    finally:
        if process.is_alive():
            process.kill()
            process.join(5)
    # a refused request moves the offsets as a stored one does: counted apart, not as loaded
    refused = world.rejected_end() - rejected_before
    loaded = last_n - base - refused
    after_bytes = flushed_keyspace_bytes(world.cassandra)
    rates = [r for _, _, r in curve]
    tenth = max(1, len(rates) // 10)
    # The load generator writes the whole load as fast as it can and competes for the cores
    # meanwhile: the first tenth after it finished is the fair one to compare with the last.
    alone = [r for t, _, r in curve if fed_s is not None and t > fed_s]
    rate = max((r for r in p.rates if r <= 1_000), default=p.rates[0])
    compactions_s = wait_compactions_done(world.cassandra)
    runs = steady(world, workdir, "kafka", rate, p)
    per_message = None
    if before_bytes is not None and after_bytes is not None and loaded:
        per_message = (after_bytes - before_bytes) / loaded
    return {
        "target": target,
        "loaded": loaded,
        "refused": refused,
        "complete": loaded >= target,
        "load_s": round(last_t - started, 1),
        "stored_per_s_first_tenth": statistics.median(rates[:tenth]) if rates else None,
        "stored_per_s_last_tenth": statistics.median(rates[-tenth:]) if rates else None,
        "fed_s": fed_s,
        "stored_per_s_first_tenth_alone": (
            statistics.median(alone[:tenth]) if len(alone) > tenth else None
        ),
        "stored_per_s_overall": loaded / (last_t - started) if last_t > started else None,
        "bytes_per_message": per_message,
        "compactions_s": compactions_s,
        "steady_rate": rate,
        "steady_runs": p.steady_runs,
        "steady_achieved_rate": runs["achieved_rate"],
        "lateness_ms": runs["lateness_ms"],  # the median of the runs' figures (min-max)
        "totals": runs["totals"],
        "series": {"curve": curve},
    }
