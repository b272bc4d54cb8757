#!/usr/bin/env python3
"""Soak runner (a canary): for --duration-s, schedule messages at --rate per second, each due
at a random instant within the next --horizon-s, receive them, and report at the end.

    .venv/bin/python bench/soak.py --duration-s 600 --rate 20 --horizon-s 300   # by hand
    .venv/bin/python bench/soak.py --duration-s 10 --rate 20 --horizon-s 20     # short

Uses a running system (`make up`): the ingest API at --api, the operator CLI with the local
profile (devservers/local.env, overridden by the environment) for a fresh owner's control key.
It creates a REST application pointing at an HTTP receiver it runs on loopback, or with
--destination kafka a KAFKA application writing to a new topic `demo.soak-<id>` read by a
read_committed consumer (the local profile allows KAFKA apps on `demo.*`).

Prints arrival delay (receipt - sendAt) p50/p99/max, lost, early and duplicates. Exit status:
0 if nothing was lost or early, 1 otherwise (duplicates are reported: at-least-once to HTTP).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the ledger and the workload helpers are shared with tests/e2e
sys.path.insert(0, str(ROOT / "devservers"))

from scheduler.clock import SystemClock  # noqa: E402
from scheduler.settings import KafkaSettings  # noqa: E402
from scheduler.testing.receiver import Arrivals, HttpReceiver, KafkaReceiver  # noqa: E402
from tests.support.ledger import Ledger, Planned, percentile  # noqa: E402
from tests.support.workload import create_topic  # noqa: E402

CLOCK = SystemClock()
TICK_S = 0.1


def environment() -> dict[str, str]:
    """The local profile under the process environment (the environment wins)."""
    from system import local_env

    return local_env()


def control_key(env: dict[str, str]) -> str:
    owner = f"soak-{uuid.uuid4().hex[:6]}@example.com"
    out = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "scheduler"),
            "admin",
            "create-control-key",
            "--owner",
            owner,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    fields = {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())
    }
    return fields["secret"]


def make_app(api: httpx.Client, key: str, kind: str, endpoint: str) -> httpx.BasicAuth:
    auth = {"Authorization": f"Token {key}"}
    body = {"name": f"soak {kind.lower()}", "type": kind, "endpoint": endpoint}
    app = api.post("/applications", headers=auth, json=body).raise_for_status().json()
    data = api.post(f"/applications/{app['id']}/data-keys", headers=auth).raise_for_status().json()
    return httpx.BasicAuth(app["id"], data["secret"])


def schedule(
    api: httpx.Client,
    auth: httpx.BasicAuth,
    ledger: Ledger,
    destination: str,
    args: argparse.Namespace,
    rng: random.Random,
) -> int:
    """Schedule at the rate for the duration; returns the requests that were refused."""
    refused = 0
    owed = 0.0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < args.duration_s:
        owed += args.rate * TICK_S
        count, owed = int(owed), owed - int(owed)
        now = CLOCK.now_ms()
        send_ats = [now + rng.randint(0, int(args.horizon_s * 1000)) for _ in range(count)]
        if send_ats:
            items = [{"payload": {"sendAt": t}, "sendAt": t} for t in send_ats]
            try:
                answer = api.post("/messages/batch", auth=auth, json={"messages": items})
                acked = CLOCK.now_ms()
                results = answer.json()["results"] if answer.status_code == 200 else []
            except (httpx.HTTPError, ValueError):
                results, acked = [], 0
            if not results:
                refused += len(send_ats)
            for item, send_at in zip(results, send_ats, strict=False):
                if "scheduledMessageId" in item:
                    ledger.add(Planned(item["scheduledMessageId"], send_at, destination, acked))
                else:
                    refused += 1
        if args.progress:
            print(f"\r  scheduled {len(ledger)} in {elapsed:5.1f} s", end="", flush=True)
        time.sleep(max(0.0, TICK_S - (time.monotonic() - started - elapsed)))
    if args.progress:
        print()
    return refused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080", help="the ingest gateway")
    parser.add_argument("--duration-s", type=float, default=60.0, help="how long to schedule")
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second")
    parser.add_argument("--horizon-s", type=float, default=120.0, help="due within this")
    parser.add_argument("--destination", choices=["rest", "kafka"], default="rest")
    parser.add_argument(
        "--topic-prefix", default="demo.", help="KAFKA destination topic prefix (allowlisted)"
    )
    parser.add_argument("--grace-s", type=float, default=60.0, help="wait after the last due")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    if args.progress is None:
        args.progress = sys.stdout.isatty()
    env = environment()
    api = httpx.Client(base_url=args.api, timeout=30)
    try:
        api.get("/readyz").raise_for_status()
    except httpx.HTTPError as exc:
        print(f"the system is not ready at {args.api} ({exc}); start it with `make up`")
        return 2

    arrivals = Arrivals()
    key = control_key(env)
    if args.destination == "rest":
        receiver: HttpReceiver | KafkaReceiver = HttpReceiver(arrivals).start()
        auth = make_app(api, key, "REST", receiver.url)
    else:
        bootstrap = env.get("SCHEDULER_KAFKA_BOOTSTRAP_SERVERS", KafkaSettings().bootstrap_servers)
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        topic = f"{args.topic_prefix}soak-{uuid.uuid4().hex[:8]}"
        create_topic(kafka, topic)
        receiver = KafkaReceiver(arrivals, kafka.bootstrap_servers, topic).start()
        auth = make_app(api, key, "KAFKA", topic)
    print(
        f"soak: {args.rate:g} msg/s for {args.duration_s:g} s, due within {args.horizon_s:g} s,"
        f" {args.destination} destination"
    )
    ledger = Ledger()
    try:
        refused = schedule(api, auth, ledger, args.destination, args, random.Random(args.seed))
        last_due = max((p.send_at_ms for p in ledger.planned.values()), default=CLOCK.now_ms())
        deadline = last_due + args.grace_s * 1000
        while CLOCK.now_ms() < deadline and not set(ledger.planned) <= arrivals.ids():
            if args.progress:
                missing = len(set(ledger.planned) - arrivals.ids())
                print(f"\r  waiting for {missing} message(s)   ", end="", flush=True)
            time.sleep(0.5)
        time.sleep(2.0)  # a late duplicate would show up here
        if args.progress:
            print()
    finally:
        receiver.close()
    report = ledger.report(arrivals.snapshot())
    late = report.lateness_ms
    duplicates = sum(report.duplicates.values())
    print(
        f"scheduled {report.planned} (refused {refused}), received {report.delivered}\n"
        f"arrival delay p50 {percentile(late, 0.5)} ms, p99 {percentile(late, 0.99)} ms,"
        f" max {late[-1] if late else 0} ms"
        " (the lateness: receipt - sendAt; no sendAt is before its scheduling, so about the"
        " dispatch delay too: docs/ARCHITECTURE.md, Lateness)\n"
        f"lost {len(report.lost)}, early {len(report.early)}, duplicates {duplicates}"
    )
    for message_id in report.lost[:10]:
        print(f"  lost {message_id}")
    for message_id in report.early[:10]:
        print(f"  early {message_id}")
    ok = not report.lost and not report.early and report.planned > 0
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
