"""The chart's copies of the alert rules and dashboards are the sources', byte for byte.

deploy/prometheus/alerts.yml and deploy/grafana/dashboards/*.json are edited; the chart renders
its PrometheusRule and dashboards ConfigMap from copies under files/ (Helm reads nothing outside
the chart). After a change to a source: `.venv/bin/python deploy/tools/sync_chart_monitoring.py`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from .support import ROOT, render_chart

SYNC = ROOT / "deploy/tools/sync_chart_monitoring.py"


def _sync_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_chart_monitoring", SYNC)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.unit
def test_the_chart_holds_exact_copies_of_the_rules_and_dashboards() -> None:
    sync = _sync_module()
    wanted: dict[Path, bytes] = sync.copies()
    assert len(wanted) >= 2, "the alert rules and at least one dashboard"
    rerun = "re-run deploy/tools/sync_chart_monitoring.py"
    assert sync.held() == set(wanted), f"copies missing or left over: {rerun}"
    for path, content in wanted.items():
        assert path.read_bytes() == content, f"{path.relative_to(ROOT)} differs: {rerun}"


@pytest.mark.unit
def test_the_dashboards_fit_one_config_map() -> None:
    """The API server refuses a ConfigMap over 1 MiB: the sidecar's would fail to install."""
    sync = _sync_module()
    size = sum(len(c) for p, c in sync.copies().items() if p.suffix == ".json")
    assert size < 900 * 1024, f"{size} bytes of dashboards: split them over ConfigMaps"


@pytest.mark.unit
def test_the_check_sees_a_changed_source(tmp_path, monkeypatch) -> None:
    """A rule edited in alerts.yml and not synced is a difference."""
    sync = _sync_module()
    edited = tmp_path / "alerts.yml"
    edited.write_text(sync.ALERTS_SOURCE.read_text() + "\n# edited\n")
    monkeypatch.setattr(sync, "ALERTS_SOURCE", edited)
    wanted = sync.copies()
    assert wanted[sync.FILES / "alerts.yml"] != (sync.FILES / "alerts.yml").read_bytes()


@pytest.mark.unit
@pytest.mark.tools
def test_the_prometheus_rule_is_the_alert_rules() -> None:
    objects = render_chart(
        "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.labels.release=kps"
    )
    [rule] = [o for o in objects if o["kind"] == "PrometheusRule"]
    source = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    # Prometheus's own templates reach it untouched (Helm must not evaluate them)
    assert "{{ $labels.service }}" in yaml.safe_dump(rule)


@pytest.mark.unit
@pytest.mark.tools
def test_the_dashboards_config_map_is_labelled_for_grafanas_sidecar() -> None:
    assert not [o for o in render_chart() if o["metadata"]["name"].endswith("-dashboards")]
    objects = render_chart(
        "metrics.dashboards.enabled=true", "metrics.dashboards.annotations.grafana_folder=Scheduler"
    )
    [board_map] = [o for o in objects if o["metadata"]["name"].endswith("-dashboards")]
    assert board_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board_map["metadata"]["annotations"] == {"grafana_folder": "Scheduler"}
    sources = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert sorted(board_map["data"]) == [p.name for p in sources]
    for path in sources:
        assert json.loads(board_map["data"][path.name]) == json.loads(path.read_text())
