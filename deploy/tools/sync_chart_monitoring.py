"""Copy the alert rules and the Grafana dashboards into the Helm chart.

    .venv/bin/python deploy/tools/sync_chart_monitoring.py

Helm reads only files inside the chart, so the chart's PrometheusRule and dashboards ConfigMap
are rendered from copies: deploy/prometheus/alerts.yml -> deploy/k8s/chart/files/alerts.yml and
deploy/grafana/dashboards/*.json -> deploy/k8s/chart/files/dashboards/. The sources stay the
only place to edit; re-run this after changing them (tests/unit/deploy/test_chart_monitoring.py
fails while a copy differs, is missing, or is left over).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "deploy/k8s/chart/files"
ALERTS_SOURCE = ROOT / "deploy/prometheus/alerts.yml"
DASHBOARDS_SOURCE = ROOT / "deploy/grafana/dashboards"


def copies() -> dict[Path, bytes]:
    """Every file the chart must hold -> its exact content."""
    wanted = {FILES / "alerts.yml": ALERTS_SOURCE.read_bytes()}
    for board in sorted(DASHBOARDS_SOURCE.glob("*.json")):
        wanted[FILES / "dashboards" / board.name] = board.read_bytes()
    return wanted


def held() -> set[Path]:
    """The copies the chart holds now."""
    found = set((FILES / "dashboards").glob("*.json"))
    if (FILES / "alerts.yml").exists():
        found.add(FILES / "alerts.yml")
    return found


def main() -> int:
    wanted = copies()
    for stale in held() - set(wanted):
        stale.unlink()
    for path, content in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
    print(f"{len(wanted)} file(s) in {FILES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
