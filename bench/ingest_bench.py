"""Ingest benchmark: one gateway process on the local stack, driven over HTTP. Prints req/s and
latency percentiles for single-message POST /messages, and msg/s for POST /messages/batch.

    .venv/bin/python bench/ingest_bench.py [--seconds 10] [--concurrency 32] [--runs 3]
                                           [--batch-size 500] [--in-process 3000]

Targets (issue 3): single >= 1,500 req/s with p99 <= 50 ms; batch >= 20,000 msg/s. The load
generator (a minimal asyncio HTTP/1.1 client) runs on the same machine, so it competes with the
gateway, Kafka and Cassandra for the CPUs; the CPU seconds each side used are printed to show
where the time goes. Uses a private topic prefix and keyspace (deleted afterwards); rate limits
are raised for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cassandra.cluster import Session
from prometheus_client import CollectorRegistry

from scheduler.cli import create_control_key, setup
from scheduler.clock import SystemClock
from scheduler.security import DEV_PEPPER, SecretHasher
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.apps import AppStore, InMemoryAppStore, new_data_key
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.ports import Application
from scheduler.store.usage import CassandraUsageStore, InMemoryUsageStore
from scheduler.testing.fakes import InMemoryMessageStore, InMemoryScheduleStore
from scheduler.testing.isolation import (
    delete_topics,
    drop_keyspace,
    private_cassandra,
    private_kafka,
    unique_name,
)
from scheduler.testing.processes import free_port
from scheduler.testing.servers import resolve_servers
from scheduler_ingest.app import Deps, create_app
from scheduler_ingest.destinations import FakeTopicDirectory
from scheduler_ingest.publisher import FakePublisher, KafkaPublisher, Publisher, producer_config
from scheduler_ingest.settings import IngestSettings

CLOCK = SystemClock()
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def server_means(metrics_url: str, route: str) -> str:
    """Mean server-side latencies from the gateway's own metrics (since it started)."""
    text = httpx.get(metrics_url, timeout=10).text
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        sums[name] = sums.get(name, 0.0) + float(value)

    def mean(prefix: str, label: str = "") -> float:
        count = sum(v for k, v in sums.items() if k.startswith(prefix + "_count") and label in k)
        total = sum(v for k, v in sums.items() if k.startswith(prefix + "_sum") and label in k)
        return 1000 * total / count if count else 0.0

    request = mean("scheduler_ingest_request_seconds", f'route="{route}"')
    return (
        f"server means so far: {route} {request:.1f} ms,"
        f" Kafka produce->ack {mean('scheduler_ingest_kafka_produce_seconds'):.1f} ms"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes]:
    """One HTTP/1.1 keep-alive exchange (a minimal client: httpx costs more CPU per request
    than the gateway itself, and the load generator shares the machine)."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


async def drive(
    url: str, auth: str, seconds: float, concurrency: int, batch: int
) -> tuple[int, int, list[float], int]:
    """Returns (requests ok, messages ok, latencies in ms, failures)."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    ok = messages = failures = 0
    deadline = time.monotonic() + seconds

    def build() -> bytes:
        send_at = CLOCK.now_ms() + 3_600_000
        if batch:
            path = "/messages/batch"
            items = [{"payload": {"i": i}, "sendAt": send_at} for i in range(batch)]
            body = json.dumps({"messages": items}).encode()
        else:
            path = "/messages"
            body = json.dumps({"payload": {"order": 1}, "sendAt": send_at}).encode()
        return (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def worker() -> None:
        nonlocal ok, messages, failures
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < deadline:
                raw = build()
                started = time.perf_counter()
                status, body = await _request(reader, writer, raw)
                latencies.append((time.perf_counter() - started) * 1000)
                if status == 200:
                    ok += 1
                    messages += json.loads(body)["accepted"] if batch else 1
                else:
                    failures += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, messages, latencies, failures


def in_process_costs(
    kafka: KafkaSettings, session: Session, scheduling: SchedulingSettings, n: int
) -> None:
    """CPU per request of the app called as ASGI (no HTTP server), with fakes or real adapters,
    to show which component costs what."""
    for mode in ("fakes", "kafka", "cassandra", "kafka+cassandra"):
        real_kafka, real_cassandra = "kafka" in mode, "cassandra" in mode
        publisher: Publisher = (
            KafkaPublisher(producer_config(kafka, 10_000, 2.0), CLOCK, lambda *_: None)
            if real_kafka
            else FakePublisher()
        )
        apps: AppStore = CassandraAppStore(session) if real_cassandra else InMemoryAppStore()
        hasher = SecretHasher(DEV_PEPPER.encode())
        app_id = f"cost-{mode}-{uuid.uuid4().hex[:6]}"
        apps.put_app(
            Application(app_id, "cost", "c", "REST", "https://example.com/h", created_ms=1)
        )
        secret, key = new_data_key(app_id, "cost", 1)
        apps.add_data_key(key, hasher.hash(secret))
        app = create_app(
            IngestSettings(rate_per_s=1e9, rate_burst=1e9),
            Deps(
                messages=CassandraMessageStore(session)
                if real_cassandra
                else InMemoryMessageStore(),
                schedules=InMemoryScheduleStore(),  # the cost measured is POST /messages
                apps=apps,
                usage=CassandraUsageStore(session) if real_cassandra else InMemoryUsageStore(),
                publisher=publisher,
                destinations=FakeTopicDirectory(),  # creates no KAFKA app
                clock=CLOCK,
                registry=CollectorRegistry(),
                hasher=hasher,
                kafka=kafka,
                scheduling=scheduling,
            ),
        )
        auth = "Basic " + base64.b64encode(f"{app_id}:{secret}".encode()).decode()
        cpu_ms = asyncio.run(_asgi_requests(app, auth, n))
        publisher.close()
        print(f"in-process {mode}: {cpu_ms:.3f} ms CPU per request")


async def _asgi_requests(app: Any, auth: str, n: int) -> float:
    body = json.dumps({"payload": {"order": 1}, "sendAt": CLOCK.now_ms() + 3_600_000}).encode()
    headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"authorization", auth.encode()),
        (b"content-length", str(len(body)).encode()),
    ]

    async def one() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/messages",
            "raw_path": b"/messages",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [200]:
            raise SystemExit(f"in-process request failed: {statuses}")

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    await worker(50)  # warm-up
    cpu0 = time.process_time()
    await asyncio.gather(*(worker(n // 32) for _ in range(32)))
    return 1000 * (time.process_time() - cpu0) / (n // 32 * 32)


def gateway_env(
    kafka: KafkaSettings, cassandra: CassandraSettings, port: int, metrics_port: int = 0
) -> dict[str, str]:
    """The gateway process environment of these benchmarks: private topics and keyspace,
    single-node durability, limits out of the way; /metrics on `metrics_port` (0: none)."""
    env = {
        **os.environ,
        "SCHEDULER_ENV": "dev",
        "SCHEDULER_CASSANDRA_KEYSPACE": cassandra.keyspace,
        "SCHEDULER_CASSANDRA_REPLICATION_FACTOR": "1",
        "SCHEDULER_CASSANDRA_CONSISTENCY": "LOCAL_ONE",
        "SCHEDULER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SCHEDULER_KAFKA_REPLICATION_FACTOR": "1",
        "SCHEDULER_KAFKA_MIN_INSYNC_REPLICAS": "1",
        "SCHEDULER_INGEST_HOST": "127.0.0.1",
        "SCHEDULER_INGEST_PORT": str(port),
        "SCHEDULER_INGEST_METRICS_PORT": str(metrics_port),
        "SCHEDULER_INGEST_RATE_PER_S": "1000000",
        "SCHEDULER_INGEST_RATE_BURST": "1000000",
        "SCHEDULER_INGEST_LOG_LEVEL": "WARNING",
    }
    env.pop("SCHEDULER_SECRET_PEPPER", None)
    return env


def data_key(url: str, cassandra_store: CassandraAppStore, unique: str) -> str:
    """Once the gateway at `url` is ready: an app and its data key (Basic auth header)."""
    _, control = create_control_key(
        cassandra_store, SecretHasher(DEV_PEPPER.encode()), f"bench-{unique}", CLOCK
    )
    with httpx.Client(base_url=url, timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gateway not ready")
            time.sleep(0.2)
        headers = {"Authorization": f"Token {control}"}
        app = client.post(
            "/applications",
            json={"name": "bench", "type": "REST", "endpoint": "https://example.com/h"},
            headers=headers,
        ).json()
        key = client.post(f"/applications/{app['id']}/data-keys", headers=headers).json()
    return "Basic " + base64.b64encode(f"{app['id']}:{key['secret']}".encode()).decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", help="run the gateway under cProfile, write stats here")
    parser.add_argument(
        "--route",
        choices=("single", "batch"),
        action="append",
        help="only these routes (repeat; default: both)",
    )
    parser.add_argument(
        "--in-process",
        type=int,
        default=0,
        metavar="N",
        help="also measure CPU per request of N in-process calls per component mix",
    )
    args = parser.parse_args()

    unique = unique_name()
    servers = resolve_servers()
    kafka = private_kafka(servers, unique).model_copy(update={"requests_partitions": 6})
    cassandra = private_cassandra(servers, unique)
    scheduling = SchedulingSettings()
    setup(kafka, cassandra, scheduling)
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    port, metrics_port = free_port(), free_port()
    env = {
        **gateway_env(kafka, cassandra, port, metrics_port),
        "SCHEDULER_INGEST_BATCH_LIMIT": str(max(args.batch_size, 500)),
    }
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    gateway = subprocess.Popen([sys.executable, *profile, "-m", "scheduler_ingest.main"], env=env)
    url = f"http://127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        auth = data_key(url, CassandraAppStore(session), unique)

        # warm-up: connections, key cache, producer metadata
        asyncio.run(drive(url, auth, 2, args.concurrency, 0))

        routes = set(args.route or ("single", "batch"))
        singles, p50s, p99s = [], [], []
        for run in range(args.runs if "single" in routes else 0):
            cpu0, t0 = cpu_seconds(gateway.pid), time.perf_counter()
            ok, _, lat, failures = asyncio.run(drive(url, auth, args.seconds, args.concurrency, 0))
            wall, cpu = time.perf_counter() - t0, cpu_seconds(gateway.pid) - cpu0
            rate = ok / wall
            singles.append(rate)
            p50s.append(percentile(lat, 0.50))
            p99s.append(percentile(lat, 0.99))
            print(
                f"single run {run + 1}: {rate:,.0f} req/s  p50 {p50s[-1]:.1f} ms"
                f"  p99 {p99s[-1]:.1f} ms  failures {failures}"
                f"  gateway CPU {cpu / wall:.2f} cores, {1000 * cpu / max(ok, 1):.2f} ms/request"
            )
        if singles:
            print(server_means(metrics_url, "/messages"))
        batches = []
        for run in range(args.runs if "batch" in routes else 0):
            cpu0, t0 = cpu_seconds(gateway.pid), time.perf_counter()
            ok, msgs, lat, failures = asyncio.run(
                drive(url, auth, args.seconds, args.batch_concurrency, args.batch_size)
            )
            wall, cpu = time.perf_counter() - t0, cpu_seconds(gateway.pid) - cpu0
            batches.append(msgs / wall)
            print(
                f"batch run {run + 1}: {msgs / wall:,.0f} msg/s ({args.batch_size}/request)"
                f"  p99 {percentile(lat, 0.99):.0f} ms per batch  failures {failures}"
                f"  gateway CPU {cpu / wall:.2f} cores, {1000 * cpu / max(msgs, 1):.3f} ms/message"
            )
        if batches:
            print(server_means(metrics_url, "/messages/batch"))
        if args.in_process:
            in_process_costs(kafka, session, scheduling, args.in_process)
        if singles:
            print(
                f"MEDIANS single: {statistics.median(singles):,.0f} req/s,"
                f" p50 {statistics.median(p50s):.1f} ms, p99 {statistics.median(p99s):.1f} ms"
                " (target >= 1,500 req/s, p99 <= 50 ms)"
            )
        if batches:
            print(f"MEDIANS batch: {statistics.median(batches):,.0f} msg/s (target >= 20,000)")
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(60)
        except subprocess.TimeoutExpired:
            gateway.kill()
        if args.profile:
            stats = pstats.Stats(args.profile)
            stats.sort_stats("tottime").print_stats(25)
        cluster.shutdown()
        drop_keyspace(cassandra)
        delete_topics(kafka)
    return 0


if __name__ == "__main__":
    sys.exit(main())
