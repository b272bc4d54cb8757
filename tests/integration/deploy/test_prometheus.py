"""A real Prometheus (Debian's package, unpacked on demand by deploy/tools/install.sh) scrapes the
four services, started here as processes through their console scripts against the real Kafka and
Cassandra; traffic makes every kind of event happen once (sent, retried, failed, aborted, stored
and released, refused, rejected). Then every dashboard query returns data (no empty panel),
every alert rule evaluates, the inputs of every alert expression exist, the dead-letter alert
fires, and stopping a service (SIGTERM: a graceful exit) brings up the service-down alert. A
second test makes the dispatcher's transactions abort in a loop (the results topic refuses
every record) and waits for "due messages are not being settled".

The rule under test is loaded with its durations shrunk from minutes to seconds (`for:`,
windows, offsets), and the dispatcher commits its idle offsets every second instead of every
minute, in the same proportion.
"""

from __future__ import annotations

import base64
import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from scheduler.cli import setup
from scheduler.clock import SystemClock
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.topics import Topics
from tests.support.processes import SERVICES, System, free_port, service_env, wait_for
from tests.support.tools import deploy_tool
from tests.unit.deploy.support import (
    ROOT,
    alert_rules,
    dashboard_queries,
    metric_names_in,
)

pytestmark = [pytest.mark.e2e, pytest.mark.tools]

CLOCK = SystemClock()
BIN = Path(sys.executable).parent
RATE_WINDOW = "5m"  # Grafana's $__rate_interval: the whole test fits in it
NAMESPACE = "it"  # the targets' namespace label, chosen by the dashboards' variable
# The dashboards' variables as Grafana fills them in: one namespace, every job and instance.
VARIABLES = {
    "$__rate_interval": RATE_WINDOW,
    "$namespace": NAMESPACE,
    "$job": ".*",
    "$instance": ".*",
}
NOT_SETTLED = "SchedulerDueMessagesNotSettled"
# The idle dispatcher's offsets commit: every minute in production, every second here (the
# rule's 5-minute window becomes 5 seconds).
# The dispatcher reads a message's record before firing only where it cannot vouch for the
# attempt (docs/ARCHITECTURE.md, "Late duplicates"): a clock slack this wide makes every message
# due within 10 minutes of its start read, so the record-read panel has data.
DISPATCH_ENV = {
    "SCHEDULER_DISPATCH_OFFSETS_REFRESH_MS": "1000",
    "SCHEDULER_DISPATCH_RESULTS_SLACK_MS": "600000",
}
EIGHT_DAYS_MS = 8 * 86_400_000


_wait = wait_for


# -- a delivery endpoint whose answer the payload chooses ----------------------------------------


@dataclass
class Endpoint:
    """REST destination: payload {"mode": "ok"} -> 200, "flaky" -> 500 once per key, then 200,
    "gone" -> 404 (fails at once: FAILED + dead letter)."""

    port: int = 0
    seen: list[tuple[str, int]] = field(default_factory=list)  # (key, status)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, key: str, status: int) -> bool:
        with self.lock:
            return (key, status) in self.seen


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            payload = body["payload"]
            key, mode = payload["key"], payload["mode"]
            with state.lock:
                tried = any(k == key for k, _ in state.seen)
                status = {"ok": 200, "gone": 404}.get(mode, 200 if tried else 500)
                state.seen.append((key, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# -- the services as processes --------------------------------------------------------------------


Stack = System


@pytest.fixture
def stack(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
    tmp_path: Path,
) -> Iterator[System]:
    setup(kafka_settings, cassandra_settings, scheduling_settings)
    ports = System.ports_for()
    env = service_env(kafka_settings, cassandra_settings, scheduling_settings, ports, DISPATCH_ENV)
    system = System(env, ports, tmp_path)
    try:
        system.start()
        yield system
    finally:
        system.stop()


# -- Prometheus ---------------------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def has_data(self, expr: str) -> bool:
        """A panel shows something: a series with a number (a NaN quantile is an empty panel)."""
        return any(not math.isnan(float(r["value"][1])) for r in self.query(expr))

    def alerts(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"])


def _minutes_as_seconds(text: str) -> str:
    return re.sub(r"\b(\d+)m\b", r"\1s", text)


def shrunk_rules(path: Path) -> Path:
    """deploy/prometheus/alerts.yml with the rule under test in seconds instead of minutes:
    its `for:`, windows and offsets (its proportions kept)."""
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == NOT_SETTLED:
                rule["for"] = _minutes_as_seconds(rule["for"])
                rule["expr"] = _minutes_as_seconds(rule["expr"])
                assert "m]" not in rule["expr"] and "0s" in rule["expr"], rule["expr"]
    path.write_text(yaml.safe_dump(rules))
    return path


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[Prometheus]:
    binary = deploy_tool("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(shrunk_rules(tmp_path / "alerts.yml"))],
        "scrape_configs": [
            {
                "job_name": "scheduler",
                "static_configs": [
                    {
                        "targets": [stack.metrics_url(n).split("/")[2]],
                        "labels": {"service": n, "namespace": NAMESPACE},
                    }
                    for n in SERVICES
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=log,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        _wait("prometheus ready", lambda: httpx.get(f"{prom.url}/-/ready").status_code == 200, 60)
        _wait(
            "every target up",
            lambda: len([r for r in prom.query("up == 1")]) == len(SERVICES),
            60,
        )
        yield prom
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- traffic --------------------------------------------------------------------------------------


def _owner_key(stack: Stack) -> str:
    out = subprocess.run(
        [str(BIN / "scheduler"), "admin", "create-control-key", "--owner", "ops@example.com"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return re.search(r"^secret: (\S+)$", out, re.M).group(1)  # type: ignore[union-attr]


def _data_client(stack: Stack, endpoint: Endpoint) -> httpx.Client:
    control = {"Authorization": f"Token {_owner_key(stack)}"}
    app = httpx.post(
        f"{stack.ingest}/applications",
        headers=control,
        json={"name": "deploy", "type": "REST", "endpoint": f"http://127.0.0.1:{endpoint.port}/"},
    )
    assert app.status_code == 200, app.text
    app_id = app.json()["id"]
    key = httpx.post(f"{stack.ingest}/applications/{app_id}/data-keys", headers=control)
    assert key.status_code == 200, key.text
    basic = base64.b64encode(f"{app_id}:{key.json()['secret']}".encode()).decode()
    return httpx.Client(base_url=stack.ingest, headers={"Authorization": f"Basic {basic}"})


def _schedule(client: httpx.Client, key: str, mode: str, in_ms: int) -> str:
    answer = client.post(
        "/messages", json={"payload": {"key": key, "mode": mode}, "sendAt": CLOCK.now_ms() + in_ms}
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["scheduledMessageId"])


def _traffic(
    stack: Stack,
    prometheus: Prometheus,
    endpoint: Endpoint,
    kafka: KafkaSettings,
    s: SchedulingSettings,
) -> None:
    with _data_client(stack, endpoint) as client:
        _schedule(client, "now", "ok", 0)
        # A rate needs two scrapes that differ: let Prometheus see the first produce before the
        # rest of the traffic (a burst between two scrapes would be a flat line).
        _wait(
            "the first produce scraped",
            lambda: prometheus.has_data("scheduler_ingest_kafka_produce_seconds_count"),
            30,
        )
        _schedule(client, "flaky", "flaky", 0)
        _schedule(client, "gone", "gone", 0)
        # Beyond look-ahead + margin: stored in Cassandra, then released into the ring.
        _schedule(client, "later", "ok", s.lookahead_ms + s.placement_margin_ms + 4_000)
        # Eight days ahead: stays stored, counted by the pending-by-horizon gauge as ">=7d".
        _schedule(client, "next-week", "ok", EIGHT_DAYS_MS)
        aborted = _schedule(client, "aborted", "ok", 3_000)
        assert client.put(f"/messages/{aborted}/abort").status_code == 200
        time.sleep(2)  # two scrapes: the commands topic's produce latency has a rate
        aborted_too = _schedule(client, "aborted-too", "ok", 3_000)
        assert client.put(f"/messages/{aborted_too}/abort").status_code == 200
        batch = client.post(
            "/messages/batch",
            json={
                "messages": [
                    {"payload": {"key": f"b{i}", "mode": "ok"}, "sendAt": CLOCK.now_ms()}
                    for i in range(2)
                ]
            },
        )
        assert batch.status_code == 200, batch.text
        assert client.post("/messages", json={"payload": 1}).status_code == 400  # no sendAt
    # A record no producer should write: the bucketer sends it to scheduler.rejected.
    producer = Producer(kafka.client_config())
    producer.produce(Topics(kafka, s).requests, value=b"not an avro record", key=b"app")
    assert producer.flush(10) == 0

    _wait(
        "deliveries",
        lambda: all(
            endpoint.answered(k, st)
            for k, st in (("now", 200), ("flaky", 500), ("flaky", 200), ("gone", 404), ("b0", 200))
        ),
        60,
    )
    _wait("the stored message, released and delivered", lambda: endpoint.answered("later", 200), 60)
    assert not endpoint.answered("aborted", 200)
    assert not endpoint.answered("aborted-too", 200)


# -- the test -------------------------------------------------------------------------------------


def test_every_dashboard_query_and_alert_has_data_from_the_running_services(
    stack: Stack,
    prometheus: Prometheus,
    endpoint: Endpoint,
    kafka_settings: KafkaSettings,
    scheduling_settings: SchedulingSettings,
) -> None:
    try:
        _traffic(stack, prometheus, endpoint, kafka_settings, scheduling_settings)
    except AssertionError:
        print(stack.tail())
        raise

    def filled(expr: str) -> str:
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        return expr

    queries = [(board, title, filled(expr)) for board, title, expr in dashboard_queries()]
    empty: list[str] = []

    def all_have_data() -> bool:
        empty[:] = [
            f"{title}: {expr}" for _, title, expr in queries if not prometheus.has_data(expr)
        ]
        return not empty

    try:
        _wait("data in every dashboard query", all_have_data, 60, every_s=2)
    except AssertionError:
        print(stack.tail())
        raise AssertionError("empty panels:\n" + "\n".join(empty)) from None

    # The gauges behind the two newest panels carry what the traffic did: the message stored
    # for next week is pending ">=7d" (other tests' stored messages may add to it: shared
    # keyspace), and the app of the traffic has its own `app` label (it is the only app here).
    _wait(
        "the next-week message pending >= 7 days",
        lambda: prometheus.has_data('scheduler_release_pending_messages{horizon=">=7d"} >= 1'),
        60,
    )
    for name in ("scheduler_ingest_app_messages_total", "scheduler_dispatch_app_attempts_total"):
        apps = {r["metric"]["app"] for r in prometheus.query(name)}
        assert len(apps) == 1 and apps != {"other"}, (name, apps)
    failed_apps = prometheus.query('scheduler_dispatch_app_attempts_total{outcome="failed"} >= 1')
    assert [r["metric"]["app"] for r in failed_apps] == list(apps), failed_apps

    # Every rule is loaded and evaluates without error.
    groups = httpx.get(f"{prometheus.url}/api/v1/rules").json()["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {r["alert"] for r in alert_rules()}
    assert all(r["health"] == "ok" for r in loaded.values()), loaded
    # Every metric an alert expression reads is scraped (label values such as status="5xx"
    # appear only with the event; the two alerts below show the label matching works).
    for rule in alert_rules():
        for name in metric_names_in(rule["expr"]):
            assert prometheus.query(name), f"{rule['alert']}: no series {name}"

    # The failed message fired the dead-letter alert (it has no `for`).
    _wait(
        "SchedulerDeadLetters firing",
        lambda: any(
            a["labels"]["alertname"] == "SchedulerDeadLetters"
            and a["labels"]["reason"]
            and a["state"] == "firing"
            for a in prometheus.alerts()
        ),
        30,
    )

    # The dashboards' namespace variable picks this install: another namespace shows nothing.
    assert not prometheus.has_data('up{namespace="elsewhere"}')

    # SIGTERM: the dispatcher finishes and exits cleanly; its target goes down, the alert pends.
    dispatcher = stack.procs["dispatcher"]
    dispatcher.send_signal(signal.SIGTERM)
    assert dispatcher.wait(timeout=30) == 0
    _wait(
        "SchedulerServiceDown for the dispatcher",
        lambda: any(
            a["labels"]["alertname"] == "SchedulerServiceDown"
            and a["labels"]["service"] == "dispatcher"
            for a in prometheus.alerts()
        ),
        30,
    )


def _active(prometheus: Prometheus, name: str, state: str | None = None) -> bool:
    return any(
        a["labels"]["alertname"] == name and (state is None or a["state"] == state)
        for a in prometheus.alerts()
    )


def test_due_messages_not_settled_fires_while_the_dispatcher_s_transactions_abort(
    stack: Stack,
    prometheus: Prometheus,
    endpoint: Endpoint,
    kafka_settings: KafkaSettings,
    scheduling_settings: SchedulingSettings,
) -> None:
    """The issue's outage: the dispatcher runs, but every transaction aborts and is retried
    (the results topic refuses every record), so nothing is settled; lateness may have no data
    and every other alert stays silent. SchedulerDueMessagesNotSettled fires."""
    committed = 'scheduler_dispatch_transactions_total{result="committed"}'
    # Healthy: a message due now is delivered and settled, the idle offsets keep committing,
    # and the alert is quiet.
    with _data_client(stack, endpoint) as client:
        _schedule(client, "healthy", "ok", 0)
    _wait("the healthy delivery", lambda: endpoint.answered("healthy", 200), 60)
    _wait("settled", lambda: prometheus.has_data("scheduler_dispatch_settled_total > 0"), 30)
    _wait(
        "idle offsets committed", lambda: prometheus.has_data(f"increase({committed}[5s]) > 0"), 30
    )
    # The rule may have gone pending before the first commits (its shrunk window is 5 s, its
    # evaluation every 1 s): once they flow it clears, and it never fires while healthy.
    _wait("the alert quiet", lambda: not _active(prometheus, NOT_SETTLED), 30)
    quiet_until = time.monotonic() + 10  # twice the shrunk `for:`
    while time.monotonic() < quiet_until:
        assert not _active(prometheus, NOT_SETTLED, "firing"), prometheus.alerts()
        time.sleep(0.5)

    admin = AdminClient(kafka_settings.client_config())
    results = ConfigResource(
        ConfigResource.Type.TOPIC, Topics(kafka_settings, scheduling_settings).results
    )

    def results_max_bytes(value: str, op: AlterConfigOpType) -> None:
        results.incremental_configs = [
            ConfigEntry("max.message.bytes", value, incremental_operation=op)
        ]
        for future in admin.incremental_alter_configs([results]).values():
            future.result()

    results_max_bytes("64", AlterConfigOpType.SET)
    try:
        with _data_client(stack, endpoint) as client:
            for i in range(3):
                _schedule(client, f"stuck{i}", "ok", 0)
        # REST deliveries are made (and would be made again after a restart): not settled.
        _wait("the deliveries made", lambda: endpoint.answered("stuck2", 200), 60)
        try:
            _wait(f"{NOT_SETTLED} firing", lambda: _active(prometheus, NOT_SETTLED, "firing"), 90)
        except AssertionError:
            print(stack.tail())
            print(prometheus.query("scheduler_dispatch_transactions_total"))
            raise
        # Aborted, none committed since: the failure, not a stopped dispatcher.
        aborted = 'scheduler_dispatch_transactions_total{result="aborted"}'
        assert prometheus.has_data(f"increase({aborted}[1m]) > 0")
        assert not prometheus.has_data(f"increase({committed}[5s]) > 0")
        assert prometheus.has_data('up{service="dispatcher"} == 1')
    finally:
        results_max_bytes("", AlterConfigOpType.DELETE)
