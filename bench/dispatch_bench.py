"""Dispatcher benchmark: lateness (due instant -> receipt) at a steady rate of messages coming
due, for a Kafka destination (read_committed consumer) and a local HTTP receiver.

    .venv/bin/python bench/dispatch_bench.py --destination kafka [--rate 1000] [--seconds 20]
    .venv/bin/python bench/dispatch_bench.py --destination rest  [--rate 1000] [--seconds 20]
    .venv/bin/python bench/dispatch_bench.py --destination kafka --hotspot 100000
    .venv/bin/python bench/dispatch_bench.py --destination kafka --hotspot 100000 \
        --instances 2 --partitions 6   # two dispatcher processes, 3 ring partitions each

One dispatcher process (`scheduler-dispatcher`, started by scheduler.testing.processes; or
--instances of them, each owning its share of the ring's partitions) on the local
stack with a private topic prefix and keyspace (deleted afterwards). The ring records are
produced before their slot opens (as the releaser does), spaced evenly at --rate; --hotspot
puts that many messages in one second instead. Targets (issue 5): p50 <= 10 ms, p99 <= 100 ms
at 1,000 msg/s; hotspot of 100,000 all delivered, the last at most 10 s late.
Lateness is measured by this process at receipt: the HTTP request arriving, or the record
becoming visible to a read_committed consumer (so it includes the transaction commit). Every
record is created before it is due, so this lateness is also the dispatch delay, the SLO's
figure (docs/ARCHITECTURE.md, "Lateness"); the output says so in "figure".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from scheduler.cli import setup
from scheduler.clock import SystemClock
from scheduler.domain.ids import new_message_id
from scheduler.records import DueMessage
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.ports import Application
from scheduler.testing.isolation import (
    delete_topics,
    drop_keyspace,
    private_cassandra,
    private_kafka,
    unique_name,
)
from scheduler.testing.processes import System, service_env
from scheduler.testing.servers import resolve_servers
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs

CLOCK = SystemClock()


def percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return -1
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class HttpReceiver:
    """A minimal HTTP/1.1 keep-alive endpoint on asyncio: records (message id, receipt ms)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, int]] = []
        self.port = 0

    async def start(self) -> None:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                at = CLOCK.now_ms()
                length, mid = 0, ""
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"x-scheduler-message-id":
                        mid = value.strip().decode()
                await reader.readexactly(length)
                self.received.append((mid, at))
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()


async def run(args: argparse.Namespace) -> int:
    tag = unique_name()
    servers = resolve_servers()
    kafka = private_kafka(servers, tag).model_copy(update={"due_partitions": args.partitions})
    cassandra = private_cassandra(servers, tag)
    scheduling = SchedulingSettings(
        bucket_width_ms=1_000,
        lookahead_ms=10_000,
        placement_margin_ms=1_000,
        ring_size=12,
        ring_slot_ms=5_000,
    )
    setup(kafka, cassandra, scheduling)
    topics, codecs = Topics(kafka, scheduling), Codecs.build(kafka)
    admin = AdminClient(kafka.client_config())
    dest = f"benchdest-{tag}"
    cluster, session = connect(cassandra, cassandra.keyspace)
    receiver = HttpReceiver()
    await receiver.start()
    apps = CassandraAppStore(session)
    apps.put_app(
        Application(app_id="bench-kafka", owner_id="b", name="k", type="KAFKA", endpoint=dest)
    )
    apps.put_app(
        Application(
            app_id="bench-rest",
            owner_id="b",
            name="r",
            type="REST",
            endpoint=f"http://127.0.0.1:{receiver.port}/hook",
            signing_secret="s",
        )
    )
    CassandraBucketStore(session).advance_watermark(CLOCK.now_ms() + 3_600_000, CLOCK.now_ms())
    for future in admin.create_topics([NewTopic(dest, 3, 1)]).values():
        future.result()
    app_id = "bench-kafka" if args.destination == "kafka" else "bench-rest"

    # Messages come due from start_ms on, evenly at --rate, or all in one second (--hotspot).
    count = args.hotspot or args.rate * args.seconds
    start_ms = CLOCK.now_ms() + args.lead_s * 1000
    due: dict[str, int] = {}
    producer = Producer({**kafka.client_config(), "linger.ms": 20, "acks": "all"})
    for i in range(count):
        offset_ms = (i * 1000) // count if args.hotspot else (i * 1000) // args.rate
        due_ms = start_ms + offset_ms
        mid = new_message_id(CLOCK.now_ms())
        due[mid] = due_ms
        message = DueMessage(
            message_id=mid,
            app_id=app_id,
            generation=0,
            attempt=1,
            due_ms=due_ms,
            send_at_ms=due_ms,
            created_ms=CLOCK.now_ms(),
            payload_json='{"bench": true}',
        )
        while True:
            try:
                producer.produce(
                    topics.ring.topic_for(due_ms),
                    key=mid.encode(),
                    value=codecs.due.encode(message),
                )
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    print(f"produced {count} ring records; first due in {(start_ms - CLOCK.now_ms()) / 1000:.1f} s")

    logs = Path(f"/tmp/dispatch_bench_{tag}")
    logs.mkdir()
    ports = {"dispatcher": args.metrics_port} if args.metrics_port else {}
    system = System(
        service_env(kafka, cassandra, scheduling, ports, dict(kv.split("=", 1) for kv in args.env)),
        ports,
        logs,
        wrapper=[sys.executable, "-m", "cProfile", "-o", args.profile] if args.profile else [],
    )
    system.add_dispatcher_instances(args.instances)  # replicas sharing the ring's partitions
    system.start("dispatcher", *system.replicas, wait=False)
    lateness: list[int] = []
    seen: set[str] = set()
    duplicates = 0
    consumer = None
    if args.destination == "kafka":
        consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": f"bench-{tag}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 5,
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([dest])
    dump = Path(args.dump).open("w") if args.dump else None  # noqa: SIM115 - closed below
    deadline = start_ms + (1000 if args.hotspot else args.seconds * 1000) + args.grace_s * 1000
    try:
        while len(seen) < count and CLOCK.now_ms() < deadline:
            if consumer is not None:
                msgs, now = await asyncio.to_thread(_receive, consumer)
                batch = [(m.key().decode(), now) for m in msgs if m.error() is None]
            else:
                await asyncio.sleep(0.05)
                batch, receiver.received = receiver.received, []
            for mid, at in batch:
                if mid in seen:
                    duplicates += 1
                    continue
                seen.add(mid)
                lateness.append(at - due[mid])
                if dump is not None:
                    dump.write(f"{due[mid]} {at - due[mid]}\n")
    finally:
        if args.metrics_port:
            with urllib.request.urlopen(f"http://127.0.0.1:{args.metrics_port}/metrics") as r:
                Path(f"/tmp/dispatch_bench_{tag}.metrics").write_bytes(r.read())
            print(f"dispatcher metrics in /tmp/dispatch_bench_{tag}.metrics")
        if dump is not None:
            dump.close()
        await asyncio.to_thread(system.stop)  # the receiver keeps answering meanwhile
        if consumer is not None:
            consumer.close()
        cluster.shutdown()
        _cleanup(kafka, cassandra, dest)
    lateness.sort()
    early = sum(1 for v in lateness if v < 0)
    print(
        json.dumps(
            {
                "destination": args.destination,
                "mode": f"hotspot {count} in 1 s"
                if args.hotspot
                else f"{args.rate} msg/s for {args.seconds} s",
                "delivered": len(seen),
                "expected": count,
                "duplicates": duplicates,
                "early": early,
                "figure": "lateness_ms = receipt - due; created before due, so it is also the"
                " dispatch delay (docs/ARCHITECTURE.md, Lateness)",
                "lateness_ms": {
                    "p50": percentile(lateness, 0.5),
                    "p99": percentile(lateness, 0.99),
                    "p99.9": percentile(lateness, 0.999),
                    "max": lateness[-1] if lateness else -1,
                },
                "dispatcher_log": str(logs / "dispatcher.log"),
            },
            indent=2,
        )
    )
    return 0 if len(seen) == count and early == 0 else 1


def _receive(consumer: Consumer) -> tuple[list[Message], int]:
    """What a read_committed consumer gets, and when: poll() returns as soon as a record is
    visible (consume() would wait for its whole batch or timeout); the records already fetched
    with it are taken at the same instant."""
    first = consumer.poll(0.05)
    now = CLOCK.now_ms()
    if first is None:
        return [], now
    return [first, *consumer.consume(1000, 0)], now


def _cleanup(kafka: KafkaSettings, cassandra: CassandraSettings, dest: str) -> None:
    admin = AdminClient(kafka.client_config())
    for future in admin.delete_topics([dest], operation_timeout=30).values():
        future.result()
    delete_topics(kafka)
    drop_keyspace(cassandra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--destination", choices=["kafka", "rest"], default="kafka")
    parser.add_argument("--rate", type=int, default=1000, help="messages coming due per second")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--hotspot", type=int, default=0, help="N messages due in one second")
    parser.add_argument("--partitions", type=int, default=3, help="ring topic partitions")
    parser.add_argument("--instances", type=int, default=1, help="dispatcher processes")
    parser.add_argument("--lead-s", type=int, default=12, help="time before the first is due")
    parser.add_argument("--profile", default="", help="cProfile the dispatcher into this file")
    parser.add_argument("--metrics-port", type=int, default=0, help="scrape the dispatcher")
    parser.add_argument("--dump", default="", help="write 'due_ms lateness_ms' lines here")
    parser.add_argument("--grace-s", type=int, default=20, help="wait this long after the last")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the dispatcher (repeat), e.g. SCHEDULER_DISPATCH_TXN_MAX_EMITS=5000",
    )
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
