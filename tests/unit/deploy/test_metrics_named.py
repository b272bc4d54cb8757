"""Every metric a dashboard or an alert rule names is declared by a service's metrics module."""

from __future__ import annotations

import pytest

from .support import (
    ROOT,
    alert_rules,
    dashboard_queries,
    exported_metric_names,
    metric_names_in,
    run,
    tool,
)

pytestmark = pytest.mark.unit

BUILTIN = {"up"}  # set by Prometheus on every target


def test_the_services_declare_metrics() -> None:
    names = exported_metric_names()
    # The four metrics modules were all collected (one name of each).
    for name in (
        "scheduler_ingest_requests_total",
        "scheduler_bucketer_consumer_lag",
        "scheduler_dispatch_lateness_seconds_bucket",
        "scheduler_dispatch_delay_seconds_bucket",
        "scheduler_release_behind_seconds",
    ):
        assert name in names


def test_every_dashboard_query_names_declared_metrics() -> None:
    declared = exported_metric_names() | BUILTIN
    queries = list(dashboard_queries())
    assert len(queries) >= 20
    for board, title, expr in queries:
        used = metric_names_in(expr)
        assert used, f"{board} / {title}: no metric in {expr!r}"
        assert used <= declared, f"{board} / {title}: unknown {sorted(used - declared)}"


def test_every_alert_names_declared_metrics() -> None:
    declared = exported_metric_names() | BUILTIN
    rules = alert_rules()
    assert len(rules) >= 4
    for rule in rules:
        used = metric_names_in(rule["expr"])
        assert used, f"{rule['alert']}: no metric"
        assert used <= declared, f"{rule['alert']}: unknown {sorted(used - declared)}"


def test_the_issue_s_dashboards_and_alerts_exist() -> None:
    titles = " | ".join(title.lower() for _, title, _ in dashboard_queries())
    topics = ("request", "latency", "error", "lag", "held", "lateness", "retries", "failures")
    for topic in (*topics, "by horizon", "top applications"):
        assert topic in titles, topic
    # The two panels read the bounded gauges the issue asks for.
    exprs = " ".join(expr for _, _, expr in dashboard_queries())
    for name in (
        "scheduler_release_pending_messages",
        "scheduler_ingest_app_messages_total",
        "scheduler_dispatch_app_attempts_total",
    ):
        assert name in exprs and name in exported_metric_names(), name
    assert "topk(" in exprs
    # The SLO reads the dispatch delay; the client-facing lateness is shown, never alerted on
    # (docs/ARCHITECTURE.md, "Lateness").
    assert "scheduler_dispatch_delay_seconds_bucket" in exprs
    slo = [rule for rule in alert_rules() if "SLO" in rule["alert"]]
    assert [metric_names_in(rule["expr"]) for rule in slo] == [
        {"scheduler_dispatch_delay_seconds_bucket"}
    ]
    alerts = {rule["alert"] for rule in alert_rules()}
    assert {
        "SchedulerDispatchDelayAboveSLO",
        "SchedulerBucketerLagGrowing",
        "SchedulerDeadLetters",
        "SchedulerServiceDown",
    } <= alerts


@pytest.mark.tools
def test_dashboard_queries_are_valid_promql(tmp_path) -> None:
    """promtool parses them as recording rules (Grafana's $__rate_interval -> 5m)."""
    import yaml

    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, _, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = run(tool("promtool"), "check", "rules", path)
    assert f"SUCCESS: {len(rules)} rules found" in out


@pytest.mark.tools
def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    out = run(tool("promtool"), "check", "rules", ROOT / "deploy/prometheus/alerts.yml")
    assert f"SUCCESS: {len(alert_rules())} rules found" in out
    run(tool("promtool"), "test", "rules", ROOT / "deploy/prometheus/alerts.test.yml")


def test_a_name_that_is_not_declared_is_caught() -> None:
    declared = exported_metric_names() | BUILTIN
    expr = "sum(rate(scheduler_dispatch_latenes_seconds_bucket[5m]))"
    assert not metric_names_in(expr) <= declared


def test_dashboards_are_well_formed_for_grafana() -> None:
    """Unique panel ids, no overlapping panels, every target on the datasource variable, and
    the provisioning points where compose mounts the dashboards."""
    import json

    import yaml

    boards = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert boards
    for path in boards:
        board = json.loads(path.read_text())
        assert board["uid"] and board["title"]
        names = [v["name"] for v in board["templating"]["list"]]
        assert names == ["datasource", "namespace", "job", "instance"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
            mine = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not mine & cells, f"{path.name}: {panel['title']} overlaps another panel"
            cells |= mine
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == "${datasource}"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/scheduler.yaml").read_text()
    )["providers"][0]
    compose = (ROOT / "deploy/compose.yaml").read_text()
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in compose
