#!/usr/bin/env python3
"""`make demo`: the whole pipeline, watched live.

Bootstraps an owner and a control key through the operator CLI, registers an application that
points at a small HTTP receiver this script runs on loopback, creates a data key, schedules a
spread of messages (near-term ones straight into the ring, later ones through Cassandra and the
releaser, one in the past, one aborted) and a recurring schedule whose occurrences arrive as
messages too, shows each arrival with its dispatch delay (received -
max(sendAt, when it was scheduled): docs/ARCHITECTURE.md, "Lateness"), then a summary.
Exits 1 if anything was lost, early, duplicated or delivered after its abort.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx

from scheduler.clock import SystemClock
from scheduler.domain.ids import occurrence_message_id
from scheduler.testing.receiver import Arrival, Arrivals, HttpReceiver

ROOT = Path(__file__).resolve().parent.parent
CLOCK = SystemClock()


def run_cli(env: dict[str, str], *args: str) -> dict[str, str]:
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "scheduler"), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    ).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def profile(topology: str) -> tuple[dict[str, str], str]:
    """The services' environment and the first ingest's URL (devservers/system.py)."""
    sys.path.insert(0, str(ROOT / "devservers"))
    import system

    env, services = system.topology(topology)
    ingest = services[0]
    return env, ingest.url(ingest.environment(env), "")


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topology", choices=["single", "cluster"], default="single")
    parser.add_argument("--api", help="the ingest API (default: the topology's first ingest)")
    parser.add_argument("--count", type=int, default=30, help="messages to schedule")
    parser.add_argument("--horizon-s", type=float, default=40.0, help="latest due time, seconds")
    args = parser.parse_args()
    env, first_ingest = profile(args.topology)
    base_url = args.api or first_ingest
    api = httpx.Client(base_url=base_url, timeout=10)
    try:
        api.get("/readyz").raise_for_status()
    except httpx.HTTPError as exc:
        print(f"the system is not running at {base_url} ({exc}); start it with `make up`")
        return 1

    owner = f"demo-{uuid.uuid4().hex[:6]}@example.com"
    control = run_cli(env, "admin", "create-control-key", "--owner", owner)["secret"]
    print(f"1. owner {owner}: control key created through `scheduler admin create-control-key`")

    arrivals = Arrivals()
    receiver = HttpReceiver(arrivals).start()
    auth = {"Authorization": f"Token {control}"}
    app = (
        api.post(
            "/applications",
            headers=auth,
            json={
                "name": "demo receiver",
                "type": "REST",
                "endpoint": receiver.url,
            },
        )
        .raise_for_status()
        .json()
    )
    key = api.post(f"/applications/{app['id']}/data-keys", headers=auth).raise_for_status().json()
    data_auth = httpx.BasicAuth(app["id"], key["secret"])
    print(f"2. application {app['id']} -> receiver on 127.0.0.1:{receiver.port}; data key made")

    now = CLOCK.now_ms()
    plan: dict[str, int] = {}
    for i in range(args.count):
        send_at = (
            now - 5_000 if i == 0 else now + int(1_000 + i * args.horizon_s * 1_000 / args.count)
        )
        body = {"payload": {"n": i, "sendAt": send_at}, "sendAt": send_at}
        reply = api.post("/messages", auth=data_auth, json=body).raise_for_status().json()
        plan[reply["scheduledMessageId"]] = send_at
    doomed_at = now + int(args.horizon_s * 500)
    doomed = (
        api.post(
            "/messages",
            auth=data_auth,
            json={"payload": {"sendAt": doomed_at, "doomed": True}, "sendAt": doomed_at},
        )
        .raise_for_status()
        .json()["scheduledMessageId"]
    )
    api.put(f"/messages/{doomed}/abort", auth=data_auth).raise_for_status()
    print(
        f"3. scheduled {args.count} messages over the next {args.horizon_s:.0f} s (one in the past:"
        " 'now'; the later ones go through Cassandra and the releaser), and aborted one more"
    )
    every_s = 10
    start = now + 3_000
    recurring = (
        api.post(
            "/schedules",
            auth=data_auth,
            json={
                "expression": f"rate({every_s} seconds)",
                "start": start,
                "end": now + int(args.horizon_s * 1_000),
                "payload": {"recurring": True},
            },
        )
        .raise_for_status()
        .json()["scheduleId"]
    )
    for k in range(int(args.horizon_s * 1_000 - 3_000) // (every_s * 1_000) + 1):
        instant = start + k * every_s * 1_000
        plan[occurrence_message_id(app["id"], recurring, instant)] = instant
    print(
        f"   and a recurring schedule {recurring}, rate({every_s} seconds) until then: each"
        " occurrence is an ordinary message, created ahead by the releaser"
    )
    print("4. arrivals (dispatch delay = received - max(sendAt, when it was scheduled)):")

    def dispatch_delay(a: Arrival) -> int:
        # a sendAt in the past counts from when it was scheduled ("now"): the dispatch delay,
        # not the lateness (docs/ARCHITECTURE.md, "Lateness")
        return a.received_ms - max(plan.get(a.message_id, doomed_at), now)

    def show(a: Arrival) -> None:
        print(f"   {a.message_id}  attempt {a.attempt}  delay {dispatch_delay(a):5d} ms")

    deadline = max(plan.values()) + 15_000
    shown = 0
    while CLOCK.now_ms() < deadline and not set(plan) <= arrivals.ids():
        seen = arrivals.snapshot()
        for arrival in seen[shown:]:
            show(arrival)
        shown = len(seen)
        remaining = sorted(t for m, t in plan.items() if m not in arrivals.ids())
        if remaining and sys.stdout.isatty():
            wait_s = max(0.0, (remaining[0] - CLOCK.now_ms()) / 1000)
            print(f"   ... {len(remaining)} to come, next in {wait_s:4.1f} s", end="\r", flush=True)
        threading.Event().wait(0.2)
    for arrival in arrivals.snapshot()[shown:]:
        show(arrival)
    threading.Event().wait(2.0)  # a grace period: a duplicate or the aborted one would show here
    receiver.close()

    everything = arrivals.snapshot()
    received = [a for a in everything if a.message_id in plan]
    ids = [a.message_id for a in received]
    late = [dispatch_delay(a) for a in received]
    early = [a for a in received if a.received_ms < plan[a.message_id]]
    lost = set(plan) - set(ids)
    duplicates = len(ids) - len(set(ids))
    aborted_delivered = any(a.message_id == doomed for a in everything)
    print("5. summary")
    print(
        f"   sent {len(set(ids))}/{len(plan)}  lost {len(lost)}  early {len(early)}  "
        f"duplicates {duplicates}  aborted-but-delivered {int(aborted_delivered)}"
    )
    if late:
        print(
            f"   dispatch delay p50 {statistics.median(late):.0f} ms  "
            f"p99 {percentile(late, 0.99)} ms  max {max(late)} ms"
        )
    api.delete(f"/schedules/{recurring}", auth=data_auth).raise_for_status()
    statuses = api.get(f"/messages/{doomed}", auth=data_auth).json().get("status")
    print(f"   the aborted message's record says {statuses}")
    ok = not lost and not early and not duplicates and not aborted_delivered
    print("   OK" if ok else "   PROBLEMS: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
