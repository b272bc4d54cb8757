"""The ingest app wired with fakes and a ManualClock (no I/O), with two owners seeded."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from scheduler.clock import ManualClock
from scheduler.codec import RecordCodec
from scheduler.records import Command, ScheduleRequest
from scheduler.security import SecretHasher, new_key_id, new_secret
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.apps import AppStore, ControlKey, DataKey, InMemoryAppStore
from scheduler.store.ports import Application, MessageStore, ScheduleStore
from scheduler.store.usage import InMemoryUsageStore, UsageStore
from scheduler.testing.fakes import InMemoryMessageStore, InMemoryScheduleStore
from scheduler.topics import Topics
from scheduler_ingest.app import Deps, create_app
from scheduler_ingest.destinations import FakeTopicDirectory, TopicDirectory
from scheduler_ingest.publisher import FakePublisher, Published, Publisher
from scheduler_ingest.settings import IngestSettings

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SCHEDULING = SchedulingSettings(
    bucket_width_ms=1_000,
    lookahead_ms=4_000,
    placement_margin_ms=1_000,
    ring_size=6,
    ring_slot_ms=2_000,
    cancel_guard_ms=200,
)
KAFKA = KafkaSettings(topic_prefix="unit.")
TOPICS = Topics(KAFKA, SCHEDULING)
REQUESTS = RecordCodec(ScheduleRequest)
COMMANDS = RecordCodec(Command)
HASHER = SecretHasher(b"unit-test-pepper")


def basic(app_id: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{app_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def token(secret: str) -> dict[str, str]:
    return {"Authorization": f"Token {secret}"}


@dataclass
class Tenant:
    owner: str
    control: dict[str, str]  # headers
    control_key_id: str
    app_id: str
    data: dict[str, str]  # headers
    data_key_id: str


def seed_owner(
    apps: AppStore, owner: str, app_id: str, now_ms: int, hasher: SecretHasher = HASHER
) -> Tenant:
    """An owner with a control key, one REST app and its data key (as the CLI and API would)."""
    apps.ensure_owner(owner, now_ms)
    control_secret, data_secret = new_secret(), new_secret()
    ck = ControlKey(new_key_id("ck"), owner, True, now_ms)
    apps.add_control_key(ck, hasher.hash(control_secret))
    apps.put_app(
        Application(
            app_id=app_id,
            owner_id=owner,
            name=f"{owner}'s app",
            type="REST",
            endpoint="https://example.com/hook",
            signing_secret="whsec_seed",
            created_ms=now_ms,
            updated_ms=now_ms,
        )
    )
    dk = DataKey(new_key_id("dk"), app_id, owner, True, now_ms)
    apps.add_data_key(dk, hasher.hash(data_secret))
    return Tenant(
        owner, token(control_secret), ck.key_id, app_id, basic(app_id, data_secret), dk.key_id
    )


@dataclass
class Harness:
    """With fakes by default; the integration suite passes real adapters and a `suffix` that
    makes owner and app ids unique, so many tests share one keyspace and topic set."""

    # usage written through per request, so tests read it at once (no background flush)
    settings: IngestSettings = field(default_factory=lambda: IngestSettings(usage_flush_ms=0))
    clock: ManualClock = field(default_factory=lambda: ManualClock(T0))
    messages: MessageStore = field(default_factory=InMemoryMessageStore)
    schedules: ScheduleStore = field(default_factory=InMemoryScheduleStore)
    apps: AppStore = field(default_factory=InMemoryAppStore)
    usage: UsageStore = field(default_factory=InMemoryUsageStore)
    publisher: Publisher = field(default_factory=FakePublisher)
    # KAFKA apps' topics: none exists unless a test says so
    destinations: TopicDirectory = field(default_factory=FakeTopicDirectory)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    kafka: KafkaSettings = KAFKA
    suffix: str = ""
    hasher: SecretHasher = HASHER
    schema_registry: Any = None
    results: Any = None  # a ResultLookup for uncertain aborts (None: "could not be confirmed")
    start_client: bool = True  # False: nothing runs until used (e.g. built at import time)

    def __post_init__(self) -> None:
        self.topics = Topics(self.kafka, SCHEDULING)
        self.app = create_app(
            self.settings,
            Deps(
                messages=self.messages,
                schedules=self.schedules,
                apps=self.apps,
                usage=self.usage,
                publisher=self.publisher,
                destinations=self.destinations,
                clock=self.clock,
                registry=self.registry,
                hasher=self.hasher,
                kafka=self.kafka,
                scheduling=SCHEDULING,
                io_threads=4,
                schema_registry=self.schema_registry,
                results=self.results,
            ),
        )
        self.client = TestClient(self.app, raise_server_exceptions=False)
        if self.start_client:
            self.client.__enter__()  # runs the lifespan (startup/shutdown handlers)
        now, sfx = self.clock.now_ms(), self.suffix
        self.alice = seed_owner(
            self.apps, f"alice{sfx}@example.com", f"app-alice{sfx}", now, self.hasher
        )
        self.bob = seed_owner(self.apps, f"bob{sfx}@example.com", f"app-bob{sfx}", now, self.hasher)

    @property
    def fake(self) -> FakePublisher:
        assert isinstance(self.publisher, FakePublisher)
        return self.publisher

    def published(self) -> list[Published]:
        """What this harness's apps published, in order."""
        return list(self.fake.records)

    def published_requests(self) -> list[ScheduleRequest]:
        return [
            REQUESTS.decode(r.value) for r in self.published() if r.topic == self.topics.requests
        ]

    def published_commands(self) -> list[Command]:
        return [
            COMMANDS.decode(r.value) for r in self.published() if r.topic == self.topics.commands
        ]

    def metrics_text(self) -> str:
        """The registry as a scrape reads it (served on the metrics port, not by the app)."""
        return generate_latest(self.registry).decode()

    def schedule(self, body: Any, tenant: Tenant | None = None) -> Any:
        return self.client.post("/messages", json=body, headers=(tenant or self.alice).data)

    def close(self) -> None:
        if self.start_client:
            self.client.__exit__(None, None, None)
