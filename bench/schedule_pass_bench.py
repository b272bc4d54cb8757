"""What the occurrence runner's pass over every schedule costs, per schedule.

    .venv/bin/python bench/schedule_pass_bench.py [--schedules 20000] [--payload-bytes 4096]

Stores --schedules schedules in a private keyspace of the local Cassandra (dropped afterwards),
over 10 applications: half share one cron timing (`0 9 * * 1-5`, Europe/Berlin), half are
`rate(1 hour)` each with its own start, every one with a --payload-bytes payload. Then, --runs
times, the pass as the runner makes it (`scan_timings`: the timing columns, no payload; the
wake-up of each, `due_schedules.wake_ms`) beside the same over whole rows, payload included
(`list`, page by page: what a pass read before it read timings only). Prints this process's
CPU and the wall time per schedule, medians of the runs. Cassandra's own CPU is not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cassandra_ops import private_keyspace
from bench.dispatch_rig import machine_line
from scheduler.domain.recurrence import Recurrence
from scheduler.store.cassandra_schedules import CassandraScheduleStore
from scheduler.store.ports import Schedule, ScheduleTiming
from scheduler_releaser.releaser.due_schedules import wake_ms

T0 = 1_893_499_200_000
APPS = [f"app-{i}" for i in range(10)]
LOOKAHEAD_MS = 300_000


def schedules(count: int, payload_bytes: int) -> list[Schedule]:
    payload = json.dumps({"data": "x" * max(0, payload_bytes - 11)})
    out = []
    for i in range(count):
        recurrence = (
            Recurrence("0 9 * * 1-5", "Europe/Berlin")
            if i % 2
            else Recurrence("rate(1 hour)", start_ms=T0 + i * 37)
        )
        out.append(Schedule(APPS[i % len(APPS)], f"s-{i:07d}", recurrence, payload, T0, T0))
    return out


def timed(label: str, count: int, walk: Callable[[], Iterable[object]]) -> tuple[float, float]:
    """(CPU µs, wall µs) per schedule of one walk; checks it saw every schedule."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    seen = 0
    for item in walk():
        wake_ms(item, T0, LOOKAHEAD_MS)  # type: ignore[arg-type]
        seen += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if seen != count:
        raise SystemExit(f"{label}: read {seen} schedules, stored {count}")
    return 1e6 * cpu / count, 1e6 * wall / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=20_000)
    parser.add_argument("--payload-bytes", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine_line()}")
    with private_keyspace(T0) as session:
        store = CassandraScheduleStore(session)
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(store.put, schedules(args.schedules, args.payload_bytes), chunksize=64))
        print(f"stored {args.schedules:,} schedules in {time.perf_counter() - started:.0f} s")

        def timings() -> Iterable[ScheduleTiming]:
            return store.scan_timings()

        def whole_rows() -> Iterable[Schedule]:
            for app_id in APPS:
                cursor: str | None = None
                while True:
                    page = store.list(app_id, cursor, 500)
                    yield from page.items
                    if (cursor := page.next_cursor) is None:
                        break

        walks = {"timings (the pass)": timings, "whole rows": whole_rows}
        results: dict[str, list[tuple[float, float]]] = {label: [] for label in walks}
        for run in range(args.runs):
            for label, walk in walks.items():
                cpu_us, wall_us = timed(label, args.schedules, walk)
                results[label].append((cpu_us, wall_us))
                print(f"run {run + 1} {label}: CPU {cpu_us:.1f} µs, wall {wall_us:.1f} µs each")
        for label, rows in results.items():
            print(
                f"MEDIANS {label}, {args.payload_bytes:,} B payloads: CPU"
                f" {statistics.median(r[0] for r in rows):.1f} µs, wall"
                f" {statistics.median(r[1] for r in rows):.1f} µs per schedule"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
