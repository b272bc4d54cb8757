"""What the dispatcher benchmarks share (dispatch_restart_bench.py, dispatch_abort_bench.py).

- `rig()`: private topics and keyspace on the local stack, KAFKA apps with a destination topic
  each, and one `scheduler-dispatcher` process (scheduler.testing.processes) with a metrics
  port; everything is removed on exit. No ingest, bucketer or releaser: ring records are
  produced directly, as the releaser would (`DueMessage` into the ring topic of its due slot).
- `code_env(rev)`: run the dispatcher process on the code of another git revision (extracted
  with `git archive` into a temporary directory, put first on PYTHONPATH), to compare with the
  behaviour before a change. The checkout itself is never touched.
- `DestReader`: a read_committed consumer of destination topics (partitions assigned, no
  group join) recording each record's receipt time; the payload carries the due instant.
- `feed_ring` / `feed_aborts`: load generators run as spawned processes (their own GIL).
- `StartupLog`: the dispatcher's startup lines (results since, settled attempts loaded).
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import re
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from bench.world import _best_effort
from scheduler.cli import setup
from scheduler.clock import SystemClock
from scheduler.domain.ids import new_message_id
from scheduler.records import Command, CommandKind, DueMessage
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
from scheduler.testing.processes import System, free_port, service_env
from scheduler.testing.servers import resolve_servers
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs

ROOT = Path(__file__).resolve().parent.parent
CLOCK = SystemClock()
PRODUCER = {"acks": "all", "enable.idempotence": True, "linger.ms": 5}


def machine_line() -> str:
    """One line on what the figures were measured on (bench/machine.py)."""
    from bench.machine import describe, speed_line

    d = describe(ROOT)
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "libs", "services"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{d['cores']} cores ({d['cpu_model']}), {d['memory_gib']} GiB, load average at start"
        f" {d['load_average_at_start']}; {speed_line(d['calibration_s'])};"  # type: ignore[arg-type]
        f" Python {d['python']}, Kafka {d['kafka']}, Cassandra"
        f" {d['cassandra']}; checkout at {d['commit']}{' + local changes' if dirty else ''};"
        " Kafka, Cassandra, the dispatcher and this process share the machine (other test runs"
        " may too)"
    )


def code_env(rev: str) -> dict[str, str]:
    """Environment that runs a service on the code of git revision `rev` ("" = the checkout):
    libs/ and services/releaser/ of `rev`, extracted once under the temporary directory."""
    if not rev:
        return {}
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = Path(tempfile.gettempdir()) / f"scheduler-code-{sha[:12]}"
    if not target.exists():
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha, "libs", "services/releaser"],
            capture_output=True,
            check=True,
        ).stdout
        staging = Path(tempfile.mkdtemp(prefix="scheduler-code-"))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(staging, filter="data")
        staging.rename(target)
    return {"PYTHONPATH": f"{target}/libs:{target}/services/releaser"}


def describe_code(rev: str) -> str:
    if not rev:
        return "the checkout"
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"git revision {rev} ({sha[:90]})"


# -- the rig --------------------------------------------------------------------------------


@dataclass
class Rig:
    kafka: KafkaSettings
    cassandra: CassandraSettings
    scheduling: SchedulingSettings
    system: System
    dests: dict[str, str]  # app id -> destination topic
    logs: Path
    readers: list[str] = field(default_factory=list)  # consumer groups to delete afterwards

    @property
    def topics(self) -> Topics:
        return Topics(self.kafka, self.scheduling)

    @property
    def log_path(self) -> Path:
        return self.logs / "dispatcher.log"

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def start(self) -> int:
        """Start the dispatcher process; returns the wall-clock ms just before it was spawned."""
        started = CLOCK.now_ms()
        self.system.start("dispatcher", wait=False)
        return started

    def wait_ready(self, timeout_s: float = 180.0) -> tuple[int, int]:
        """Poll /readyz every 20 ms. Returns the wall-clock ms of its first answer (the ops
        server is up: imports done, nothing connected yet) and of its first 200 (ready)."""
        proc = self.system.procs["dispatcher"]
        deadline = time.monotonic() + timeout_s
        answered = None
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"dispatcher exited ({proc.returncode})\n{self.tail()}")
                try:
                    status = client.get(self.system.url("dispatcher", "/readyz")).status_code
                    now = CLOCK.now_ms()
                    answered = answered or now
                    if status == 200:
                        return answered, now
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise TimeoutError(f"dispatcher not ready after {timeout_s} s\n{self.tail()}")

    def tail(self) -> str:
        return self.system.tail(40)

    def metric(self, name: str) -> float | None:
        """One unlabelled sample of the dispatcher's /metrics (None: not there or no answer)."""
        try:
            with urllib.request.urlopen(self.system.url("dispatcher", "/metrics"), timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else None

    def committed_metadata(self) -> dict[tuple[str, int], tuple[int, int | None]]:
        """The dispatcher group's committed ring offsets and their metadata (an instant in ms),
        read without joining the group."""
        group = f"{self.kafka.topic_prefix}dispatcher"
        consumer = Consumer({**self.kafka.client_config(), "group.id": group})
        try:
            metadata = consumer.list_topics(timeout=10).topics
            tps = [
                TopicPartition(topic, p)
                for topic in self.topics.ring.topics()
                for p in sorted(metadata[topic].partitions)
            ]
            out = {}
            for tp in consumer.committed(tps, timeout=30):
                meta = tp.metadata
                out[(tp.topic, tp.partition)] = (
                    tp.offset,
                    int(meta) if meta and meta.isdigit() else None,
                )
            return out
        finally:
            consumer.close()


def _delete_groups(kafka: KafkaSettings, extra: list[str]) -> None:
    admin = AdminClient(kafka.client_config())
    listed = admin.list_consumer_groups(request_timeout=10).result()
    ours = [
        g.group_id
        for g in listed.valid
        if g.group_id.startswith(kafka.topic_prefix) or g.group_id in extra
    ]
    if ours:
        for future in admin.delete_consumer_groups(ours, request_timeout=30).values():
            # a static member still registered (the record writer): the group expires by itself
            with contextlib.suppress(KafkaException):
                future.result()


def _delete_dests(kafka: KafkaSettings, dests: dict[str, str]) -> None:
    """Asked by name (a topic just created may not be listed yet); a missing one is fine."""
    admin = AdminClient(kafka.client_config())
    for future in admin.delete_topics(list(dests.values()), operation_timeout=30).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


@contextmanager
def rig(
    scheduling: SchedulingSettings,
    *,
    apps: list[str],
    ring_partitions: int,
    commands_partitions: int = 1,
    dest_partitions: int = 2,
    env: dict[str, str] | None = None,
    name: str = "dispatch_bench",
) -> Iterator[Rig]:
    tag = unique_name()
    servers = resolve_servers()
    kafka = private_kafka(servers, tag).model_copy(
        update={"due_partitions": ring_partitions, "commands_partitions": commands_partitions}
    )
    cassandra = private_cassandra(servers, tag)
    logs = Path(tempfile.gettempdir()) / f"{name}_{tag}"
    logs.mkdir()
    dests = {app: f"benchdest-{tag}-{app}" for app in apps}
    with ExitStack() as cleanup:
        cleanup.callback(_best_effort("dropping the keyspace", drop_keyspace, cassandra))
        cleanup.callback(_best_effort("deleting the topics", delete_topics, kafka))
        setup(kafka, cassandra, scheduling)
        admin = AdminClient(kafka.client_config())
        cleanup.callback(_best_effort("deleting the destinations", _delete_dests, kafka, dests))
        for future in admin.create_topics(
            [NewTopic(t, dest_partitions, 1) for t in dests.values()], operation_timeout=30
        ).values():
            future.result(timeout=30)
        cluster, session = connect(cassandra, cassandra.keyspace)
        try:
            store = CassandraAppStore(session)
            for app, topic in dests.items():
                store.put_app(
                    Application(
                        app_id=app, owner_id=f"tenant-{app}", name=app, type="KAFKA", endpoint=topic
                    )
                )
            # No releaser runs: buckets count as released (a retry goes straight to the ring).
            now = CLOCK.now_ms()
            CassandraBucketStore(session).advance_watermark(now + 3_600_000, now)
        finally:
            cluster.shutdown()
        ports = {"dispatcher": free_port()}
        system = System(service_env(kafka, cassandra, scheduling, ports, env or {}), ports, logs)
        the_rig = Rig(kafka, cassandra, scheduling, system, dests, logs)
        # runs before the topic deletions (LIFO): after the process stopped
        cleanup.callback(_best_effort("deleting groups", _delete_groups, kafka, the_rig.readers))
        cleanup.callback(system.stop)
        yield the_rig


# -- the destinations -----------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    topic: str
    message_id: str
    due_ms: int
    received_ms: int


class DestReader:
    """read_committed reader of destination topics in a thread: one Arrival per record."""

    def __init__(self, the_rig: Rig, topics: list[str]) -> None:
        group = f"bench-reader-{uuid.uuid4().hex[:8]}"
        the_rig.readers.append(group)
        self._consumer = Consumer(
            {
                **the_rig.kafka.client_config(),
                "group.id": group,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,  # receipt time, not the broker's fetch wait
                "enable.auto.commit": False,
            }
        )
        tps = []
        for topic in topics:
            deadline = time.monotonic() + 30
            while not (
                found := self._consumer.list_topics(topic, timeout=10).topics[topic]
            ).partitions:
                if time.monotonic() > deadline:  # a topic just created: metadata lags a little
                    raise TimeoutError(f"topic {topic} has no partitions: {found.error}")
                time.sleep(0.2)
            tps += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(found.partitions)]
        self._consumer.assign(tps)
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dest-reader", daemon=True)

    def __enter__(self) -> DestReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            # poll() returns as soon as a record is visible; those fetched with it count as
            # received at the same instant (consume() would wait for its batch or timeout)
            first = self._consumer.poll(0.05)
            now = CLOCK.now_ms()
            if first is None:
                continue
            batch = []
            for msg in [first, *self._consumer.consume(1000, 0)]:
                if msg.error() is not None:
                    continue
                due = json.loads(msg.value() or b"{}").get("due_ms", 0)
                key = (msg.key() or b"?").decode()
                batch.append(Arrival(msg.topic() or "", key, due, now))
            with self._lock:
                self._arrivals.extend(batch)

    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self._arrivals)


# -- load generators (spawned processes) ----------------------------------------------------


def due_message(app_id: str, due_ms: int, message_id: str | None = None) -> DueMessage:
    return DueMessage(
        message_id=message_id or new_message_id(CLOCK.now_ms()),
        app_id=app_id,
        generation=0,
        attempt=1,
        due_ms=due_ms,
        send_at_ms=due_ms,
        created_ms=CLOCK.now_ms(),
        payload_json=json.dumps({"due_ms": due_ms, "note": "a typical small payload"}),
    )


def produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            return
        except BufferError:
            producer.poll(0.05)


def feed_ring(
    kafka: dict[str, Any],
    scheduling: dict[str, Any],
    app_id: str,
    rate: int,
    first_due_ms: int,
    last_due_ms: int,
    lead_ms: int,
    out: str,
) -> None:
    """Messages due evenly at `rate` per second from `first_due_ms` to `last_due_ms`, each
    produced into the ring topic of its due slot once it is at most `lead_ms` ahead (as the
    releaser does when its bucket comes within the look-ahead)."""
    k, s = KafkaSettings(**kafka), SchedulingSettings(**scheduling)
    topics, codecs = Topics(k, s), Codecs.build(k)
    producer = Producer({**k.client_config(), **PRODUCER})
    total = (last_due_ms - first_due_ms) * rate // 1000
    i = 0
    while i < total:
        horizon = CLOCK.now_ms() + lead_ms
        while i < total and (due := first_due_ms + i * 1000 // rate) <= horizon:
            message = due_message(app_id, due)
            produce(
                producer,
                topics.ring.topic_for(due),
                message.message_id.encode(),
                codecs.due.encode(message),
            )
            i += 1
        producer.poll(0)
        time.sleep(0.05)
    producer.flush(60)
    Path(out).write_text(json.dumps({"produced": i}))


def feed_aborts(
    kafka: dict[str, Any],
    app_id: str,
    ids_file: str,
    start_at_ms: int,
    rate: int,
    out: str,
    topic: str = "",
) -> None:
    """ABORT commands for the message ids in `ids_file`, at `rate` per second from
    `start_at_ms` on, straight into the commands topic (key = message id, as ingest does), or
    into `topic` (a control: the same load on the host and broker, unread by the dispatcher)."""
    k = KafkaSettings(**kafka)
    topic = topic or Topics(k, SchedulingSettings()).commands
    codec = Codecs.build(k).command
    ids = Path(ids_file).read_text().split()
    producer = Producer(
        {**k.client_config(), "acks": "all", "enable.idempotence": True, "linger.ms": 2}
    )
    while (wait_ms := start_at_ms - CLOCK.now_ms()) > 0:
        time.sleep(min(wait_ms, 50) / 1000)
    started_ms, started = CLOCK.now_ms(), time.monotonic()
    for i, message_id in enumerate(ids):
        ahead_s = i / rate - (time.monotonic() - started)
        if ahead_s > 0:
            time.sleep(ahead_s)
        command = Command(
            message_id=message_id,
            app_id=app_id,
            kind=CommandKind.ABORT,
            generation=0,
            issued_ms=CLOCK.now_ms(),
        )
        produce(producer, topic, message_id.encode(), codec.encode(command))
        producer.poll(0)
    produced_ms = CLOCK.now_ms()
    producer.flush(60)
    Path(out).write_text(
        json.dumps(
            {
                "produced": len(ids),
                "started_ms": started_ms,
                "ended_ms": produced_ms,
                "flushed_ms": CLOCK.now_ms(),
                "rate": len(ids) / max(0.001, (produced_ms - started_ms) / 1000),
            }
        )
    )


def spawn(target: Any, *args: Any) -> Any:
    """A spawned (not forked: this process runs librdkafka threads) daemon process."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    return process


# -- the dispatcher's startup lines ---------------------------------------------------------

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z \w+ dispatcher [\w.]+: (.*)$")


@dataclass
class StartupLog:
    """What one incarnation logged while starting (the log text after `offset`)."""

    fenced_logged_ms: int | None = None  # "fenced N other possible owners" (Kafka producers)
    since_ms: int | None = None
    since_logged_ms: int | None = None  # when "results matter since" was logged
    loaded: int | None = None
    loaded_logged_ms: int | None = None  # when "N settled attempts loaded" was logged

    @classmethod
    def read(cls, path: Path, offset: int) -> StartupLog:
        out = cls()
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        for line in text.splitlines():
            found = LINE.match(line)
            if not found:
                continue
            at = datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
            at_ms = int(at.timestamp() * 1000)
            message = found.group(2)
            if message.startswith("fenced ") and out.fenced_logged_ms is None:
                out.fenced_logged_ms = at_ms
            since = re.search(r"results matter since (-?\d+)", message)
            if since and out.since_ms is None:
                out.since_ms, out.since_logged_ms = int(since.group(1)), at_ms
            loaded = re.search(r"started: (\d+) settled attempts loaded", message)
            if loaded and out.loaded is None:
                out.loaded, out.loaded_logged_ms = int(loaded.group(1)), at_ms
        return out
