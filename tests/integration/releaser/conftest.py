"""Real Kafka + Cassandra for the releaser/dispatcher tests, a local HTTP receiver, helpers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cassandra.cluster import Session
from confluent_kafka import Consumer, Producer
from prometheus_client import CollectorRegistry

from scheduler.cli import setup
from scheduler.clock import SystemClock
from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.ports import Application, LogEntry, MessageContent, StatusUpdate
from scheduler.store.usage import CassandraUsageStore
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.dispatcher.runtime import Stores, run_dispatcher
from scheduler_releaser.dispatcher.status_reader import CassandraStatusReader
from scheduler_releaser.metrics import DispatchMetrics
from scheduler_releaser.settings import DispatchSettings

CLOCK = SystemClock()


@dataclass
class Received:
    path: str
    at_ms: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP endpoint. Paths: /ok, /fail/<n>/<key> (fail n times per key), /always,
    /hang, /redirect."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ids(self, path_prefix: str = "") -> list[str]:
        with self.lock:
            return [
                r.headers["x-scheduler-message-id"]
                for r in self.received
                if r.path.startswith(path_prefix)
            ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.received.append(
                    Received(
                        self.path,
                        CLOCK.now_ms(),
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
            parts = self.path.strip("/").split("/")
            status = 200
            if parts[0] == "fail":
                key = "/".join(parts[2:])
                with state.lock:
                    seen = state.failures.get(key, 0)
                    state.failures[key] = seen + 1
                status = 503 if seen < int(parts[1]) else 200
            elif parts[0] == "always":
                status = 500
            elif parts[0] == "hang":
                threading.Event().wait(3)
            elif parts[0] == "redirect":
                self.send_response(302)
                self.send_header("Location", state.url("/ok"))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            payload = json.dumps({"status": status}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except BrokenPipeError:
                pass  # the dispatcher timed out and hung up (the /hang case)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Env:
    kafka: KafkaSettings
    cassandra: CassandraSettings
    scheduling: SchedulingSettings
    session: Session
    topics: Topics
    codecs: Codecs
    stores: Stores
    app_store: CassandraAppStore
    producer: Producer

    def releaser_is_current(self) -> None:
        """For tests that feed the ring directly: no releaser, buckets count as released."""
        self.stores.buckets.advance_watermark(CLOCK.now_ms() + 3_600_000, CLOCK.now_ms())

    def add_app(self, app: Application) -> None:
        self.app_store.put_app(app)

    def schedule(self, message: DueMessage, status: Status = Status.QUEUED) -> None:
        """What ingest + bucketer/releaser leave behind: the record, and the ring record."""
        self.stores.messages.save(
            MessageContent(
                app_id=message.app_id,
                message_id=message.message_id,
                payload_json=message.payload_json,
                send_at_ms=message.send_at_ms,
                created_ms=message.created_ms,
                kafka_key=message.kafka_key,
            ),
            StatusUpdate(
                status, message.generation, message.attempt, message.due_ms, CLOCK.now_ms()
            ),
            LogEntry(CLOCK.now_ms(), f"{message.generation}:{message.attempt}:test", status),
        )
        self.producer.produce(
            self.topics.ring.topic_for(max(message.due_ms, CLOCK.now_ms())),
            key=message.message_id.encode(),
            value=self.codecs.due.encode(message),
        )

    def flush(self) -> None:
        assert self.producer.flush(10) == 0

    def consumer(self, topic: str, group: str) -> Consumer:
        consumer = Consumer(
            {
                **self.kafka.client_config(),
                "group.id": f"{self.kafka.topic_prefix}{group}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        return consumer


@pytest.fixture
def env(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
    cassandra_session: Session,
) -> Iterator[Env]:
    setup(kafka_settings, cassandra_settings, scheduling_settings)
    cassandra_session.set_keyspace(cassandra_settings.keyspace)
    stores = Stores(
        messages=CassandraMessageStore(cassandra_session),
        buckets=CassandraBucketStore(cassandra_session),
        apps=CassandraAppStore(cassandra_session),
        usage=CassandraUsageStore(cassandra_session),
        states=CassandraStatusReader(cassandra_session),
    )
    producer = Producer({**kafka_settings.client_config(), "linger.ms": 1, "acks": "all"})
    yield Env(
        kafka_settings,
        cassandra_settings,
        scheduling_settings,
        cassandra_session,
        Topics(kafka_settings, scheduling_settings),
        Codecs.build(kafka_settings),
        stores,
        stores.apps,  # type: ignore[arg-type]
        producer,
    )
    producer.flush(10)


class RunningDispatcher:
    def __init__(self, env: Env, settings: DispatchSettings) -> None:
        self.env = env
        self.settings = settings
        self.registry = CollectorRegistry()
        self.metrics = DispatchMetrics(self.registry)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningDispatcher:
        self.task = asyncio.create_task(
            run_dispatcher(
                kafka=self.env.kafka,
                scheduling=self.env.scheduling,
                settings=self.settings,
                stores=self.env.stores,
                clock=CLOCK,
                metrics=self.metrics,
                stop=self.stop,
            )
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


async def eventually(check, timeout_s: float = 20.0, interval_s: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll `check` (sync, may run blocking I/O) until it returns a truthy value."""
    deadline = CLOCK.monotonic_ms() + timeout_s * 1000
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if CLOCK.monotonic_ms() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {check}")
        await asyncio.sleep(interval_s)
