"""The failure notifier wired to fakes: a ManualClock, apps in memory, an HTTP fake whose
answers are set per URL (a status, a timeout, or a hang until released), a producer fake whose
acknowledgements are immediate (or an error per topic), the real metrics on a registry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.records import DeadLetter
from scheduler.store.ports import Application
from scheduler_releaser.dispatcher.http_post import HttpAnswer, PostTimeout
from scheduler_releaser.dispatcher.outbound import OutboundGuard, Resolver
from scheduler_releaser.failures.notifier import FailureNotifier, MetricsEvents
from scheduler_releaser.failures.senders import HttpNoticeSender, KafkaNoticeSender
from scheduler_releaser.metrics import FailureNoticeMetrics
from scheduler_releaser.settings import FailureNoticeSettings

from .harness import KAFKA, REST_APP, public_resolver

DLQ = (f"{KAFKA.topic_prefix}dead-letter", 0)
HOOK = "https://alerts.example/failed"
SETTINGS = FailureNoticeSettings(
    max_attempts=3,
    backoff_base_ms=1_000,
    backoff_max_delay_ms=60_000,
    max_age_ms=3_600_000,
    timeout_ms=1_000,
    per_app_concurrency=2,
    concurrency=16,
    per_app_max_pending=50,
    max_pending=1_000,
    commit_interval_ms=1_000,
    shutdown_timeout_ms=500,
)


def rest_failure_app(app_id: str, url: str = HOOK, **kw: Any) -> Application:
    return replace(REST_APP, app_id=app_id, failure_type="REST", failure_endpoint=url, **kw)


def kafka_failure_app(app_id: str, topic: str = "alerts.failed", **kw: Any) -> Application:
    return replace(REST_APP, app_id=app_id, failure_type="KAFKA", failure_endpoint=topic, **kw)


@dataclass
class Posted:
    url: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeHttp:
    """`answers[url]`: a status, "timeout" (PostTimeout at once) or "hang" (waits until
    `release(url)`, then times out); 200 by default. `script[url]`: statuses used first."""

    posted: list[Posted] = field(default_factory=list)
    answers: dict[str, int | str] = field(default_factory=dict)
    script: dict[str, list[int]] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    hanging: int = 0

    def to(self, url: str) -> list[Posted]:
        return [p for p in self.posted if p.url == url]

    def release(self, url: str) -> None:
        self.gates.setdefault(url, asyncio.Event()).set()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        read_limit: int,
        timeout_s: float | None = None,
    ) -> HttpAnswer:
        self.posted.append(Posted(url, body, headers))
        scripted = self.script.get(url)
        answer = scripted.pop(0) if scripted else self.answers.get(url, 200)
        if answer == "hang":
            self.hanging += 1
            try:
                await self.gates.setdefault(url, asyncio.Event()).wait()
            finally:
                self.hanging -= 1
            raise PostTimeout("no answer")
        if answer == "timeout":
            raise PostTimeout("no answer")
        assert isinstance(answer, int)
        return HttpAnswer(answer, b"")

    async def close(self) -> None:
        pass


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass
class FakeProducer:
    """Acknowledges each record at once, or fails it with `errors[topic]`."""

    records: list[Produced] = field(default_factory=list)
    errors: dict[str, KafkaError] = field(default_factory=dict)

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Any = None,
        on_delivery: Callable[[Any, Any], None] | None = None,
    ) -> None:
        error = self.errors.get(topic)
        if error is None:
            self.records.append(Produced(topic, key, value, list(headers or [])))
        assert on_delivery is not None
        on_delivery(error, None)

    def poll(self, timeout: float = -1) -> int:
        return 0


class FakeApps:
    """AppSource: apps by id; `failing[app_id]`: an exception raised for the next reads (a
    list: one per read, then the app)."""

    def __init__(self, *apps: Application) -> None:
        self.apps = {a.app_id: a for a in apps}
        self.failing: dict[str, list[Exception]] = {}
        self.reads = 0

    async def get(self, app_id: str) -> Application | None:
        self.reads += 1
        errors = self.failing.get(app_id)
        if errors:
            raise errors.pop(0)
        return self.apps.get(app_id)


@dataclass
class Notices:
    clock: ManualClock
    http: FakeHttp
    producer: FakeProducer
    apps: FakeApps
    notifier: FailureNotifier
    registry: CollectorRegistry
    events: MetricsEvents
    offset: int = 0

    def letter(self, app_id: str, n: int = 0, **kw: Any) -> DeadLetter:
        fields: dict[str, Any] = {
            "message_id": f"msg-{app_id}-{n}",
            "app_id": app_id,
            "generation": 0,
            "attempts": 5,
            "due_ms": self.clock.now_ms() - 60_000,
            "failed_ms": self.clock.now_ms(),
            "payload_json": '{"orderId": 42, "note": "caf\\u00e9"}',
            "last_error": "http 500: boom",
            "last_http_status": 500,
            "body_excerpt": "boom",
        }
        fields.update(kw)
        return DeadLetter(**fields)

    def add(self, letter: DeadLetter | None, tp: tuple[str, int] = DLQ) -> int:
        """The next dead letter of the partition (offsets 0, 1, 2, ...)."""
        offset = self.offset
        self.offset += 1
        self.notifier.add(letter, tp, offset)
        return offset

    async def run(self) -> None:
        """Start what is due and wait for it (and for what it starts in turn)."""
        self.notifier.start_due()
        await self.notifier.drain()

    async def spin(self, times: int = 20) -> None:
        """Let the loop run a while without waiting for anything in particular."""
        for _ in range(times):
            await asyncio.sleep(0)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    def sent(self, destination: str = "REST") -> float:
        return self.metric("scheduler_failure_notices_sent_total", {"destination": destination})

    def dropped(self, destination: str, reason: str) -> float:
        return self.metric(
            "scheduler_failure_notices_dropped_total",
            {"destination": destination, "reason": reason},
        )

    def skipped(self, reason: str) -> float:
        return self.metric("scheduler_failure_notices_skipped_total", {"reason": reason})

    def retried(self, destination: str, reason: str) -> float:
        return self.metric(
            "scheduler_failure_notices_retried_total",
            {"destination": destination, "reason": reason},
        )


def build(
    *apps: Application,
    settings: FailureNoticeSettings = SETTINGS,
    allow_private: bool = False,
    resolver: Resolver = public_resolver,
    allowed_prefixes: tuple[str, ...] = (),
) -> Notices:
    clock = ManualClock()
    http = FakeHttp()
    producer = FakeProducer()
    source = FakeApps(*apps)
    registry = CollectorRegistry()
    events = MetricsEvents(FailureNoticeMetrics(registry))
    notifier = FailureNotifier(
        apps=source,
        http=HttpNoticeSender(http, OutboundGuard(allow_private, resolver), clock),
        kafka=KafkaNoticeSender(producer, KAFKA.topic_prefix, allowed_prefixes, 1_000),
        clock=clock,
        settings=settings,
        events=events,
    )
    return Notices(clock, http, producer, source, notifier, registry, events)
