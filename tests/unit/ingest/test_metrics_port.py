"""Ingest's /metrics is served on its own port (SCHEDULER_INGEST_METRICS_PORT), not on the API's.

The metrics carry application ids in their `app` labels: the API port is public (Service,
Ingress), the metrics port is scraped from inside the cluster only.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from scheduler.testing.processes import free_port
from scheduler_ingest.main import serve_metrics
from scheduler_ingest.metrics import IngestMetrics
from scheduler_ingest.settings import IngestSettings

pytestmark = pytest.mark.unit


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_are_served_on_the_metrics_port_and_nothing_else_is() -> None:
    registry = CollectorRegistry()
    IngestMetrics(registry).rejects.labels("missing_sendAt").inc()
    port = free_port()
    server = serve_metrics(IngestSettings(host="127.0.0.1", metrics_port=port), registry)
    assert server is not None
    try:
        status, body = _get(port, "/metrics")
        assert status == 200
        assert 'scheduler_ingest_rejects_total{reason="missing_sendAt"} 1.0' in body
        # probes stay on the API port, where the gateway's own /healthz and /readyz answer
        assert _get(port, "/healthz")[0] == 404
        assert _get(port, "/readyz")[0] == 404
    finally:
        server.close()


def test_metrics_port_zero_serves_no_metrics() -> None:
    assert serve_metrics(IngestSettings(metrics_port=0), CollectorRegistry()) is None


def test_the_metrics_port_defaults_apart_from_the_api_port() -> None:
    settings = IngestSettings()
    assert settings.metrics_port and settings.metrics_port != settings.port


def test_the_metrics_port_cannot_be_the_api_port() -> None:
    with pytest.raises(ValidationError, match="metrics_port"):
        IngestSettings(port=8080, metrics_port=8080)
