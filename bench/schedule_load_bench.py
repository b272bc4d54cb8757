"""Many recurring schedules beside one-time messages: does the occurrence runner slow the rest?

    .venv/bin/python bench/schedule_load_bench.py [--schedules 100000] [--windows 3]

The whole system (ingest, bucketer, releaser, dispatcher as real processes: the e2e world of
tests/e2e/conftest.py, private topics and keyspace on the local stack, shrunk horizons: 1 s
buckets, a schedule look-ahead of 3 s; the runner ticks every --tick-ms, 1 s as in production).
One-time messages go to the KAFKA app at --rate/s through the HTTP batch route, each due 2-4 s
after it is sent; their lateness (receipt by a read_committed consumer - sendAt) is measured
over --windows windows of --window-s each, first without schedules, then after --schedules
schedules `rate(1 hour)` were stored (spread evenly over the hour: --schedules / 3600
occurrences/s, to the same app) and the runner's first pass over them is done. The runner reads
every schedule again every --rescan-ms (5 min, as in production). Also: the releaser's CPU per
window (the occurrence runner is a thread of the leading releaser), the occurrences delivered
in the windows and their lateness. Target (issue #21): the one-time p50 and p99 with schedules
within 1.2x of without (medians of the windows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch_rig import machine_line  # noqa: E402
from bench.resources import cpu_seconds  # noqa: E402
from bench.stats import percentile  # noqa: E402
from scheduler.clock import SystemClock  # noqa: E402
from scheduler.domain.ids import occurrence_message_id  # noqa: E402
from scheduler.domain.recurrence import Recurrence  # noqa: E402
from scheduler.store.cassandra import connect  # noqa: E402
from scheduler.store.cassandra_schedules import CassandraScheduleStore  # noqa: E402
from scheduler.store.ports import Schedule  # noqa: E402
from scheduler.testing.servers import resolve_servers  # noqa: E402
from tests.e2e.conftest import World, private_settings, world  # noqa: E402
from tests.support.ledger import Ledger  # noqa: E402
from tests.support.workload import schedule_batch  # noqa: E402

CLOCK = SystemClock()
HOUR_MS = 3_600_000


def feed(w: World, ledger: Ledger, rate: int, stop: threading.Event) -> None:
    """Batches of rate/5 every 200 ms (paced by the clock, not by the answers), due 2-4 s
    ahead."""
    n = max(1, rate // 5)
    k, at = 0, time.monotonic()
    while not stop.wait(max(0.0, at - time.monotonic())):
        at += 0.2
        now = CLOCK.now_ms()
        schedule_batch(w.kafka_app, ledger, [now + 2_000 + (k + i) * 7 % 2_000 for i in range(n)])
        k += n


def window(w: World, rate: int, seconds: float, occurrence_due: dict[str, int]) -> dict[str, float]:
    """One measurement window: the one-time lateness, the releaser's CPU, the occurrences."""
    ledger = Ledger()
    releaser = w.system.procs["releaser"].pid
    cpu0, started = cpu_seconds(releaser) or 0.0, CLOCK.now_ms()
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(w, ledger, rate, stop), daemon=True)
    feeder.start()
    time.sleep(seconds)
    stop.set()
    feeder.join()
    cpu = (cpu_seconds(releaser) or cpu0) - cpu0
    ended = CLOCK.now_ms()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not set(ledger.planned) <= w.arrivals.ids():
        time.sleep(0.5)
    first: dict[str, int] = {}
    occurrences: list[int] = []
    for a in w.arrivals.snapshot():
        planned = ledger.planned.get(a.message_id)
        if planned is not None:
            first[a.message_id] = min(first.get(a.message_id, a.received_ms), a.received_ms)
        elif started <= occurrence_due.get(a.message_id, 0) < ended:  # due in the window
            occurrences.append(a.received_ms - occurrence_due[a.message_id])
    late = sorted(first[m] - p.send_at_ms for m, p in ledger.planned.items() if m in first)
    occurrences.sort()
    return {
        "rate": len(ledger.planned) / seconds,
        "sent": len(ledger.planned),
        "lost": len(ledger.planned) - len(first),
        "p50": percentile(late, 0.5),
        "p99": percentile(late, 0.99),
        "max": late[-1],
        "releaser_cpu_pct": 100 * cpu / ((ended - started) / 1000),
        "occurrences": len(occurrences),
        "occ_p99": percentile(occurrences, 0.99) if occurrences else float("nan"),
    }


def store_schedules(w: World, count: int) -> tuple[float, dict[str, int]]:
    """`count` schedules rate(1 hour), spread over the hour, written as ingest writes them;
    returns the seconds it took and the first occurrence of each (message id: instant)."""
    cluster, session = connect(w.cassandra, w.cassandra.keyspace)
    store = CassandraScheduleStore(session)
    now = CLOCK.now_ms()
    app_id = w.kafka_app.app_id

    first = {i: now + 60_000 + i * HOUR_MS // count for i in range(count)}

    def one(i: int) -> None:
        schedule = Schedule(
            app_id=app_id,
            schedule_id=f"load-{i:06d}",
            recurrence=Recurrence("rate(1 hour)", start_ms=first[i]),
            payload_json='{"load":true}',
            created_ms=now,
            updated_ms=now,
        )
        store.put(schedule)
        store.advance_cursor(app_id, schedule.schedule_id, now)

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(one, range(count), chunksize=256))
    finally:
        cluster.shutdown()
    took = time.monotonic() - started
    return took, {occurrence_message_id(app_id, f"load-{i:06d}", t): t for i, t in first.items()}


def show(label: str, runs: list[dict[str, float]]) -> dict[str, float]:
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    for r in runs:
        print(f"  {label} window: " + ", ".join(f"{k} {v:.0f}" for k, v in r.items()))
    print(f"  {label} median: " + ", ".join(f"{k} {v:.0f}" for k, v in medians.items()))
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=100, help="one-time messages per second")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=40.0)
    parser.add_argument("--rescan-ms", type=int, default=300_000, help="the runner's full passes")
    parser.add_argument("--tick-ms", type=int, default=1_000, help="the runner's tick")
    args = parser.parse_args()
    print(f"machine: {machine_line()}")
    kafka, cassandra = private_settings(resolve_servers())
    logs = Path(tempfile.mkdtemp(prefix="schedule_load_bench_"))
    # a periodic full pass of the runner within every window (production: every 5 min)
    extra = {
        "SCHEDULER_RELEASE_SCHEDULE_RESCAN_MS": str(args.rescan_ms),
        "SCHEDULER_RELEASE_SCHEDULE_TICK_MS": str(args.tick_ms),
    }
    with world(kafka, cassandra, logs, extra) as w:
        window(w, args.rate, 10, {})  # warm-up
        runs = [window(w, args.rate, args.window_s, {}) for _ in range(args.windows)]
        without = show("without", runs)
        took, due = store_schedules(w, args.schedules)
        print(f"stored {args.schedules:,} schedules in {took:.0f} s; waiting for the first pass")
        time.sleep(75)  # the first occurrences start 60 s after they were stored
        with_ = show(
            "with", [window(w, args.rate, args.window_s, due) for _ in range(args.windows)]
        )
    for k in ("p50", "p99"):
        print(f"one-time {k}: with / without = {with_[k] / max(without[k], 1):.2f}")
    print(f"logs: {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
