"""Dispatcher restart benchmark: the results a restart reloads, and how soon it fires again.

How many delivery results a restart reloads, how far back they go, and how long the dispatcher
takes to fire again. Prints the figures.

    .venv/bin/python bench/dispatch_restart_bench.py [--runs 3] [--minutes 4] [--stop kill]
    .venv/bin/python bench/dispatch_restart_bench.py --refresh-ms 1000000000   # never refreshed
    .venv/bin/python bench/dispatch_restart_bench.py --code eeb3262            # older code

One `scheduler-dispatcher` process on private topics and keyspace (bench/dispatch_rig.py) with
the production ring (60 topics of one 60 s slot, look-ahead 5 min), one KAFKA app. A feeder
process produces ring records at --rate (1,000/s), each into the topic of its due slot
--lead-s ahead of its due instant (as the releaser does), for --minutes; then the dispatcher is
stopped (kill -9, or SIGTERM with --stop term) and started again at once while the feed goes
on. Reported per run:

- the commit metadata Kafka holds for the dispatcher's ring offsets when it restarts (the
  instant each names), and the `since` the restart derives from it (its log line "results
  matter since"), as seconds before the restart;
- the settled attempts it loads from the results topic (its log "N settled attempts loaded")
  and how long that reading took (between those two log lines);
- time from spawning the process to /readyz answering 200 and to the first delivery a
  read_committed consumer of the destination receives;
- the deliveries across the restart: lost, duplicated, and the lateness of those due while it
  was down or starting.

The bound (services/releaser/scheduler_releaser/offsets.py, sink.py): results matter since the
oldest commit metadata, the receipt of the oldest unsettled record when the offsets were last
committed. A ring record is received when its slot becomes the next one, so the oldest
unsettled one was received at most 2 slots before; every partition's offset (idle ones too)
is committed again every SCHEDULER_DISPATCH_OFFSETS_REFRESH_MS (60 s); the restart subtracts
results_slack_ms (10 s). So `since` lies at most 2 x 60 + 60 + 10 = 190 s before the restart
(at least 1 slot + 10 s = 70 s), and the reload is about rate x that. Without the refresh (the
code before it, or --refresh-ms huge), idle partitions keep the metadata of their last commit:
the process start in a short run, up to a whole ring cycle (1 h) in steady state.

Medians of --runs runs with min and max, and every run's figures.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch_rig import (  # noqa: E402
    CLOCK,
    DestReader,
    Rig,
    StartupLog,
    code_env,
    describe_code,
    feed_ring,
    machine_line,
    rig,
    spawn,
)
from bench.stats import per_second, recovery_s  # noqa: E402
from scheduler.settings import SchedulingSettings  # noqa: E402

APP = "restart-app"
SLACK_MS = 10_000  # DispatchSettings.results_slack_ms (default)
REFRESH_MS = 60_000  # DispatchSettings.offsets_refresh_ms (default)


@dataclass
class Start:
    spawned_ms: int
    up_ms: int  # the ops server answers (imports done)
    ready_ms: int
    first_fire_ms: int | None
    log: StartupLog

    @property
    def ready_s(self) -> float:
        return (self.ready_ms - self.spawned_ms) / 1000

    @property
    def first_fire_s(self) -> float | None:
        if self.first_fire_ms is None:
            return None
        return (self.first_fire_ms - self.spawned_ms) / 1000

    @property
    def load_s(self) -> float | None:
        return _between(self.log.since_logged_ms, self.log.loaded_logged_ms)

    def phases(self) -> dict[str, float | None]:
        """spawn -> ops server up -> producers fenced (Cassandra connected, Kafka transactional
        ids initialised) -> ring assigned (commands view caught up) -> results loaded -> ready"""
        log = self.log
        return {
            "up_s": _between(self.spawned_ms, self.up_ms),
            "fence_s": _between(self.up_ms, log.fenced_logged_ms),
            "assign_s": _between(log.fenced_logged_ms, log.since_logged_ms),
            "load_s": self.load_s,
            "ready_s": self.ready_s,
        }


def _between(a: int | None, b: int | None) -> float | None:
    return None if a is None or b is None else (b - a) / 1000


def start(r: Rig, reader: DestReader) -> Start:
    offset = r.log_size()
    spawned = r.start()
    up, ready = r.wait_ready()
    # the first delivery of this incarnation (give it up to 10 s after ready)
    first = None
    deadline = time.monotonic() + 10
    while first is None and time.monotonic() < deadline:
        first = min(
            (a.received_ms for a in reader.arrivals() if a.received_ms >= spawned), default=None
        )
        time.sleep(0.02)
    return Start(spawned, up, ready, first, StartupLog.read(r.log_path, offset))


def one_run(args: argparse.Namespace, env: dict[str, str]) -> list[dict[str, float | int | None]]:
    """One rig: feed, then --restarts stop-and-start cycles. Figures per restart."""
    scheduling = SchedulingSettings()  # production: 60 topics of one 60 s slot
    restarts: list[dict[str, float | int | None]] = []
    with (
        rig(
            scheduling, apps=[APP], ring_partitions=args.partitions, env=env, name="restart_bench"
        ) as r,
        DestReader(r, [r.dests[APP]]) as reader,
    ):
        first = start(r, reader)
        print(
            f"  first start: ready in {first.ready_s:.2f} s, loaded {first.log.loaded}"
            f" (logs in {r.logs})",
            flush=True,
        )
        time.sleep(2)  # the future slots are probed empty and paused before the feed starts
        fed_from = CLOCK.now_ms()
        first_due = fed_from + 15_000
        # a random phase of the offsets refresh and of the ring slot at the stop
        restart_at = fed_from + int(args.minutes * 60_000 + random.uniform(0, args.jitter_s) * 1000)
        last_due = restart_at + (args.restarts * (args.between_s + 30) + args.after_s + 30) * 1000
        out = Path(tempfile.mkstemp(prefix="restart_feed_", suffix=".json")[1])
        feeder = spawn(
            feed_ring,
            r.kafka.model_dump(),
            scheduling.model_dump(),
            APP,
            args.rate,
            first_due,
            last_due,
            args.lead_s * 1000,
            str(out),
        )
        try:
            for n in range(args.restarts):
                while (left := restart_at - CLOCK.now_ms()) > 0:
                    if feeder.exitcode:
                        raise RuntimeError(f"the feeder failed ({feeder.exitcode})")
                    time.sleep(min(left, 5_000) / 1000)
                arrived_before = len({a.message_id for a in reader.arrivals()})
                stopped_ms = CLOCK.now_ms()
                if args.stop == "kill":
                    r.system.kill9("dispatcher")
                else:
                    r.system.stop("dispatcher")
                down_ms = CLOCK.now_ms()
                committed = r.committed_metadata()
                again = start(r, reader)
                metas = [m for _, m in committed.values() if m is not None]
                since = again.log.since_ms
                restarts.append(
                    {
                        "uptime_s": (stopped_ms - first.spawned_ms) / 1000,
                        "delivered_before_stop": arrived_before,
                        "stop_s": (down_ms - stopped_ms) / 1000,
                        "partitions_committed": len(metas),
                        "partitions": len(committed),
                        "meta_oldest_s": (again.spawned_ms - min(metas)) / 1000 if metas else None,
                        "meta_newest_s": (again.spawned_ms - max(metas)) / 1000 if metas else None,
                        "since_s": (again.spawned_ms - since) / 1000 if since is not None else None,
                        "loaded": again.log.loaded,
                        **again.phases(),
                        "first_fire_s": again.first_fire_s,
                        "first_ready_s": first.ready_s,
                        "stopped_ms": stopped_ms,
                        "ready_ms": again.ready_ms,
                    }
                )
                if n + 1 < args.restarts:
                    print(f"  restart {n + 1}: {restarts[-1]}", flush=True)
                restart_at = again.ready_ms + args.between_s * 1000
            time.sleep(args.after_s)
            arrivals = reader.arrivals()
        finally:
            feeder.terminate()
            feeder.join(10)
    # deliveries: every message due before the check point arrived exactly once?
    last = restarts[-1]
    assert isinstance(last["ready_ms"], int) and isinstance(last["stopped_ms"], int)
    check_until = last["ready_ms"] + (args.after_s - 10) * 1000
    expected = sum(
        1
        for i in range((check_until - first_due) * args.rate // 1000 + 1)
        if first_due + i * 1000 // args.rate < check_until
    )
    seen: dict[str, int] = {}
    duplicates = 0
    points = []
    for a in arrivals:
        if a.message_id in seen:
            duplicates += 1
            continue
        seen[a.message_id] = a.received_ms
        points.append((a.due_ms, a.received_ms - a.due_ms))
    due_seen = [d for d, _ in points if d < check_until]
    seconds = per_second(points, first_due)
    stops = [int(f["stopped_ms"] or 0) for f in restarts]
    for n, figures in enumerate(restarts):
        stopped, ready = figures.pop("stopped_ms"), figures.pop("ready_ms")
        assert isinstance(stopped, int) and isinstance(ready, int)
        outage = [late for d, late in points if stopped <= d < ready]
        figures["outage_due"] = len(outage)
        figures["outage_max_late_ms"] = max(outage, default=None)
        # up to the next stop, if any
        until = (stops[n + 1] - first_due) // 1000 if n + 1 < len(stops) else None
        upto = [x for x in seconds if until is None or x[0] < until]
        figures["recovery_s"] = recovery_s(upto, (stopped - first_due) // 1000, args.steady_ms)
    last["lost"] = expected - len(due_seen)
    last["duplicates"] = duplicates
    return restarts


LABELS = {
    "uptime_s": "uptime before the stop (s)",
    "delivered_before_stop": "delivered before the stop",
    "stop_s": "stop took (s)",
    "meta_oldest_s": "oldest commit metadata, before the restart (s)",
    "meta_newest_s": "newest commit metadata, before the restart (s)",
    "since_s": "results since, before the restart (s)",
    "loaded": "settled attempts loaded",
    "up_s": "spawn -> ops server answers (imports) (s)",
    "fence_s": "ops server -> producers fenced (Cassandra connect, init_transactions) (s)",
    "assign_s": "fenced -> ring assigned (commands view caught up) (s)",
    "load_s": "ring assigned -> results loaded (s)",
    "ready_s": "spawn -> /readyz 200 (s)",
    "first_fire_s": "spawn -> first delivery received (s)",
    "outage_max_late_ms": "max lateness of those due while down/starting (ms)",
    "recovery_s": "seconds from the stop until lateness steady",
    "lost": "lost (after the last restart)",
    "duplicates": "duplicates (over the run)",
    "first_ready_s": "first start: spawn -> /readyz 200 (s)",
}


def report(runs: list[dict[str, float | int | None]]) -> None:
    for key, label in LABELS.items():
        values = [r[key] for r in runs if key in r]
        known = [float(v) for v in values if v is not None]
        shown = ", ".join(
            "n/a" if v is None else f"{v:,.2f}".rstrip("0").rstrip(".") for v in values
        )
        if not values:
            continue
        if known:
            print(
                f"  {label}: median {statistics.median(known):,.2f} (min {min(known):,.2f},"
                f" max {max(known):,.2f}); runs: {shown}"
            )
        else:
            print(f"  {label}: n/a")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=4.0, help="feeding before the stop")
    parser.add_argument(
        "--jitter-s", type=float, default=60, help="plus a random 0..this before the stop"
    )
    parser.add_argument("--rate", type=int, default=1000, help="messages coming due per second")
    parser.add_argument("--lead-s", type=int, default=150, help="ring records produced this early")
    parser.add_argument("--partitions", type=int, default=2, help="partitions per ring topic")
    parser.add_argument("--stop", choices=["kill", "term"], default="kill")
    parser.add_argument("--after-s", type=int, default=30, help="watched after the restart")
    parser.add_argument("--restarts", type=int, default=1, help="stop-and-start cycles")
    parser.add_argument(
        "--between-s", type=int, default=60, help="ready -> the next stop (--restarts > 1)"
    )
    parser.add_argument(
        "--steady-ms", type=int, default=1000, help="lateness threshold of 'steady again'"
    )
    parser.add_argument(
        "--refresh-ms", type=int, default=0, help="SCHEDULER_DISPATCH_OFFSETS_REFRESH_MS"
    )
    parser.add_argument(
        "--code", default="", help="git revision whose dispatcher to run (default: the checkout)"
    )
    args = parser.parse_args()
    env = code_env(args.code)
    refresh = args.refresh_ms or REFRESH_MS
    if args.refresh_ms:
        env["SCHEDULER_DISPATCH_OFFSETS_REFRESH_MS"] = str(args.refresh_ms)
    slot_ms = SchedulingSettings().ring_slot_ms
    print(f"machine: {machine_line()}")
    print(
        f"dispatcher: {describe_code(args.code)}; {args.rate:,} msg/s to a KAFKA app, ring records"
        f" {args.lead_s} s ahead, {args.partitions} partitions per ring topic, production ring"
        f" (60 x {slot_ms // 1000} s); {args.minutes:g} min + 0-{args.jitter_s:g} s,"
        f" then {args.stop}"
        + (" -9" if args.stop == "kill" else "")
        + f" and restart; offsets refresh {refresh / 1000:g} s"
    )
    bound_s = (2 * slot_ms + refresh + SLACK_MS) / 1000
    print(
        f"bound: results since at most 2 slots + refresh + slack = {bound_s:g} s before the restart"
        f" (at least {(slot_ms + SLACK_MS) / 1000:g} s), i.e. about {args.rate * bound_s:,.0f}"
        " settled attempts at most at this rate",
        flush=True,
    )
    runs = []
    for n in range(args.runs):
        print(f"run {n + 1}/{args.runs}", flush=True)
        restarts = one_run(args, env)
        figures = restarts[-1]
        print(
            "  "
            + "; ".join(
                f"{k} {v if not isinstance(v, float) else round(v, 2)}" for k, v in figures.items()
            ),
            flush=True,
        )
        runs.append(restarts)
    for k in range(args.restarts):
        which = f", restart {k + 1} of {args.restarts}" if args.restarts > 1 else ""
        print(f"figures ({len(runs)} runs{which}):")
        report([restarts[k] for restarts in runs])
    return 0 if all(restarts[-1]["lost"] == 0 for restarts in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
