"""The load generator: a separate process (so it does not share the GIL with the receivers,
whose receipt times are the measurement) that schedules messages through the Kafka-native
producer, at a fixed rate or as fast as it can, and writes what it scheduled to a file:
one "message_id send_at_ms" line per message, then a JSON line with its own figures."""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scheduler.clock import SystemClock
from scheduler.producer import SchedulerProducer
from scheduler.settings import KafkaSettings, SchedulingSettings

TICK_S = 0.005
FLUSH_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Feed:
    app_id: str
    count: int
    rate: float = 0.0  # messages per second; 0 = as fast as the producer goes
    lead_ms: int = 0  # each due this long after it is scheduled (a steady stream) ...
    due_at_ms: int = 0  # ... or, if set, all due in the second [due_at_ms, due_at_ms + 1000)
    spread_s: int = 0  # ... or, with due_at_ms, spread over this many seconds (pending load)
    out: str = ""  # where the ledger and the figures go
    ledger: bool = True  # False: only the figures (a million pending need no ledger)


@dataclass(frozen=True)
class Fed:
    planned: dict[str, int]  # message id -> sendAt ms
    produced: int
    elapsed_s: float  # from the first schedule() to flush() returning (Kafka acknowledged)
    achieved_rate: float
    started_ms: int  # wall clock of the first schedule() (the process starts seconds earlier)


def send_at(feed: Feed, i: int, now_ms: int) -> int:
    if not feed.due_at_ms:
        return now_ms + feed.lead_ms
    if feed.spread_s:
        return feed.due_at_ms + (i * 7919) % (feed.spread_s * 1000)  # spread over buckets
    return feed.due_at_ms + (i * 1000) // max(feed.count, 1)


def feed(kafka: dict[str, Any], scheduling: dict[str, Any], spec: Feed) -> None:
    """The process body (spawned: settings travel as plain dicts)."""
    clock = SystemClock()
    producer = SchedulerProducer(KafkaSettings(**kafka), SchedulingSettings(**scheduling))
    lines: list[str] = []
    payload = {"bench": True, "note": "a typical small payload of some sixty bytes."}
    started, started_ms = time.monotonic(), clock.now_ms()
    for i in range(spec.count):
        if spec.rate:
            # keep to the rate: never ahead of the schedule (behind: catch up at once)
            ahead_s = i / spec.rate - (time.monotonic() - started)
            if ahead_s > 0:
                time.sleep(max(ahead_s, TICK_S))
        at = send_at(spec, i, clock.now_ms())
        message_id = producer.schedule(spec.app_id, payload, at)
        if spec.ledger:
            lines.append(f"{message_id} {at}")
    producer.close(FLUSH_TIMEOUT_S)
    elapsed = time.monotonic() - started
    figures = {
        "produced": spec.count,
        "elapsed_s": elapsed,
        "achieved_rate": spec.count / elapsed if elapsed else 0.0,
        "started_ms": started_ms,
    }
    Path(spec.out).write_text("\n".join([*lines, json.dumps(figures)]) + "\n")


def start(kafka: KafkaSettings, scheduling: SchedulingSettings, spec: Feed) -> Any:
    """Spawn (not fork: the suite runs threads and librdkafka clients) the feeder process."""
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(
        target=feed,
        args=(kafka.model_dump(), scheduling.model_dump(), spec),
        name="bench-feeder",
        daemon=True,  # killed with the suite, whatever happens
    )
    process.start()
    return process


def read(spec: Feed) -> Fed:
    text = Path(spec.out).read_text().splitlines()
    figures = json.loads(text[-1])
    planned = {}
    for line in text[:-1]:
        message_id, _, at = line.partition(" ")
        planned[message_id] = int(at)
    return Fed(
        planned,
        figures["produced"],
        figures["elapsed_s"],
        figures["achieved_rate"],
        figures["started_ms"],
    )


def describe(spec: Feed) -> dict[str, Any]:
    return asdict(spec)
