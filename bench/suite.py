"""The benchmark suite (`make bench`): the whole system on the local stack, every service its
own process, measured section by section; writes BENCHMARKS.md, docs/bench/*.png and
docs/bench/results.json.

    .venv/bin/python -m bench.suite --quick            # a few minutes, small sizes
    .venv/bin/python -m bench.suite                    # the full run (about 35 min on 2 cores)
    .venv/bin/python -m bench.suite --with-10m         # + 10 M pending (2 h more at most)
    .venv/bin/python -m bench.suite --render docs/bench/results.json       # report only

Bounded: a global deadline (--deadline-s) and a timeout per section; a section that overruns
is recorded as such and the suite goes on with the next. Private topics and keyspace, the
service processes and the load generator are removed on the way out, also on an error,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench import cassandra_ops, plots, scenarios
from bench.delivery import CLOCK
from bench.machine import describe
from bench.report import IDLE_SERVICES, IDLE_STACK, PRODUCTION_LABEL, render
from bench.resources import Sampler, child_pids, stack_pids
from bench.scenarios import FULL, QUICK, Profile
from bench.storage import REPO
from bench.world import PRODUCTION, SCHEDULING, World, settings_env, world
from scheduler.testing.servers import resolve_servers

T = TypeVar("T")
CLEANUP_RESERVE_S = 90.0  # kept free at the end: stop services, drop topics and keyspace
MAIN_THREAD = threading.main_thread().ident or 0
TEN_MILLION = 10_000_000
SECTIONS = ("idle", "steady", "saturation", "hotspot", "recovery", "ingest", "pending")
IDLE_SETTLE_S = 15.0  # after the services started: their start-up is not idle cost


class Budget:
    """The global deadline, and a per-section timer that interrupts the main thread."""

    def __init__(self, total_s: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + total_s
        self.fired: str | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic() - CLEANUP_RESERVE_S

    def run(self, name: str, timeout_s: float, errors: list[str], fn: Callable[[], T]) -> T | None:
        allowed = min(timeout_s, self.remaining())
        if allowed < 10:
            errors.append(f"{name}: skipped, the suite's deadline is near")
            return None
        self.fired = None

        def fire() -> None:
            self.fired = name
            # a real signal (not _thread.interrupt_main): it also ends a blocking sleep or join
            signal.pthread_kill(MAIN_THREAD, signal.SIGINT)

        timer = threading.Timer(allowed, fire)
        timer.daemon = True
        timer.start()
        print(f"[bench] {name} (at most {allowed:.0f} s)", flush=True)
        started = time.monotonic()
        try:
            result = fn()
            print(f"[bench] {name}: done in {time.monotonic() - started:.0f} s", flush=True)
            return result
        except KeyboardInterrupt:
            if self.fired != name:
                raise  # Ctrl-C or SIGTERM: stop the suite (cleanup runs on the way out)
            errors.append(f"{name}: timed out after {allowed:.0f} s")
        except Exception as exc:
            traceback.print_exc()
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            timer.cancel()
        print(f"[bench] {name}: {errors[-1]}", flush=True)
        return None


def profile_from(args: argparse.Namespace) -> Profile:
    p = QUICK if args.quick else FULL
    if args.rates:
        p = replace(p, rates=tuple(args.rates))
    if args.hotspot:
        p = replace(p, hotspot=args.hotspot)
    if args.pending:
        p = replace(p, pending=tuple(args.pending))
    if args.with_10m:
        p = replace(p, pending=(*p.pending, TEN_MILLION))
    if args.runs:
        p = replace(p, steady_runs=args.runs, ingest_runs=args.runs)
    if args.saturation_rates:
        p = replace(p, saturation_rates=tuple(sorted(args.saturation_rates)))
    if args.production_dispatchers:
        p = replace(p, production_dispatchers=args.production_dispatchers)
    return p


def run_sections(
    w: World, p: Profile, only: set[str], budget: Budget, sampler: Sampler, workdir: Path
) -> dict[str, Any]:
    with cassandra_ops.counter(w.cassandra) as snapshot:
        return _run_sections(w, p, only, budget, sampler, workdir, snapshot)


def production_hotspot(
    servers: Any, p: Profile, budget: Budget, sampler: Sampler, workdir: Path, current: list[World]
) -> dict[str, Any]:
    """The hotspot again, in a world of its own with the services' default horizons: 100,000
    due 65 s ahead go straight into their due-minute ring topic, as in production (#20's
    target), instead of through a one-second bucket released 4 s before it is due. Its
    dispatcher runs as `p.production_dispatchers` instances, as a deployment scales it."""
    logs = workdir / "production-horizons"
    logs.mkdir(parents=True, exist_ok=True)
    dispatchers = p.production_dispatchers
    with world(servers, logs, 2, PRODUCTION, dispatchers) as w:
        current.append(w)
        try:
            with cassandra_ops.counter(w.cassandra) as snapshot:
                results = _run_sections(
                    w, p, {"hotspot"}, budget, sampler, logs, snapshot, PRODUCTION_LABEL
                )
            if results.get("hotspot"):
                results["hotspot"]["dispatchers"] = dispatchers
            return results
        finally:
            current.clear()


def _run_sections(
    w: World,
    p: Profile,
    only: set[str],
    budget: Budget,
    sampler: Sampler,
    workdir: Path,
    snapshot: Callable[[], cassandra_ops.Counts | None],
    label: str = "",
) -> dict[str, Any]:
    results: dict[str, Any] = {"errors": [], "cassandra_ops": {}}
    errors: list[str] = results["errors"]
    mono = time.monotonic

    def section(name: str, timeout_s: float, fn: Callable[[], T]) -> T | None:
        before = snapshot()
        try:
            with sampler.phase(name, mono):
                try:
                    return budget.run(name, timeout_s, errors, fn)
                finally:
                    if not w.wait_for_records():
                        errors.append(f"{name}: the record writers were behind at its end")
        finally:
            after = snapshot()
            if before is not None and after is not None:
                results["cassandra_ops"][name] = cassandra_ops.delta(before, after)

    if "idle" in only:
        time.sleep(IDLE_SETTLE_S)
        section(IDLE_SERVICES, p.idle_seconds + 30, lambda: time.sleep(p.idle_seconds))
    if "steady" in only:
        results["steady"] = []
        for destination in ("kafka", "rest"):
            for rate in p.rates:
                timeout = p.steady_runs * (p.steady_seconds * 3 + 90)
                got = section(
                    f"steady {destination} {rate}/s",
                    timeout,
                    lambda d=destination, r=rate: scenarios.steady(w, workdir, d, r, p),
                )
                if got:
                    results["steady"].append(got)
    if "saturation" in only:
        results["saturation"] = section(
            "saturation kafka",
            len(p.saturation_rates) * (scenarios.SATURATION_S + 120),
            lambda: scenarios.saturation(w, workdir, p, cpu_between=sampler.cpu_between),
        )
    if "hotspot" in only:
        results["hotspot"] = section(
            f"hotspot {p.hotspot}{label}",
            (scenarios.hotspot_lead_ms(p.hotspot) + scenarios.hotspot_wait_ms(p.hotspot)) / 1000
            + 90,
            lambda: scenarios.hotspot(w, workdir, p),
        )
    if "recovery" in only:
        results["recovery"] = []
        for service in ("dispatcher", "bucketer"):
            got = section(
                f"recovery {service} kill -9",
                p.recovery_seconds * 3 + 180,
                lambda s=service: scenarios.recovery(w, workdir, s, p),
            )
            if got:
                results["recovery"].append(got)
    if "ingest" in only:
        results["ingest"] = section(
            "ingest",
            p.ingest_runs * 3 * (p.ingest_seconds + 150),
            lambda: scenarios.ingest(w, workdir, p),
        )
    if "pending" in only:
        results["pending"] = []
        for target in p.pending:
            # loading stops in time for the flushes and the steady run after it
            load_s = budget.remaining() - p.steady_seconds * 3 - 150
            if load_s < 30:
                errors.append(f"pending {target:,}: skipped, the suite's deadline is near")
                continue
            until_ms = CLOCK.now_ms() + int(load_s * 1000)
            got = section(
                f"pending {target:,}",
                load_s + p.steady_seconds * 3 + 140,
                lambda n=target, u=until_ms: scenarios.pending(w, workdir, n, p, u),
            )
            if got:
                results["pending"].append(got)
    return results


def watched(w: World | None, state_dir: Path) -> dict[str, int]:
    """The processes whose CPU and memory the report shows, by name."""
    pids = {"suite": os.getpid(), **stack_pids(state_dir)}
    for child in multiprocessing.active_children():
        pids[child.name.removeprefix("bench-")] = child.pid or 0
    if w is not None:
        for name, proc in w.system.procs.items():
            if proc.poll() is None:
                pids[name] = proc.pid
                # the dispatcher's record writer (and multiprocessing's resource tracker) are
                # its child processes: each shown in its own column
                for child_pid, child_name in child_pids(proc.pid):
                    pids[f"{name}/{child_name}"] = child_pid
    return pids


def strip_series(value: Any) -> Any:
    """results.json without the raw series (the plots are drawn from them first)."""
    if isinstance(value, dict):
        return {k: strip_series(v) for k, v in value.items() if k != "series"}
    if isinstance(value, list):
        return [strip_series(v) for v in value]
    return value


def write_outputs(results: dict[str, Any], out: Path, plot_dir: Path) -> None:
    drawn = plots.draw_all(results, plot_dir)
    slim = strip_series(results)
    (plot_dir / "results.json").write_text(json.dumps(slim, indent=1) + "\n")
    out.write_text(render(slim))
    print(f"[bench] wrote {out}, {plot_dir / 'results.json'} and {len(drawn)} plots", flush=True)


@contextlib.contextmanager
def work_folder(keep: Path | None) -> Iterator[str]:
    """Where the services log and the runs keep their ledgers: `keep`, or a temporary folder."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            yield tmp
        return
    keep.mkdir(parents=True, exist_ok=True)
    print(f"[bench] the services' logs and the ledgers stay in {keep}", flush=True)
    yield str(keep)


def interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def command(argv: list[str]) -> str:
    """The exact command (what `make bench BENCH_ARGS="..."` runs)."""
    return shlex.join([".venv/bin/python", "-m", "bench.suite", *argv])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument("--deadline-s", type=float, help="stop by then (default 2100 / 900)")
    parser.add_argument("--rates", type=int, action="append", help="steady rates, msg/s")
    parser.add_argument("--runs", type=int, help="runs per steady rate and ingest path")
    parser.add_argument("--hotspot", type=int, help="messages due in the same second")
    parser.add_argument(
        "--saturation-rates", type=int, action="append", help="rates tried for the saturation"
    )
    parser.add_argument(
        "--production-dispatchers",
        type=int,
        choices=(1, 2),
        help="dispatcher instances of the production-horizon hotspot (default 2)",
    )
    parser.add_argument(
        "--pending", type=int, action="append", help="pending counts (repeat; 10000000 = 10 M)"
    )
    parser.add_argument(
        "--with-10m",
        action="store_true",
        help="also 10 million pending (adds 2 h to the default deadline)",
    )
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run these sections")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--plots", type=Path, default=REPO / "docs" / "bench")
    parser.add_argument("--note", default="", help="a line for the report's header")
    parser.add_argument("--render", type=Path, help="re-render the report from a results.json")
    parser.add_argument(
        "--keep-logs",
        type=Path,
        help="write the services' logs and the runs' ledgers to this folder and keep them"
        " (default: a temporary folder, removed at the end)",
    )
    args = parser.parse_args(argv)
    if args.render:
        args.out.write_text(render(json.loads(args.render.read_text())))
        return 0

    p = profile_from(args)
    default_s = (900.0 if args.quick else 2100.0) + (7200.0 if args.with_10m else 0.0)
    budget = Budget(args.deadline_s or default_s)
    only = set(args.only or SECTIONS)
    # SIGTERM ends the suite like Ctrl-C: the cleanup below runs
    signal.signal(signal.SIGTERM, interrupted)
    state_dir = Path(os.environ.get("SCHEDULER_STACK_STATE_DIR", REPO / ".local"))
    started = datetime.fromtimestamp(CLOCK.now_ms() / 1000, UTC)
    machine = describe(REPO)
    servers = resolve_servers()
    current: list[World] = []
    sampler = Sampler(lambda: watched(current[0] if current else None, state_dir)).start()
    results: dict[str, Any] = {}
    if "idle" in only:  # before any service of the run starts
        with sampler.phase(IDLE_STACK, time.monotonic):
            time.sleep(p.idle_seconds)
    try:
        with (
            work_folder(args.keep_logs) as tmp,
            world(servers, Path(tmp), partitions=2) as w,
        ):
            current.append(w)
            settings: dict[str, Any] = {
                **SCHEDULING.model_dump(),
                **settings_env(w.kafka),
                "partitions (requests, due ring, destination)": 2,
                "partitions (results)": w.kafka.results_partitions,
            }
            results = run_sections(w, p, only, budget, sampler, Path(tmp))
            current.clear()
        if "hotspot" in only:
            with work_folder(args.keep_logs) as tmp:
                more = production_hotspot(servers, p, budget, sampler, Path(tmp), current)
            results["hotspot_production"] = more.get("hotspot")
            results["errors"] += more["errors"]
            results["cassandra_ops"].update(more["cassandra_ops"])
    except KeyboardInterrupt:
        print("[bench] interrupted: cleaned up; no report written", flush=True)
        return 130
    finally:
        sampler.close()
    results["meta"] = {
        "mode": p.name,
        "command": command(argv if argv is not None else sys.argv[1:]),
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round(time.monotonic() - budget.started),
        "machine": machine,
        "settings": settings,
        "profile": asdict(p),
        "note": args.note,
    }
    results["resources"] = sampler.phases
    write_outputs(results, args.out, args.plots)
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
