"""The operator CLI against the real Cassandra, and the gateway as a real process (SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from scheduler.cli import main as cli_main
from scheduler.security import DEV_PEPPER, SecretHasher
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.usage import CassandraUsageStore
from scheduler.testing.processes import free_port
from tests.unit.ingest.harness import Harness, token

from .conftest import LiveEnv

pytestmark = pytest.mark.integration


def _env(live_env: LiveEnv) -> dict[str, str]:
    c, k = live_env.cassandra, live_env.kafka
    return {
        "SCHEDULER_ENV": "dev",
        "SCHEDULER_CASSANDRA_CONTACT_POINTS": json.dumps(c.contact_points),
        "SCHEDULER_CASSANDRA_PORT": str(c.port),
        "SCHEDULER_CASSANDRA_KEYSPACE": c.keyspace,
        "SCHEDULER_CASSANDRA_REPLICATION_FACTOR": "1",
        "SCHEDULER_CASSANDRA_CONSISTENCY": "LOCAL_ONE",
        "SCHEDULER_KAFKA_BOOTSTRAP_SERVERS": k.bootstrap_servers,
        "SCHEDULER_KAFKA_TOPIC_PREFIX": k.topic_prefix,
        "SCHEDULER_KAFKA_REPLICATION_FACTOR": "1",
        "SCHEDULER_KAFKA_MIN_INSYNC_REPLICAS": "1",
    }


@pytest.fixture
def cli_env(live_env: LiveEnv, monkeypatch: pytest.MonkeyPatch) -> LiveEnv:
    for name, value in _env(live_env).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SCHEDULER_SECRET_PEPPER", raising=False)
    return live_env


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_admin_bootstraps_an_owner_and_manages_control_keys(
    cli_env: LiveEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = f"ops-{time.monotonic_ns()}@example.com"
    code, out, _ = _run(capsys, "admin", "create-control-key", "--owner", owner)
    assert code == 0, out
    fields = dict(line.split(":", 1) for line in out.splitlines() if line.count(":") >= 1)
    key_id, secret = fields["key id"].strip(), fields["secret"].strip()
    assert key_id.startswith("ck_") and len(secret) >= 22

    h = Harness(
        messages=CassandraMessageStore(cli_env.session),
        apps=CassandraAppStore(cli_env.session),
        usage=CassandraUsageStore(cli_env.session),
        publisher=cli_env.publisher,
        kafka=cli_env.kafka,
        hasher=SecretHasher(DEV_PEPPER.encode()),
        suffix=f"-cli{time.monotonic_ns()}",
    )
    try:
        keys = h.client.get("/control-keys", headers=token(secret))
        assert keys.status_code == 200, keys.text
        assert [k["id"] for k in keys.json()] == [key_id]
        app = h.client.post(
            "/applications",
            json={"name": "cli app", "type": "REST", "endpoint": "https://example.com/h"},
            headers=token(secret),
        ).json()

        code, out, _ = _run(capsys, "admin", "list-owners")
        assert code == 0 and f"{owner}\tactive control keys: {key_id}" in out.splitlines()
        code, out, _ = _run(capsys, "admin", "list-apps", "--owner", owner)
        assert code == 0 and out.splitlines() == [
            f"{app['id']}\tREST\tcli app\thttps://example.com/h"
        ]

        code, _, err = _run(
            capsys, "admin", "deactivate-control-key", "--owner", "someone-else", "--key-id", key_id
        )
        assert code == 1 and "no control key" in err
        code, out, _ = _run(
            capsys, "admin", "deactivate-control-key", "--owner", owner, "--key-id", key_id
        )
        assert code == 0
        h.clock.advance(h.settings.key_cache_ttl_ms)  # another process: within the cache TTL
        assert h.client.get("/control-keys", headers=token(secret)).status_code == 401
    finally:
        h.close()


def test_admin_refuses_to_run_without_a_pepper_in_production(
    cli_env: LiveEnv, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDULER_ENV", "production")
    code, _, err = _run(capsys, "admin", "create-control-key", "--owner", "x@example.com")
    assert code == 1 and "SCHEDULER_SECRET_PEPPER" in err


@pytest.fixture
def gateway_process(live_env: LiveEnv) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        **_env(live_env),
        "SCHEDULER_INGEST_HOST": "127.0.0.1",
        "SCHEDULER_INGEST_PORT": str(port),
        "SCHEDULER_INGEST_METRICS_PORT": str(metrics_port),
    }
    env.pop("SCHEDULER_SECRET_PEPPER", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler_ingest.main"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)  # reaps it and closes the pipes


def test_the_gateway_process_serves_and_stops_gracefully_on_sigterm(
    live_env: LiveEnv, gateway_process: tuple[subprocess.Popen[bytes], str, str]
) -> None:
    from scheduler.cli import create_control_key
    from scheduler.clock import SystemClock

    process, url, metrics_url = gateway_process
    _, secret = create_control_key(
        CassandraAppStore(live_env.session),
        SecretHasher(DEV_PEPPER.encode()),
        f"proc-{time.monotonic_ns()}@example.com",
        SystemClock(),
    )
    with httpx.Client(base_url=url, timeout=10) as client:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the gateway exited early"
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.2)
        control = {"Authorization": f"Token {secret}"}
        app = client.post(
            "/applications",
            json={"name": "p", "type": "REST", "endpoint": "https://example.com/h"},
            headers=control,
        ).json()
        key = client.post(f"/applications/{app['id']}/data-keys", headers=control).json()
        data = httpx.BasicAuth(app["id"], key["secret"])
        scheduled = client.post(
            "/messages", json={"payload": "", "sendAt": "2030-01-01T00:00:00+05:30"}, auth=data
        )
        assert scheduled.status_code == 200, scheduled.text
        got = client.get(f"/messages/{scheduled.json()['messageId']}", auth=data).json()
        assert (got["status"], got["sendAt"], got["payload"]) == (
            "READY",
            "2029-12-31T18:30:00.000Z",
            "",
        )
        # served on the metrics port only, not on the API's
        assert client.get("/metrics").status_code == 404
        metrics = httpx.get(metrics_url, timeout=10).text
        assert 'scheduler_ingest_kafka_produce_seconds_count{topic="requests"} 1.0' in metrics
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
    assert b"received SIGTERM" in err and b"ingest stopped" in err
