"""Rate limit benchmark: one app limited to --limit/s with --burst-n due at once, beside another.

Is the limit held, and does the limited app's backlog delay anyone else? Prints the figures.

    .venv/bin/python bench/rate_limit_bench.py [--runs 3] [--limit 50] [--burst-n 5000]

One `scheduler-dispatcher` process on private topics and keyspace (bench/dispatch_rig.py) with
the production scheduling settings (60 s ring slots, cancel guard 500 ms). App LIMITED (KAFKA,
delivery policy `ratePerSecond` --limit, `rateBurst` 1) has --burst-n messages due at one
instant T; app FREE (KAFKA, no policy) has messages due evenly at --rate-free from --before-s
before T until the limited backlog should be done, plus --after-s. Ring records are produced
before the run, as the releaser would.

Figures: LIMITED's deliveries per --window-s window from its first delivery (each full window
within +/- 10 % of the limit is the target), the time to deliver them all, lost/early/
duplicates; FREE's lateness (receipt by a read_committed consumer - due) before T and while the
limited backlog drains (target: p99 during within 2x of before). Medians of --runs runs with
min and max, and every run's figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch_rig import (  # noqa: E402
    CLOCK,
    PRODUCER,
    DestReader,
    due_message,
    machine_line,
    produce,
    rig,
)
from bench.stats import percentile  # noqa: E402
from scheduler.domain.policy import DeliveryPolicy  # noqa: E402
from scheduler.settings import SchedulingSettings  # noqa: E402
from scheduler.store.cassandra import connect  # noqa: E402
from scheduler.store.cassandra_apps import CassandraAppStore  # noqa: E402
from scheduler_releaser.codecs import Codecs  # noqa: E402

LIMITED, FREE = "limited", "free"


def one_run(args: argparse.Namespace) -> dict[str, float | int | None]:
    scheduling = SchedulingSettings()  # production: 60 s slots, cancel guard 500 ms
    with (
        rig(
            scheduling,
            apps=[LIMITED, FREE],
            ring_partitions=args.partitions,
            name="rate_limit_bench",
        ) as r,
        DestReader(r, [r.dests[LIMITED], r.dests[FREE]]) as reader,
    ):
        cluster, session = connect(r.cassandra, r.cassandra.keyspace)
        try:
            apps = CassandraAppStore(session)
            limited = apps.get_app(LIMITED)
            assert limited is not None
            policy = DeliveryPolicy(rate_per_second=args.limit, rate_burst=1)
            apps.put_app(dataclasses.replace(limited, policy=policy))
        finally:
            cluster.shutdown()
        r.start()
        r.wait_ready()
        topics, codecs = r.topics, Codecs.build(r.kafka)
        burst_at = CLOCK.now_ms() + (args.lead_s + args.before_s) * 1000
        drain_ms = int(args.burst_n * 1000 / args.limit)
        first_free = burst_at - args.before_s * 1000
        last_free = burst_at + drain_ms + args.after_s * 1000
        producer = Producer({**r.kafka.client_config(), **PRODUCER})
        planned: dict[str, tuple[str, int]] = {}
        messages = [due_message(LIMITED, burst_at) for _ in range(args.burst_n)]
        messages += [
            due_message(FREE, first_free + i * 1000 // args.rate_free)
            for i in range((last_free - first_free) * args.rate_free // 1000)
        ]
        for message in messages:
            planned[message.message_id] = (message.app_id, message.due_ms)
            produce(
                producer,
                topics.ring.topic_for(message.due_ms),
                message.message_id.encode(),
                codecs.due.encode(message),
            )
        assert producer.flush(60) == 0
        deadline = last_free + args.grace_s * 1000
        while CLOCK.now_ms() < deadline:
            if len({a.message_id for a in reader.arrivals()}) >= len(planned):
                break
            time.sleep(0.5)
        time.sleep(2)  # late duplicates
        arrivals = reader.arrivals()
    seen: set[str] = set()
    duplicates = early = 0
    limited_at: list[int] = []
    free_late: dict[str, list[int]] = {"before": [], "during": []}
    for a in arrivals:
        if a.message_id in seen:
            duplicates += 1
            continue
        seen.add(a.message_id)
        app, due = planned[a.message_id]
        early += a.received_ms < due
        if app == LIMITED:
            limited_at.append(a.received_ms)
        else:
            window = "before" if due < burst_at else "during"
            if window == "before" or due <= burst_at + drain_ms:
                free_late[window].append(a.received_ms - due)
    limited_at.sort()
    figures: dict[str, float | int | None] = {
        "planned": len(planned),
        "lost": len(planned) - len(seen),
        "duplicates": duplicates,
        "early": early,
        "limited_delivered": len(limited_at),
    }
    if limited_at:
        span_s = (limited_at[-1] - limited_at[0]) / 1000
        figures["limited_drain_s"] = round(span_s, 1)
        figures["limited_mean_rate"] = round((len(limited_at) - 1) / max(span_s, 0.001), 1)
        window_ms = args.window_s * 1000
        rates = []
        start = limited_at[0]
        while start + window_ms <= limited_at[-1]:
            n = sum(1 for t in limited_at if start <= t < start + window_ms)
            rates.append(n / args.window_s)
            start += window_ms
        figures["windows"] = len(rates)
        figures["window_rate_min"] = min(rates) if rates else None
        figures["window_rate_max"] = max(rates) if rates else None
        figures["windows_within_10pct"] = sum(
            1 for x in rates if abs(x - args.limit) <= 0.1 * args.limit
        )
    for w, values in free_late.items():
        values.sort()
        figures[f"free_{w}_n"] = len(values)
        figures[f"free_{w}_p50"] = percentile(values, 0.5) if values else None
        figures[f"free_{w}_p99"] = percentile(values, 0.99) if values else None
        figures[f"free_{w}_max"] = values[-1] if values else None
    before, during = figures["free_before_p99"], figures["free_during_p99"]
    figures["free_p99_ratio"] = (
        round(during / max(before, 1), 2)
        if isinstance(before, int) and isinstance(during, int)
        else None
    )
    return figures


def report(runs: list[dict[str, float | int | None]], args: argparse.Namespace) -> None:
    def cell(key: str) -> str:
        values = [r.get(key) for r in runs]
        known = [float(v) for v in values if v is not None]
        if not known:
            return "n/a"
        shown = ", ".join("n/a" if v is None else f"{v:g}" for v in values)
        return f"{statistics.median(known):g} ({min(known):g}-{max(known):g}) [{shown}]"

    print("  median (min-max) [runs]")
    print(
        f"  LIMITED ({args.burst_n:,} due at once, limit {args.limit}/s): delivered"
        f" {cell('limited_delivered')}, drained in {cell('limited_drain_s')} s, mean rate"
        f" {cell('limited_mean_rate')}/s"
    )
    print(
        f"    {args.window_s} s windows: {cell('windows')}, of them within +/- 10 %:"
        f" {cell('windows_within_10pct')}; slowest {cell('window_rate_min')}/s, fastest"
        f" {cell('window_rate_max')}/s"
    )
    for w in ("before", "during"):
        print(
            f"  FREE {w:6} n {cell(f'free_{w}_n')}; lateness p50 {cell(f'free_{w}_p50')} ms;"
            f" p99 {cell(f'free_{w}_p99')} ms; max {cell(f'free_{w}_max')} ms"
        )
    print(f"  FREE p99 during / before: {cell('free_p99_ratio')} (target <= 2)")
    print(
        f"  lost {cell('lost')}, duplicates {cell('duplicates')}, early {cell('early')}"
        f" of {cell('planned')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=float, default=50.0, help="LIMITED's ratePerSecond")
    parser.add_argument("--burst-n", type=int, default=5_000, help="LIMITED's messages due at T")
    parser.add_argument("--rate-free", type=int, default=100, help="FREE's messages due per s")
    parser.add_argument("--before-s", type=int, default=20, help="FREE firing before T")
    parser.add_argument("--after-s", type=int, default=5, help="FREE firing after the drain")
    parser.add_argument("--lead-s", type=int, default=10, help="ready -> FREE's first due")
    parser.add_argument("--window-s", type=int, default=10)
    parser.add_argument("--grace-s", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=2, help="partitions per ring topic")
    args = parser.parse_args()
    print(f"machine: {machine_line()}")
    print(
        f"one dispatcher, production scheduling; LIMITED: {args.burst_n:,} due at once, limit"
        f" {args.limit:g}/s burst 1 (KAFKA); FREE: {args.rate_free}/s (KAFKA), {args.before_s} s"
        " before and during the drain",
        flush=True,
    )
    runs = []
    for n in range(args.runs):
        print(f"run {n + 1}/{args.runs}", flush=True)
        figures = one_run(args)
        print("  " + json.dumps(figures), flush=True)
        runs.append(figures)
    print(f"figures ({len(runs)} runs):")
    report(runs, args)
    ok = all(r["lost"] == 0 and r["early"] == 0 and r["duplicates"] == 0 for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
