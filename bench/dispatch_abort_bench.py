"""Bulk abort benchmark: one tenant's firing while another tenant aborts in bulk.

Does one tenant's bulk abort delay another tenant's messages? Prints the figures.

    .venv/bin/python bench/dispatch_abort_bench.py [--runs 3] [--abort-rate 1000] [--abort-s 30]
    .venv/bin/python bench/dispatch_abort_bench.py --code eeb3262    # the dispatcher of a revision

One `scheduler-dispatcher` process on private topics and keyspace (bench/dispatch_rig.py) with
the production scheduling settings (60 s ring slots, cancel guard 500 ms) and the production
count of commands partitions (6). Tenant A has a KAFKA app whose messages come due at --rate-a
(100/s); their ring records are produced before the run, as the releaser would. Tenant B
aborts its messages at --abort-rate (1,000/s) for --abort-s (30 s): ABORT commands produced
straight into the commands topic by a separate process (key = message id, as ingest does).
Not through the ingest API: its abort route reads the record, writes it ABORTED conditionally,
reads it again, moves the pending count and then produces the command, and even a plain
POST /messages reaches about 700/s on this 2-core host (BENCHMARKS.md); the dispatcher sees the
same records either way. Some of B's aborted messages (--b-due) are in the ring, due after the
bulk abort: none may be delivered (the view applied the aborts).

Lateness = receipt by a read_committed consumer of A's destination topic - due instant, for A's
messages due before the bulk abort, during it and after it. Beside it, the dispatcher's
scheduler_dispatch_commands_lag_seconds gauge (the age of its commands view, firing waits while
it exceeds the cancel guard), scraped every 100 ms. Target: A's p99 during the bulk abort
within 2x of before. Medians of --runs runs with min and max, and every run's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch_rig import (  # noqa: E402
    CLOCK,
    PRODUCER,
    DestReader,
    Rig,
    code_env,
    describe_code,
    due_message,
    feed_aborts,
    machine_line,
    produce,
    rig,
    spawn,
)
from bench.stats import percentile  # noqa: E402
from scheduler.domain.ids import new_message_id  # noqa: E402
from scheduler.settings import SchedulingSettings  # noqa: E402
from scheduler_releaser.codecs import Codecs  # noqa: E402

A, B = "tenant-a", "tenant-b"
CONTROL = "; CONTROL: into a topic the dispatcher does not read"
NOISE = "noise"  # --control: the commands go to this app's topic, which the dispatcher never reads
LAG = "scheduler_dispatch_commands_lag_seconds"
WINDOWS = ("before", "during", "after")


class Scraper:
    """The commands lag gauge every `every_s`, with the wall-clock ms of each sample."""

    def __init__(self, the_rig: Rig, every_s: float = 0.1) -> None:
        self._rig = the_rig
        self._every_s = every_s
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            value = self._rig.metric(LAG)
            if value is not None:
                self.samples.append((CLOCK.now_ms(), value))


def window_of(at_ms: int, start_ms: int, end_ms: int) -> str:
    return "before" if at_ms < start_ms else "during" if at_ms <= end_ms else "after"


def one_run(args: argparse.Namespace, env: dict[str, str]) -> dict[str, float | int | None]:
    # production: 60 s slots, cancel guard 500 ms (unless --cancel-guard-ms)
    scheduling = SchedulingSettings(cancel_guard_ms=args.cancel_guard_ms)
    with (
        rig(
            scheduling,
            apps=[A, B, NOISE] if args.control else [A, B],
            ring_partitions=args.partitions,
            commands_partitions=args.commands_partitions,
            env=env,
            name="abort_bench",
        ) as r,
        DestReader(r, [r.dests[A], r.dests[B]]) as reader,
    ):
        r.start()
        r.wait_ready()
        topics, codecs = r.topics, Codecs.build(r.kafka)
        first_due = CLOCK.now_ms() + args.lead_s * 1000
        abort_at = first_due + args.before_s * 1000
        last_due = abort_at + (args.abort_s + args.after_s) * 1000
        # tenant A: due evenly at --rate-a; tenant B: the ids it aborts, some of them in the ring
        producer = Producer({**r.kafka.client_config(), **PRODUCER})
        planned_a: dict[str, int] = {}
        for i in range((last_due - first_due) * args.rate_a // 1000):
            message = due_message(A, first_due + i * 1000 // args.rate_a)
            planned_a[message.message_id] = message.due_ms
            produce(
                producer,
                topics.ring.topic_for(message.due_ms),
                message.message_id.encode(),
                codecs.due.encode(message),
            )
        b_ids = [new_message_id(CLOCK.now_ms()) for _ in range(args.abort_rate * args.abort_s)]
        step = max(1, len(b_ids) // max(1, args.b_due))
        b_ringed = b_ids[::step][: args.b_due]
        b_first_due = last_due + 3_000
        for i, message_id in enumerate(b_ringed):
            message = due_message(B, b_first_due + i * 5_000 // len(b_ringed), message_id)
            produce(
                producer,
                topics.ring.topic_for(message.due_ms),
                message.message_id.encode(),
                codecs.due.encode(message),
            )
        assert producer.flush(60) == 0
        ids_file = Path(tempfile.mkstemp(prefix="abort_ids_", suffix=".txt")[1])
        ids_file.write_text("\n".join(b_ids))
        out = Path(tempfile.mkstemp(prefix="abort_feed_", suffix=".json")[1])
        with Scraper(r) as scraper:
            aborter = spawn(
                feed_aborts,
                r.kafka.model_dump(),
                B,
                str(ids_file),
                abort_at,
                args.abort_rate,
                str(out),
                r.dests[NOISE] if args.control else "",
            )
            # until A's last and B's last ringed message are due, then a grace
            deadline = max(last_due, b_first_due + 5_000) + args.grace_s * 1000
            while CLOCK.now_ms() < deadline:
                got = {a.message_id for a in reader.arrivals() if a.topic == r.dests[A]}
                if CLOCK.now_ms() > b_first_due + 6_000 and len(got) >= len(planned_a):
                    break
                time.sleep(0.5)
            aborter.join(60)
            arrivals = reader.arrivals()
    fed = json.loads(out.read_text())
    abort_start, abort_end = fed["started_ms"], fed["ended_ms"]
    lateness: dict[str, list[int]] = {w: [] for w in WINDOWS}
    seen: set[str] = set()
    duplicates = early = 0
    b_delivered = 0
    for a in arrivals:
        if a.topic == r.dests[B]:
            b_delivered += 1
            continue
        if a.message_id in seen:
            duplicates += 1
            continue
        seen.add(a.message_id)
        due = planned_a[a.message_id]
        early += a.received_ms < due
        lateness[window_of(due, abort_start, abort_end)].append(a.received_ms - due)
    lags: dict[str, list[float]] = {w: [] for w in WINDOWS}
    for at, value in scraper.samples:
        lags[window_of(at, abort_start, abort_end)].append(value * 1000)
    guard = scheduling.cancel_guard_ms
    figures: dict[str, float | int | None] = {
        "abort_rate": round(fed["rate"]),
        "aborts": fed["produced"],
        "a_planned": len(planned_a),
        "a_lost": len(planned_a) - len(seen),
        "a_duplicates": duplicates,
        "a_early": early,
        "b_delivered": b_delivered,
    }
    for w in WINDOWS:
        values = sorted(lateness[w])
        figures[f"{w}_n"] = len(values)
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            figures[f"{w}_{name}"] = percentile(values, q) if values else None
        figures[f"{w}_max"] = values[-1] if values else None
        lag = sorted(lags[w])
        figures[f"{w}_lag_p50"] = round(percentile(lag, 0.5)) if lag else None
        figures[f"{w}_lag_p99"] = round(percentile(lag, 0.99)) if lag else None
        figures[f"{w}_lag_max"] = round(lag[-1]) if lag else None
        figures[f"{w}_lag_over_guard"] = sum(v > guard for v in lag)
        figures[f"{w}_lag_samples"] = len(lag)
    before, during = figures["before_p99"], figures["during_p99"]
    figures["p99_ratio"] = (
        round(during / max(before, 1), 2)
        if isinstance(before, int) and isinstance(during, int)
        else None
    )
    return figures


def report(runs: list[dict[str, float | int | None]]) -> None:
    def cell(key: str) -> str:
        values = [r[key] for r in runs]
        known = [float(v) for v in values if v is not None]
        if not known:
            return "n/a"
        shown = ", ".join("n/a" if v is None else f"{v:g}" for v in values)
        return f"{statistics.median(known):g} ({min(known):g}-{max(known):g}) [{shown}]"

    print("  tenant A lateness (receipt - due; = dispatch delay: created before due), ms:")
    print("  median (min-max) [runs]")
    for w in WINDOWS:
        print(
            f"    {w:6} n {cell(f'{w}_n')}; p50 {cell(f'{w}_p50')}; p99 {cell(f'{w}_p99')};"
            f" max {cell(f'{w}_max')}"
        )
    print(f"    p99 during / p99 before: {cell('p99_ratio')} (target <= 2)")
    print("  commands lag gauge, ms (samples every 100 ms): median (min-max) [runs]")
    for w in WINDOWS:
        print(
            f"    {w:6} p50 {cell(f'{w}_lag_p50')}; p99 {cell(f'{w}_lag_p99')};"
            f" max {cell(f'{w}_lag_max')}; samples above the guard {cell(f'{w}_lag_over_guard')}"
            f" of {cell(f'{w}_lag_samples')}"
        )
    print(
        f"  aborts/s achieved {cell('abort_rate')}; A lost {cell('a_lost')}, duplicates"
        f" {cell('a_duplicates')}, early {cell('a_early')}; B's aborted messages delivered"
        f" {cell('b_delivered')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate-a", type=int, default=100, help="tenant A: messages due per s")
    parser.add_argument("--abort-rate", type=int, default=1000, help="tenant B: aborts per s")
    parser.add_argument("--abort-s", type=int, default=30, help="length of the bulk abort")
    parser.add_argument("--before-s", type=int, default=20, help="A firing before it")
    parser.add_argument("--after-s", type=int, default=10, help="A firing after it")
    parser.add_argument("--lead-s", type=int, default=10, help="ready -> A's first due")
    parser.add_argument("--b-due", type=int, default=1000, help="of B's aborted, in the ring")
    parser.add_argument("--grace-s", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=2, help="partitions per ring topic")
    parser.add_argument("--commands-partitions", type=int, default=6)
    parser.add_argument("--cancel-guard-ms", type=int, default=SchedulingSettings().cancel_guard_ms)
    parser.add_argument(
        "--code", default="", help="git revision whose dispatcher to run (default: the checkout)"
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="produce the same commands into a topic the dispatcher does not read (the cost of"
        " producing them on this host, without the dispatcher reading them)",
    )
    args = parser.parse_args()
    env = code_env(args.code)
    print(f"machine: {machine_line()}")
    print(
        f"dispatcher: {describe_code(args.code)}; production scheduling (cancel guard"
        f" {args.cancel_guard_ms} ms), {args.commands_partitions} commands"
        f" partitions, {args.partitions} per ring topic; tenant A {args.rate_a}/s to a KAFKA app;"
        f" tenant B {args.abort_rate:,} aborts/s for {args.abort_s} s (commands produced"
        f" directly{CONTROL if args.control else ''}),"
        f" {args.before_s} s before, {args.after_s} s after",
        flush=True,
    )
    runs = []
    for n in range(args.runs):
        print(f"run {n + 1}/{args.runs}", flush=True)
        figures = one_run(args, env)
        print("  " + json.dumps(figures), flush=True)
        runs.append(figures)
    print(f"figures ({len(runs)} runs):")
    report(runs)
    ok = all(
        r["a_lost"] == 0 and r["a_early"] == 0 and (args.control or r["b_delivered"] == 0)
        for r in runs
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
