"""Idempotency key benchmark: what a keyed message costs.

    .venv/bin/python bench/idempotency_bench.py [--claims 2000] [--seconds 8] [--runs 3]

1. The claim alone against the local Cassandra (a private keyspace): `MessageStore.claim_keys`
   of one new key at a time (latency of a won claim: a record read plus the lightweight
   transaction), of a key already claimed (a lost claim), and, for reference, the record read
   that was the whole idempotency check before; then throughput with 64 claims per call (the
   adapter sends them concurrently, as a bucketer chunk or an ingest batch does).
2. The single-message route `POST /messages` of one gateway process (as bench/ingest_bench.py:
   32 connections, the minimal load generator) without a key and with a new key per request,
   runs alternated so both see the same background load.

Medians of `--runs` runs. Private topic prefix and keyspace, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from scheduler.cli import setup
from scheduler.clock import SystemClock
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.testing.isolation import (
    delete_topics,
    drop_keyspace,
    private_cassandra,
    private_kafka,
    unique_name,
)
from scheduler.testing.servers import resolve_servers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest_bench import (
    _request,
    cpu_seconds,
    data_key,
    free_port,
    gateway_env,
    percentile,
)

CLOCK = SystemClock()
PER_CALL = 64


def claim_figures(store: CassandraMessageStore, n: int, run: str) -> dict[str, float]:
    """ms per won claim, lost claim and plain record read (p50, p99); claims/s in calls of 64."""
    # imported here: with --route-only this script also runs on a release without claims
    from scheduler.domain.idempotency import KeyClaim, claim_ttl_ms

    ttl_ms = claim_ttl_ms(KafkaSettings().requests_retention_ms)

    def claim(n: int, run: str) -> KeyClaim:
        return KeyClaim("bench-app", f"{run}-{n}", f"01BENCH{run[:6]}{n:013d}", "f" * 64, 1)

    store.claim_keys([claim(0, run + "w")], ttl_ms)  # prepares the statement
    out: dict[str, float] = {}
    for label, action in (
        ("won", lambda i: store.claim_keys([claim(i, run)], ttl_ms)),
        ("lost", lambda i: store.claim_keys([claim(i, run)], ttl_ms)),  # the same keys again
        ("read", lambda i: store.get("bench-app", claim(i, run).message_id)),
    ):
        latencies = []
        for i in range(n):
            started = time.perf_counter()
            action(i)
            latencies.append((time.perf_counter() - started) * 1000)
        out[f"{label}_p50"], out[f"{label}_p99"] = (
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
        )
    started = time.perf_counter()
    for first in range(0, 4 * n, PER_CALL):
        store.claim_keys([claim(i, run + "t") for i in range(first, first + PER_CALL)], ttl_ms)
    out["per_s"] = 4 * n // PER_CALL * PER_CALL / (time.perf_counter() - started)
    return out


async def drive(
    url: str, auth: str, seconds: float, concurrency: int, keyed: bool
) -> tuple[int, list[float], int]:
    """(requests answered 200, latencies in ms, other answers) of single-message requests."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    ok = failures = 0
    deadline = time.monotonic() + seconds

    def build() -> bytes:
        item: dict[str, object] = {"payload": {"order": 1}, "sendAt": CLOCK.now_ms() + 3_600_000}
        if keyed:
            item["idempotencyKey"] = uuid.uuid4().hex
        body = json.dumps(item).encode()
        return (
            f"POST /messages HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def worker() -> None:
        nonlocal ok, failures
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < deadline:
                raw = build()
                started = time.perf_counter()
                status, _ = await _request(reader, writer, raw)
                latencies.append((time.perf_counter() - started) * 1000)
                ok += status == 200
                failures += status != 200
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, latencies, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--claims", type=int, default=2000, help="claims per latency figure")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--route-only", action="store_true", help="skip the claim figures (a previous release)"
    )
    args = parser.parse_args()

    unique = unique_name()
    servers = resolve_servers()
    kafka = private_kafka(servers, unique).model_copy(update={"requests_partitions": 6})
    cassandra = private_cassandra(servers, unique)
    setup(kafka, cassandra, SchedulingSettings())
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    port = free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "scheduler_ingest.main"], env=gateway_env(kafka, cassandra, port)
    )
    url = f"http://127.0.0.1:{port}"
    try:
        store = CassandraMessageStore(session)
        figures = [
            claim_figures(store, args.claims, f"r{run}x")
            for run in range(0 if args.route_only else args.runs)
        ]
        for run, f in enumerate(figures, start=1):
            print(
                f"claims run {run}: won p50 {f['won_p50']:.2f} ms p99 {f['won_p99']:.2f} ms;"
                f" lost p50 {f['lost_p50']:.2f} ms p99 {f['lost_p99']:.2f} ms;"
                f" record read p50 {f['read_p50']:.2f} ms p99 {f['read_p99']:.2f} ms;"
                f" {f['per_s']:,.0f} claims/s ({PER_CALL} per call)"
            )
        auth = data_key(url, CassandraAppStore(session), unique)
        asyncio.run(drive(url, auth, 2, args.concurrency, False))  # warm-up
        asyncio.run(drive(url, auth, 2, args.concurrency, True))
        routes: dict[bool, list[tuple[float, float, float, float]]] = {False: [], True: []}
        for run in range(args.runs):
            for keyed in (False, True):
                cpu0, t0 = cpu_seconds(gateway.pid), time.perf_counter()
                ok, lat, failures = asyncio.run(
                    drive(url, auth, args.seconds, args.concurrency, keyed)
                )
                wall, cpu = time.perf_counter() - t0, cpu_seconds(gateway.pid) - cpu0
                row = (
                    ok / wall,
                    percentile(lat, 0.5),
                    percentile(lat, 0.99),
                    1000 * cpu / max(ok, 1),
                )
                routes[keyed].append(row)
                print(
                    f"route run {run + 1} {'with a key' if keyed else 'no key'}:"
                    f" {row[0]:,.0f} req/s p50 {row[1]:.1f} ms p99 {row[2]:.1f} ms"
                    f" gateway CPU {row[3]:.2f} ms/request failures {failures}"
                )

        def med(values: list[float]) -> float:
            return statistics.median(values)

        print(
            ""
            if not figures
            else f"MEDIANS claim: won p50 {med([f['won_p50'] for f in figures]):.2f} ms"
            f" p99 {med([f['won_p99'] for f in figures]):.2f} ms,"
            f" lost p50 {med([f['lost_p50'] for f in figures]):.2f} ms,"
            f" record read p50 {med([f['read_p50'] for f in figures]):.2f} ms,"
            f" {med([f['per_s'] for f in figures]):,.0f} claims/s ({PER_CALL} per call)"
        )
        for keyed in (False, True):
            rows = routes[keyed]
            print(
                f"MEDIANS route {'with a key' if keyed else 'no key'}:"
                f" {med([r[0] for r in rows]):,.0f} req/s, p50 {med([r[1] for r in rows]):.1f} ms,"
                f" p99 {med([r[2] for r in rows]):.1f} ms,"
                f" gateway CPU {med([r[3] for r in rows]):.2f} ms/request"
            )
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(60)
        except subprocess.TimeoutExpired:
            gateway.kill()
        cluster.shutdown()
        drop_keyspace(cassandra)
        delete_topics(kafka)
    return 0


if __name__ == "__main__":
    sys.exit(main())
