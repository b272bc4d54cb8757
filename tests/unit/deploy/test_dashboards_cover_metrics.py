"""Every metric the services declare is on a dashboard panel, or listed in OMITTED with a
reason; every query of every dashboard is scoped to the namespace/job/instance variables; the
committed JSON is what deploy/tools/build_dashboards.py generates."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from types import ModuleType

import pytest

from .support import (
    ROOT,
    dashboard_queries,
    declared_metric_families,
    metric_names_in,
    metrics_classes,
    metrics_modules,
)

pytestmark = pytest.mark.unit

SCOPE_MATCHERS = ('namespace=~"$namespace"', 'job=~"$job"', 'instance=~"$instance"')
SELECTOR = re.compile(r"\b(scheduler_[a-z0-9_]+|process_[a-z0-9_]+|up)\b(\{[^}]*\})?(?!\s*\()")


def build_dashboards() -> ModuleType:
    path = ROOT / "deploy/tools/build_dashboards.py"
    spec = importlib.util.spec_from_file_location("build_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def shown_metric_names() -> set[str]:
    return {name for _, _, expr in dashboard_queries() for name in metric_names_in(expr)}


def unaccounted(
    families: dict[str, set[str]], shown: set[str], omitted: dict[str, str]
) -> list[str]:
    """Families with no sample on a panel and no reason to be left off."""
    return sorted(
        family
        for family, samples in families.items()
        if not samples & shown and not samples & set(omitted)
    )


def test_the_metrics_modules_are_found_not_listed() -> None:
    """The discovery reads every metrics.py: the console's and the process collector's metrics
    are among what it finds, so a metrics module of its own is covered without a list."""
    modules = metrics_modules()
    assert "scheduler_ingest.console.metrics" in modules
    assert "scheduler_releaser.metrics" in modules
    assert len(metrics_classes()) >= 5
    families = declared_metric_families()
    assert any(name.startswith("scheduler_console_") for name in families)
    assert "process_resident_memory_bytes" in families
    assert "scheduler_dispatch_settled" in families


def test_every_declared_metric_is_on_a_panel_or_omitted_with_a_reason() -> None:
    omitted: dict[str, str] = build_dashboards().OMITTED
    missing = unaccounted(declared_metric_families(), shown_metric_names(), omitted)
    assert not missing, f"on no dashboard and not in OMITTED: {missing}"


def test_a_metric_on_no_panel_is_caught() -> None:
    families = {"scheduler_x_done": {"scheduler_x_done_total"}, "up": {"up"}}
    assert unaccounted(families, {"up"}, {}) == ["scheduler_x_done"]
    assert unaccounted(families, {"up"}, {"scheduler_x_done_total": "why"}) == []
    histogram = {"scheduler_x_seconds": {f"scheduler_x_seconds{s}" for s in ("_bucket", "_sum")}}
    assert unaccounted(histogram, {"scheduler_x_seconds_bucket"}, {}) == []


def test_omitted_metrics_are_declared_unshown_and_explained() -> None:
    omitted: dict[str, str] = build_dashboards().OMITTED
    declared = {name for samples in declared_metric_families().values() for name in samples}
    shown = shown_metric_names()
    for name, reason in omitted.items():
        assert name in declared, f"OMITTED names {name}, which no service declares"
        assert name not in shown, f"{name} is omitted but shown"
        assert len(reason) > 20, f"{name}: give the reason"


def test_every_selector_of_every_query_is_scoped_to_the_variables() -> None:
    count = 0
    for board, title, expr in dashboard_queries():
        for match in SELECTOR.finditer(expr):
            labels = match.group(2) or ""
            for matcher in SCOPE_MATCHERS:
                assert matcher in labels, f"{board} / {title}: {match.group(0)} lacks {matcher}"
            count += 1
    assert count >= 100


def test_the_variables_choose_one_namespace_and_any_jobs_and_pods() -> None:
    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        variables = {v["name"]: v for v in json.loads(path.read_text())["templating"]["list"]}
        # One install at a time: an "All" namespace would sum two installs again.
        assert not variables["namespace"]["includeAll"] and not variables["namespace"]["multi"]
        for name in ("job", "instance"):
            assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
        assert "$namespace" in variables["job"]["query"]["query"]
        assert "$job" in variables["instance"]["query"]["query"]


def test_an_overview_and_a_dashboard_per_component_with_process_panels() -> None:
    titles: dict[str, list[str]] = {}
    for board, title, _ in dashboard_queries():
        titles.setdefault(board, []).append(title)
    assert set(titles) == {
        f"scheduler-{name}.json"
        for name in ("overview", "ingest", "bucketer", "releaser", "dispatcher")
    }
    for board, panels in titles.items():
        for process_panel in ("Targets up", "CPU (cores)", "Resident memory", "Restarts"):
            assert any(t.startswith(process_panel) for t in panels), (board, process_panel)


def test_the_committed_dashboards_are_the_generated_ones(tmp_path, monkeypatch) -> None:
    module = build_dashboards()
    monkeypatch.setattr(module, "OUT", tmp_path)
    assert module.main() == 0
    generated = sorted(p.name for p in tmp_path.glob("*.json"))
    committed = sorted(p.name for p in (ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert generated == committed
    for name in generated:
        assert (tmp_path / name).read_text() == (
            ROOT / "deploy/grafana/dashboards" / name
        ).read_text(), f"{name}: run deploy/tools/build_dashboards.py"
