"""Regenerate deploy/grafana/dashboards/*.json from the panel lists below.

    .venv/bin/python deploy/tools/build_dashboards.py

Grafana's JSON is verbose; the panels are kept here as (title, unit, queries) so that a change is
a one-line diff. Every query is PromQL over the metrics the services declare in their metrics.py
(tests/unit/deploy/test_metrics_named.py checks each name). Series are grouped by `service`
(ingest, bucketer, releaser, dispatcher), the label the chart's ServiceMonitor and
deploy/prometheus/prometheus.yml give the targets.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards"
RATE = "$__rate_interval"
FAILED = 'scheduler_dispatch_attempts_total{outcome="failed"}'
APP_FAILED = 'scheduler_dispatch_app_attempts_total{outcome="failed"}'
TOP = 10  # applications per top-N panel (each service labels at most SCHEDULER_METRICS_TOP_APPS)


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: list[tuple[str, str]]  # (PromQL, legend)
    description: str = ""
    kind: str = "timeseries"


@dataclass(frozen=True)
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def quantiles(metric: str, by: str, where: str = "") -> list[tuple[str, str]]:
    selector = f"{metric}_bucket{{{where}}}" if where else f"{metric}_bucket"
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) (rate({selector}[{RATE}])))",
            f"p{label} {{{{{by}}}}}",
        )
        for q, label in (("0.5", "50"), ("0.99", "99"), ("0.999", "99.9"))
    ]


OVERVIEW = [
    Row(
        "Ingest",
        [
            Panel(
                "Requests by status",
                "reqps",
                [
                    (
                        f"sum by (status) (rate(scheduler_ingest_requests_total[{RATE}]))",
                        "{{status}}",
                    )
                ],
            ),
            Panel(
                "Messages scheduled",
                "ops",
                [
                    (
                        "sum by (source) "
                        f"(rate(scheduler_ingest_messages_scheduled_total[{RATE}]))",
                        "{{source}}",
                    )
                ],
                "Acknowledged by Kafka and answered with an id.",
            ),
            Panel(
                "Request latency (until the response starts)",
                "s",
                quantiles("scheduler_ingest_request_seconds", "route"),
            ),
            Panel(
                "Kafka produce latency (acks=all)",
                "s",
                quantiles("scheduler_ingest_kafka_produce_seconds", "topic"),
            ),
            Panel(
                "Errors: 5xx ratio",
                "percentunit",
                [
                    (
                        # `or vector(0)`: no 5xx series at all is a ratio of 0, not "No data".
                        f'(sum(rate(scheduler_ingest_requests_total{{status=~"5.."}}[{RATE}]))'
                        " or vector(0))"
                        f" / clamp_min(sum(rate(scheduler_ingest_requests_total[{RATE}])), 1e-9)",
                        "5xx / all",
                    )
                ],
                "503s mean Kafka or Cassandra did not answer in time (backpressure).",
            ),
            Panel(
                "Refused requests by reason",
                "reqps",
                [
                    (
                        f"sum by (reason) (rate(scheduler_ingest_rejects_total[{RATE}]))",
                        "{{reason}}",
                    )
                ],
            ),
        ],
    ),
    Row(
        "Consumer lag per stage",
        [
            Panel(
                "Bucketer: scheduler.requests / commands lag (records)",
                "short",
                [("sum by (topic) (scheduler_bucketer_consumer_lag)", "{{topic}}")],
                "High watermark minus position, per topic; growing = the bucketer falls behind.",
            ),
            Panel(
                "Releaser: behind now + look-ahead",
                "s",
                [("max(scheduler_release_behind_seconds)", "behind")],
                "0 when current. Above the look-ahead, stored messages will fire late.",
            ),
            Panel(
                "Dispatcher: ring records not yet settled",
                "short",
                [("sum(scheduler_dispatch_ring_lag_records)", "ring lag")],
            ),
            Panel(
                "Dispatcher: commands view behind",
                "s",
                [("max(scheduler_dispatch_commands_lag_seconds)", "commands lag")],
                "Age of the stalest commands partition. Firing stops while this exceeds the"
                " cancel guard (decision 5).",
            ),
            Panel(
                "Dispatcher: ring partitions by state, fenced instances",
                "short",
                [
                    (
                        "sum by (state) (scheduler_dispatch_ring_partitions)",
                        "{{state}}",
                    ),
                    ("sum(scheduler_dispatch_fenced)", "fenced instances"),
                ],
                "Draining: future slots still read before they are paused. A fenced instance"
                " was replaced by another owner of its partitions (an instance-count change) and"
                " waits to be stopped.",
            ),
        ],
    ),
    Row(
        "Pending messages by horizon",
        [
            Panel(
                "Stored, not yet released, by horizon",
                "short",
                [("max by (horizon) (scheduler_release_pending_messages)", "{{horizon}}")],
                "Messages waiting in Cassandra buckets, by how far ahead their bucket starts."
                " Approximate (counters): aborted/rescheduled ones count until their bucket is"
                " released; a replayed bucketer batch counts twice. Messages due within the"
                " look-ahead are in the ring instead (next panel).",
            ),
            Panel(
                "Near: held in dispatcher memory / in the ring",
                "short",
                [
                    ("sum(scheduler_dispatch_held_messages)", "held (current + next minute)"),
                    ("sum(scheduler_dispatch_in_flight)", "delivering now"),
                ],
            ),
            Panel(
                "Long horizon: into Cassandra vs released",
                "ops",
                [
                    (f"sum(rate(scheduler_bucketer_stored_total[{RATE}]))", "stored (READY)"),
                    (f"sum(rate(scheduler_release_messages_total[{RATE}]))", "released"),
                    (
                        f"sum by (cause) (rate(scheduler_bucketer_routed_direct_total[{RATE}]))",
                        "straight to the ring: {{cause}}",
                    ),
                ],
            ),
            Panel(
                "Releaser: leading replicas and fencing",
                "short",
                [
                    ("sum(scheduler_release_leader)", "leading replicas"),
                    (
                        f"sum(increase(scheduler_release_fenced_total[{RATE}]))",
                        "fenced by a newer leader",
                    ),
                ],
                "One replica leads. A fenced one was frozen or cut off while another took over;"
                " its ring transaction was aborted and it stood by (docs/ARCHITECTURE.md).",
            ),
            Panel(
                "Release watermark age",
                "s",
                [
                    (
                        "time() - max(scheduler_release_watermark_ms) / 1000",
                        "now - watermark (negative: released ahead)",
                    )
                ],
            ),
        ],
    ),
    Row(
        "Dispatch delay and lateness (docs/ARCHITECTURE.md, Lateness)",
        [
            Panel(
                "Dispatch delay percentiles by destination type (the SLO)",
                "s",
                quantiles("scheduler_dispatch_delay_seconds", "destination"),
                "Delivered - max(the attempt's due instant, the message's acceptance): the"
                " scheduler's own delay. A sendAt already past when the message was accepted and"
                " a retry's backoff are not in it. SchedulerDispatchDelayAboveSLO reads it."
                " REST: response received; KAFKA: transaction committed.",
            ),
            Panel(
                "Lateness percentiles by destination type (client-facing latenessMs)",
                "s",
                quantiles("scheduler_dispatch_lateness_seconds", "destination"),
                "Delivered - the attempt's due instant (sendAt for a first attempt, however far"
                " in the past): what clients see as latenessMs. Includes the past sendAt of"
                " clients that schedule late, so it is not alerted on. REST: response received;"
                " KAFKA: transaction committed.",
            ),
        ],
    ),
    Row(
        "Deliveries",
        [
            Panel(
                "Attempts by destination and outcome",
                "ops",
                [
                    (
                        "sum by (destination, outcome) "
                        f"(rate(scheduler_dispatch_attempts_total[{RATE}]))",
                        "{{destination}} {{outcome}}",
                    )
                ],
            ),
            Panel(
                "Retries by reason",
                "ops",
                [
                    (
                        "sum by (destination, reason) "
                        f'(rate(scheduler_dispatch_attempts_total{{outcome="retry"}}[{RATE}]))',
                        "{{destination}} {{reason}}",
                    )
                ],
            ),
            Panel(
                "Failures = dead letters (last hour)",
                "short",
                [
                    (
                        # A series born at its first failure has no increase(): count it whole.
                        f"sum by (destination, reason) (increase({FAILED}[1h])) > 0"
                        f" or sum by (destination, reason) ({FAILED} unless {FAILED} offset 1h)",
                        "{{destination}} {{reason}}",
                    )
                ],
                "Each FAILED message has a record on scheduler.dead-letter; redrive to retry.",
            ),
            Panel(
                "Not delivered at fire time, by reason",
                "ops",
                [
                    (
                        f"sum by (reason) (rate(scheduler_dispatch_skipped_total[{RATE}]))",
                        "{{reason}}",
                    )
                ],
            ),
            Panel(
                "Kafka transactions",
                "ops",
                [
                    (
                        f"sum by (result) (rate(scheduler_dispatch_transactions_total[{RATE}]))",
                        "{{result}}",
                    )
                ],
            ),
            Panel(
                "Rejected records (bucketer + dispatcher)",
                "ops",
                [
                    (
                        f"sum by (reason) (rate(scheduler_bucketer_rejected_total[{RATE}]))",
                        "bucketer {{reason}}",
                    ),
                    (
                        f"sum(rate(scheduler_dispatch_rejected_records_total[{RATE}]))",
                        "dispatcher (undecodable ring records)",
                    ),
                ],
            ),
        ],
    ),
    Row(
        "Top applications",
        [
            Panel(
                "Top applications: messages scheduled",
                "ops",
                [
                    (
                        f"topk({TOP}, sum by (app) "
                        f"(rate(scheduler_ingest_app_messages_total[{RATE}])))",
                        "{{app}}",
                    )
                ],
                "Through the HTTP API (Kafka-native producers bypass ingest). Per application"
                " id; apps outside each replica's top SCHEDULER_METRICS_TOP_APPS are summed as"
                ' "other".',
            ),
            Panel(
                "Top applications: deliveries sent and retried",
                "ops",
                [
                    (
                        f"topk({TOP}, sum by (app) (rate("
                        f'scheduler_dispatch_app_attempts_total{{outcome="sent"}}[{RATE}])))',
                        "{{app}} sent",
                    ),
                    (
                        f"topk({TOP}, sum by (app) (rate("
                        f'scheduler_dispatch_app_attempts_total{{outcome="retry"}}[{RATE}])))',
                        "{{app}} retry",
                    ),
                ],
            ),
            Panel(
                "Top applications: failures (last hour)",
                "short",
                [
                    (
                        # As for the dead letters: a series born at its first failure counts whole.
                        f"topk({TOP}, sum by (app) (increase({APP_FAILED}[1h])) > 0"
                        f" or sum by (app) ({APP_FAILED} unless {APP_FAILED} offset 1h))",
                        "{{app}}",
                    )
                ],
                "Messages that ended FAILED (dead letters), per application.",
            ),
        ],
    ),
]


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
            }
            for i, (expr, legend) in enumerate(panel.queries)
        ],
    }


def dashboard(uid: str, title: str, rows: list[Row]) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y, next_id = 0, 1
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        for i, panel in enumerate(row.panels):
            panels.append(_panel(panel, next_id, 12 * (i % 2), y + 8 * (i // 2)))
            next_id += 1
        y += 8 * ((len(row.panels) + 1) // 2)
    return {
        "uid": uid,
        "title": title,
        "tags": ["pit-scheduler"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    board = dashboard("pit-scheduler-overview", "Point-in-time scheduler", OVERVIEW)
    path = OUT / "scheduler-overview.json"
    path.write_text(json.dumps(board, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
