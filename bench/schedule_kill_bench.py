"""Recurring schedules under kill -9: a schedule firing every second, each service killed in turn.

Does every occurrence arrive once, on time, while each service dies and restarts? Prints the
figures.

    .venv/bin/python bench/schedule_kill_bench.py [--seconds 600] [--no-kills]

The whole system (ingest, bucketer, releaser, dispatcher as real processes, the e2e world of
tests/e2e/conftest.py: private topics and keyspace on the local stack, an HTTP receiver and a
Kafka consumer, shrunk horizons: 1 s buckets, a schedule tick of 200 ms and a look-ahead of
3 s). Two schedules, `rate(1 second)`, one to a REST app and one to a KAFKA app, from 5 s after
the start for --seconds occurrences each. Unless --no-kills, every --every-s seconds the next
service in the order ingest, bucketer, releaser, dispatcher is killed with SIGKILL and
restarted --down-s later (as an orchestrator would).

Figures per destination: occurrences expected, delivered, missing, delivered more than once
(KAFKA must be 0; REST duplicates are at-least-once redeliveries after a dispatcher kill),
early (before the occurrence instant), lateness p50/p99/max (first arrival - instant), and
the lateness of the occurrences due within 10 s after each kill.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch_rig import machine_line  # noqa: E402
from bench.stats import percentile  # noqa: E402
from scheduler.clock import SystemClock  # noqa: E402
from scheduler.domain.ids import occurrence_message_id  # noqa: E402
from scheduler.testing.servers import resolve_servers  # noqa: E402
from tests.e2e.conftest import World, private_settings, world  # noqa: E402

CLOCK = SystemClock()
VICTIMS = ("ingest", "bucketer", "releaser", "dispatcher")


def killer(
    w: World, every_s: float, down_s: float, stop: threading.Event, log: list[tuple[str, int]]
) -> None:
    """Kill the next victim every `every_s`, restart it `down_s` later; `log` (victim, at)."""
    turn = 0
    while not stop.wait(every_s):
        victim = VICTIMS[turn % len(VICTIMS)]
        turn += 1
        log.append((victim, CLOCK.now_ms()))
        w.system.kill9(victim)
        stop.wait(down_s)
        w.system.restart(victim)
        print(f"  killed and restarted {victim}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=600, help="occurrences per schedule")
    parser.add_argument("--every-s", type=float, default=45.0, help="between two kills")
    parser.add_argument("--down-s", type=float, default=3.0, help="dead this long")
    parser.add_argument("--grace-s", type=float, default=60.0)
    parser.add_argument("--no-kills", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine_line()}")
    kafka, cassandra = private_settings(resolve_servers())
    logs = Path(tempfile.mkdtemp(prefix="schedule_kill_bench_"))
    with world(kafka, cassandra, logs) as w:
        start = CLOCK.now_ms() + 5_000
        start -= start % 1_000
        end = start + (args.seconds - 1) * 1_000
        expected: dict[str, tuple[str, int]] = {}
        for app in (w.rest, w.kafka_app):
            body = {"expression": "rate(1 second)", "start": start, "end": end, "payload": {}}
            answer = app.client.post("/schedules", json=body)
            assert answer.status_code == 200, answer.text
            schedule_id = answer.json()["scheduleId"]
            for k in range(args.seconds):
                instant = start + k * 1_000
                message_id = occurrence_message_id(app.app_id, schedule_id, instant)
                expected[message_id] = (app.destination, instant)
        print(
            f"{len(expected)} occurrences expected ({args.seconds} per schedule, REST and"
            f" KAFKA), kills {'off' if args.no_kills else f'every {args.every_s:g} s'}",
            flush=True,
        )
        stop = threading.Event()
        kills: list[tuple[str, int]] = []
        thread = None
        if not args.no_kills:
            thread = threading.Thread(
                target=killer, args=(w, args.every_s, args.down_s, stop, kills), daemon=True
            )
            thread.start()
        while CLOCK.now_ms() < end + 1_000:
            time.sleep(1)
        stop.set()
        if thread is not None:
            thread.join(args.down_s + 60)
        deadline = time.monotonic() + args.grace_s
        while time.monotonic() < deadline and not set(expected) <= w.arrivals.ids():
            time.sleep(1)
        time.sleep(3)  # late duplicates
        arrivals = w.arrivals.snapshot()
    first: dict[str, int] = {}
    count: Counter[str] = Counter()
    for a in arrivals:
        if a.message_id not in expected:
            continue
        count[a.message_id] += 1
        first[a.message_id] = min(first.get(a.message_id, a.received_ms), a.received_ms)
    by_dest: dict[str, list[str]] = defaultdict(list)
    for message_id, (destination, _) in expected.items():
        by_dest[destination].append(message_id)
    ok = True
    print(f"kills: {', '.join(f'{v} at +{(t - start) / 1000:.0f} s' for v, t in kills) or 'none'}")
    for destination, ids in sorted(by_dest.items()):
        late = sorted(first[m] - expected[m][1] for m in ids if m in first)
        missing = [m for m in ids if m not in first]
        twice = sum(1 for m in ids if count[m] > 1)
        early = sum(1 for m in ids if m in first and first[m] < expected[m][1])
        near_kills = sorted(
            first[m] - expected[m][1]
            for m in ids
            if m in first and any(0 <= expected[m][1] - t < 10_000 for _, t in kills)
        )
        print(
            f"  {destination}: expected {len(ids)}, delivered {len(late)}, missing"
            f" {len(missing)}, more than once {twice}, early {early}; lateness ms p50"
            f" {percentile(late, 0.5) if late else 'n/a'}, p99"
            f" {percentile(late, 0.99) if late else 'n/a'}, max {late[-1] if late else 'n/a'};"
            f" within 10 s after a kill: n {len(near_kills)}, p99"
            f" {percentile(near_kills, 0.99) if near_kills else 'n/a'}, max"
            f" {near_kills[-1] if near_kills else 'n/a'}"
        )
        ok &= not missing and early == 0 and (destination == "rest" or twice == 0)
    print(f"logs: {logs}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
