import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from scheduler.clock import ManualClock
from scheduler.ops import Health, OpsServer

pytestmark = pytest.mark.unit


def test_health_follows_the_heartbeat_and_readiness() -> None:
    clock = ManualClock()
    health = Health(clock, stale_after_ms=1_000)
    assert health.alive() == (True, "alive")
    assert health.ready() == (False, "starting")
    health.set_ready(True)
    assert health.ready() == (True, "ready")
    clock.advance(1_001)
    assert health.alive()[0] is False
    assert health.ready()[0] is False  # a stuck loop is not ready either
    health.beat()
    assert health.ready() == (True, "ready")


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_ops_server_serves_metrics_health_and_json_404() -> None:
    # a real socket on loopback, but no wall-clock waiting: health runs on a manual clock
    registry = CollectorRegistry()
    Counter("demo_things", "things", registry=registry).inc(3)
    health = Health(ManualClock(), stale_after_ms=1_000)
    server = OpsServer("127.0.0.1", 0, registry, health)
    try:
        status, body = _get(server.port, "/metrics")
        assert status == 200 and b"demo_things_total 3.0" in body
        assert _get(server.port, "/healthz")[0] == 200
        status, body = _get(server.port, "/readyz")
        assert status == 503 and json.loads(body) == {"status": "unavailable", "reason": "starting"}
        health.set_ready(True)
        assert _get(server.port, "/readyz")[0] == 200
        status, body = _get(server.port, "/nope")
        assert status == 404 and json.loads(body)["error"] == "not_found"
    finally:
        server.close()
