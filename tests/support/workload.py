"""A tenant with a REST app and a KAFKA app, and ways to schedule into them: the HTTP API
(single and batch routes) and the Kafka-native producer. Every acknowledged message goes into a
Ledger, so the test can compare it with what arrived."""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from scheduler.clock import SystemClock
from scheduler.producer import SchedulerProducer
from scheduler.settings import KafkaSettings, SchedulingSettings
from tests.support.ledger import Ledger, Planned
from tests.support.processes import BIN

CLOCK = SystemClock()


def create_control_key(env: Mapping[str, str], owner: str) -> str:
    """The operator CLI, as a user would run it; returns the secret."""
    out = subprocess.run(
        [str(BIN / "scheduler"), "admin", "create-control-key", "--owner", owner],
        env=dict(env),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    found = re.search(r"^secret: (\S+)$", out, re.M)
    assert found, out
    return found.group(1)


def create_topic(
    kafka: KafkaSettings,
    name: str,
    partitions: int = 1,
    replication_factor: int = 1,
    config: dict[str, str] | None = None,
) -> None:
    admin = AdminClient(kafka.client_config())
    topic = NewTopic(name, partitions, replication_factor, config=config or {})
    futures = admin.create_topics([topic], operation_timeout=30)
    for future in futures.values():
        future.result(timeout=30)


@dataclass
class App:
    app_id: str
    destination: str  # "rest" | "kafka"
    client: httpx.Client  # base_url = ingest, data key as Basic auth

    def close(self) -> None:
        self.client.close()


def create_app(
    api: str, control_key: str, kind: str, endpoint: str, timeout_s: float = 30.0
) -> App:
    control = {"Authorization": f"Token {control_key}"}
    body = {"name": f"e2e-{kind.lower()}", "type": kind, "endpoint": endpoint}
    app = httpx.post(f"{api}/applications", headers=control, json=body, timeout=timeout_s)
    assert app.status_code == 200, app.text
    app_id = app.json()["id"]
    key = httpx.post(f"{api}/applications/{app_id}/data-keys", headers=control, timeout=timeout_s)
    assert key.status_code == 200, key.text
    basic = base64.b64encode(f"{app_id}:{key.json()['secret']}".encode()).decode()
    client = httpx.Client(
        base_url=api, headers={"Authorization": f"Basic {basic}"}, timeout=timeout_s
    )
    return App(app_id, "rest" if kind == "REST" else "kafka", client)


class NotAccepted(AssertionError):
    """The batch was answered, but not with 200: nothing of it is acknowledged."""

    def __init__(self, answer: httpx.Response) -> None:
        super().__init__(f"{answer.status_code}: {answer.text}")
        self.status_code = answer.status_code


def schedule_batch(app: App, ledger: Ledger, send_ats: list[int], tag: str = "") -> list[str]:
    """POST /messages/batch; every item must be accepted. Returns the ids. A refused batch
    raises NotAccepted; a 200 with an item not accepted fails as any assertion."""
    body = {
        "messages": [
            {"payload": {"n": i, "tag": tag, "sendAt": t}, "sendAt": t}
            for i, t in enumerate(send_ats)
        ]
    }
    answer = app.client.post("/messages/batch", json=body)
    acked = CLOCK.now_ms()
    if answer.status_code != 200:
        raise NotAccepted(answer)
    ids = []
    for item, send_at in zip(answer.json()["results"], send_ats, strict=True):
        assert "scheduledMessageId" in item, item
        ledger.add(Planned(item["scheduledMessageId"], send_at, app.destination, acked))
        ids.append(item["scheduledMessageId"])
    return ids


def schedule_one(app: App, ledger: Ledger, send_at: int, key: str | None = None) -> httpx.Response:
    """POST /messages; records the message in the ledger only if it was acknowledged (200)."""
    body: dict[str, object] = {"payload": {"sendAt": send_at}, "sendAt": send_at}
    if key is not None:
        body["idempotencyKey"] = key
    answer = app.client.post("/messages", json=body)
    if answer.status_code == 200:
        message_id = answer.json()["scheduledMessageId"]
        ledger.add(Planned(message_id, send_at, app.destination, CLOCK.now_ms()))
    return answer


def produce(
    kafka: KafkaSettings,
    scheduling: SchedulingSettings,
    app: App,
    ledger: Ledger,
    send_ats: list[int],
) -> list[str]:
    """Kafka-native ingest (SchedulerProducer): acknowledged when flush() returns."""
    producer = SchedulerProducer(kafka, scheduling)
    ids = [producer.schedule(app.app_id, {"n": i, "sendAt": t}, t) for i, t in enumerate(send_ats)]
    producer.close()
    acked = CLOCK.now_ms()
    for message_id, send_at in zip(ids, send_ats, strict=True):
        ledger.add(Planned(message_id, send_at, app.destination, acked))
    return ids


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"
