"""Regenerate deploy/grafana/dashboards/*.json from the panel lists below.

    .venv/bin/python deploy/tools/build_dashboards.py

Grafana's JSON is verbose; the panels are kept here as (title, unit, queries) so that a change is
a one-line diff. Every query is PromQL over the metrics the services declare in their metrics.py
(tests/unit/deploy/test_metrics_named.py checks each name; test_dashboards_cover_metrics.py that
every declared metric is on a panel or in OMITTED with a reason). Series are grouped by `service`
(ingest, bucketer, releaser, dispatcher), the label the chart's ServiceMonitor and
deploy/prometheus/prometheus.yml give the targets.

Every metric selector is scoped to the dashboards' variables `namespace` (one install at a time:
two installs in one Prometheus are never summed), `job` and `instance` (a pod), added here by
`scoped()` so that no query can forget them.

Dashboards: an overview (processes, the flow end to end, delays, deliveries, top applications)
and one per component with the figures an investigation of that component needs.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards"
RATE = "$__rate_interval"
FAILED = 'scheduler_dispatch_attempts_total{outcome="failed"}'
APP_FAILED = 'scheduler_dispatch_app_attempts_total{outcome="failed"}'
TOP = 10  # applications per top-N panel (each service labels at most SCHEDULER_METRICS_TOP_APPS)
SERVICES = 'service=~"ingest|bucketer|releaser|dispatcher"'
UP = f"up{{{SERVICES}}}"
# Declared metrics deliberately on no panel, with the reason (a test holds every other one shown).
OMITTED = {
    "process_virtual_memory_bytes": "address space reserved, not memory used: the resident"
    " memory panel is the figure to watch",
}
# The dashboards' variables, applied to every metric selector by scoped().
SCOPE = 'namespace=~"$namespace", job=~"$job", instance=~"$instance"'
_SELECTOR = re.compile(r"\b(scheduler_[a-z0-9_]+|process_[a-z0-9_]+|up)\b(\{[^}]*\})?(?!\s*\()")


def scoped(expr: str) -> str:
    """`expr` with the variables' matchers added to each metric selector."""

    def add(match: re.Match[str]) -> str:
        name, labels = match.group(1), match.group(2)
        inner = labels[1:-1] if labels else ""
        return f"{name}{{{SCOPE}{', ' + inner if inner else ''}}}"

    return _SELECTOR.sub(add, expr)


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


def quantiles(metric: str, by: str = "", where: str = "") -> list[tuple[str, str]]:
    """p50 / p99 / p99.9 of a histogram, per `by` label (none: one curve each)."""
    selector = f"{metric}_bucket{{{where}}}" if where else f"{metric}_bucket"
    group = f"le, {by}" if by else "le"
    legend = f" {{{{{by}}}}}" if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({selector}[{RATE}])))",
            f"p{label}{legend}",
        )
        for q, label in (("0.5", "50"), ("0.99", "99"), ("0.999", "99.9"))
    ]


def or_zero(expr: str) -> str:
    """A labelled counter has no series until its first event: show 0, not "No data"."""
    return f"{expr} or vector(0)"


def per_hour(metric: str, by: str = "") -> str:
    """Events of a counter in the last hour (a short label list: `by`)."""
    return f"sum by ({by}) (increase({metric}[1h]))" if by else f"sum(increase({metric}[1h]))"


def processes(services: str = "ingest|bucketer|releaser|dispatcher") -> Row:
    """Up, CPU, resident memory, restarts of the processes of `services` (a regex)."""
    on = f'service=~"{services}"'
    by = "service, instance"
    # The dispatcher's record writer is a child process: it counts its own restarts.
    writer_restarts = (
        [
            (
                "sum by (instance) (increase(scheduler_record_writer_restarts_total[1h]))",
                "record writer of {{instance}} restarts",
            )
        ]
        if "dispatcher" in services
        else []
    )
    return Row(
        "Processes",
        [
            Panel(
                "Targets up",
                "short",
                [(f"max by ({by}) (up{{{on}}})", "{{service}} {{instance}}")],
                "1: scraped; 0: the target does not answer (SchedulerServiceDown after 2 min).",
            ),
            Panel(
                "CPU (cores)",
                "short",
                [
                    (
                        f"sum by ({by}) (rate(process_cpu_seconds_total{{{on}}}[{RATE}]))",
                        "{{service}} {{instance}}",
                    )
                ],
                "Python runs one core per process: near 1 the process is CPU-bound. The"
                " dispatcher's record writer is a child process, not counted here.",
            ),
            Panel(
                "Resident memory",
                "bytes",
                [
                    (
                        f"max by ({by}) (process_resident_memory_bytes{{{on}}})",
                        "{{service}} {{instance}}",
                    )
                ],
                "Compare with the pod's memory limit. The dispatcher holds up to"
                " SCHEDULER_DISPATCH_MAX_HELD messages in memory.",
            ),
            Panel(
                "Restarts (last hour) and uptime",
                "short",
                [
                    (
                        f"sum by ({by}) (changes(process_start_time_seconds{{{on}}}[1h]))",
                        "{{service}} {{instance}} restarts",
                    ),
                    *writer_restarts,
                ],
                "A restart of a process shows as a new start time; the dispatcher's record"
                " writer child process counts its own (SchedulerProcessRestarting,"
                " SchedulerRecordWriterRestarting).",
            ),
            Panel(
                "Uptime",
                "s",
                [
                    (
                        f"time() - max by ({by}) (process_start_time_seconds{{{on}}})",
                        "{{service}} {{instance}}",
                    )
                ],
            ),
            Panel(
                "Open file descriptors",
                "short",
                [
                    (f"max by ({by}) (process_open_fds{{{on}}})", "{{service}} {{instance}} open"),
                    (f"min by ({by}) (process_max_fds{{{on}}})", "{{service}} {{instance}} limit"),
                ],
                "Sockets included (Kafka, Cassandra, HTTP connections).",
            ),
        ],
    )


FLOW = Row(
    "The flow end to end: is anything stuck?",
    [
        Panel(
            "Into the ring vs settled by the dispatchers",
            "ops",
            [
                (f"sum(rate(scheduler_release_messages_total[{RATE}]))", "released into the ring"),
                (
                    f"sum(rate(scheduler_bucketer_routed_direct_total[{RATE}]))",
                    "routed straight to the ring",
                ),
                (f"sum(rate(scheduler_dispatch_settled_total[{RATE}]))", "settled (committed)"),
            ],
            "Settled: a ring record's result committed with its offset. Settled flat while"
            " messages go into the ring (a few minutes ahead of their due time) means nothing is"
            " delivered for good: SchedulerDueMessagesNotSettled.",
        ),
        Panel(
            "Dispatcher transactions by result",
            "ops",
            [
                (
                    f"sum by (result) (rate(scheduler_dispatch_transactions_total[{RATE}]))",
                    "{{result}}",
                )
            ],
            "An idle dispatcher still commits its offsets every minute. Aborted with no"
            " committed: its transactions fail in a loop (a results topic refusing records,"
            " Kafka unreachable).",
        ),
    ],
)


OVERVIEW = [
    processes(),
    FLOW,
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


INGEST = [
    processes("ingest"),
    Row(
        "Ingest: Kafka, records, aborts",
        [
            Panel(
                "Kafka produce failures by topic and cause",
                "ops",
                [
                    (
                        or_zero(
                            "sum by (topic, cause) "
                            f"(rate(scheduler_ingest_kafka_produce_failures_total[{RATE}]))"
                        ),
                        "{{topic}} {{cause}}",
                    )
                ],
                "Records Kafka did not acknowledge within the produce timeout: answered 503.",
            ),
            Panel(
                "Record writes failed after Kafka acknowledged",
                "ops",
                [(f"sum(rate(scheduler_ingest_record_write_failures_total[{RATE}]))", "failed")],
                "Nothing is lost (the bucketer writes the record later); GET /messages/{id} may"
                " answer 404 for a moment. Cassandra trouble.",
            ),
            Panel(
                "Abort outcomes",
                "ops",
                [
                    (
                        f"sum by (outcome) (rate(scheduler_ingest_abort_outcomes_total[{RATE}]))",
                        "{{outcome}}",
                    )
                ],
                "certain / confirmed_not_delivered: 200; too_late_delivered / unconfirmed: 409."
                " unconfirmed rising: the dispatcher's results come late (docs/ARCHITECTURE.md,"
                " Aborts).",
            ),
            Panel(
                "Reschedules and bulk operations",
                "ops",
                [
                    (
                        "sum by (operation, outcome)"
                        f" (rate(scheduler_ingest_message_operations_total[{RATE}]))",
                        "{{operation}} {{outcome}}",
                    )
                ],
                "reschedule: rescheduled, or the error token; bulk_abort / bulk_redrive: per"
                " message (aborted, redriven, too_late, not_abortable, not_redrivable, failed)."
                " failed or unavailable: Kafka did not acknowledge; the caller repeats.",
            ),
            Panel(
                "Key cache lookups",
                "ops",
                [
                    (
                        f"sum by (result) (rate(scheduler_ingest_key_cache_total[{RATE}]))",
                        "{{result}}",
                    )
                ],
                "Misses read Cassandra; mostly hits once clients are steady.",
            ),
        ],
    ),
    Row(
        "Ingest: console",
        [
            Panel(
                "Console sign-ins and refused posts",
                "ops",
                [
                    (
                        or_zero(
                            f"sum by (outcome) (rate(scheduler_console_sign_ins_total[{RATE}]))"
                        ),
                        "sign-in {{outcome}}",
                    ),
                    (
                        or_zero(
                            f"sum by (reason) (rate(scheduler_console_refused_posts_total[{RATE}]))"
                        ),
                        "refused post: {{reason}}",
                    ),
                ],
                "Refused sign-ins in bursts: someone guessing control keys.",
            ),
            Panel(
                "Console changes by action",
                "short",
                [(or_zero(per_hour("scheduler_console_actions_total", "action")), "{{action}}")],
                "Changes made through the console in the last hour.",
            ),
        ],
    ),
]

BUCKETER = [
    processes("bucketer"),
    Row(
        "Bucketer: batches",
        [
            Panel(
                "Records consumed by kind",
                "ops",
                [
                    (
                        f"sum by (kind) (rate(scheduler_bucketer_consumed_total[{RATE}]))",
                        "{{kind}}",
                    )
                ],
            ),
            Panel(
                "Consumer lag per partition",
                "short",
                [
                    (
                        "max by (topic, partition) (scheduler_bucketer_consumer_lag)",
                        "{{topic}} {{partition}}",
                    )
                ],
                "One partition lagging alone: a hot application key, or its replica is slow.",
            ),
            Panel(
                "Batch duration (consumed to committed)",
                "s",
                quantiles("scheduler_bucketer_batch_seconds"),
            ),
            Panel("Batch size (records)", "short", quantiles("scheduler_bucketer_batch_records")),
            Panel(
                "Batches retried by stage",
                "ops",
                [
                    (
                        or_zero(
                            f"sum by (stage) (rate(scheduler_bucketer_batch_retries_total[{RATE}]))"
                        ),
                        "{{stage}}",
                    )
                ],
                "A batch rolled back and retried after a transient failure (Cassandra, Kafka):"
                " retried, never skipped. Lasting: SchedulerBucketerStalled.",
            ),
            Panel(
                "Commands by kind and outcome",
                "ops",
                [
                    (
                        f"sum by (kind, outcome) (rate(scheduler_bucketer_commands_total[{RATE}]))",
                        "{{kind}} {{outcome}}",
                    )
                ],
            ),
            Panel(
                "Idempotency key repeats by outcome",
                "ops",
                [
                    (
                        or_zero(
                            "sum by (outcome) "
                            f"(rate(scheduler_bucketer_key_duplicates_total[{RATE}]))"
                        ),
                        "{{outcome}}",
                    )
                ],
                "Requests repeating the one holding their key (a client retry).",
            ),
            Panel(
                "Pending count writes failed (last hour)",
                "short",
                [(per_hour("scheduler_bucketer_pending_count_failures_total"), "failed")],
                "The pending-by-horizon gauge under-counts these batches; the messages are stored.",
            ),
            Panel(
                "Kafka-native schedule changes by operation and outcome",
                "ops",
                [
                    (
                        or_zero(
                            "sum by (operation, outcome) "
                            f"(rate(scheduler_bucketer_schedule_definitions_total[{RATE}]))"
                        ),
                        "{{operation}} {{outcome}}",
                    )
                ],
                "ScheduleDefinition records applied to the recurring schedules; `rejected` ones"
                " are on the rejected topic with their reason.",
            ),
        ],
    ),
]

RELEASER = [
    processes("releaser"),
    Row(
        "Releaser: leadership and releases",
        [
            Panel(
                "Leadership per replica",
                "short",
                [("max by (instance) (scheduler_release_leader)", "{{instance}}")],
                "Exactly one replica at 1. None for long: SchedulerNoReleaseLeader.",
            ),
            Panel(
                "Fenced by a newer leader (last hour)",
                "short",
                [(per_hour("scheduler_release_fenced_total", "instance"), "{{instance}}")],
            ),
            Panel(
                "Bucket release duration",
                "s",
                quantiles("scheduler_release_bucket_seconds"),
                "Read, produce to the ring, drop: Cassandra latency shows here.",
            ),
            Panel(
                "Released and aborted at release",
                "ops",
                [
                    (f"sum(rate(scheduler_release_messages_total[{RATE}]))", "released"),
                    (
                        f"sum(rate(scheduler_release_app_deleted_total[{RATE}]))",
                        "aborted: application deleted",
                    ),
                ],
            ),
        ],
    ),
    Row(
        "Releaser: occurrences of recurring schedules",
        [
            Panel(
                "Occurrences created",
                "ops",
                [
                    (f"sum(rate(scheduler_schedule_occurrences_created_total[{RATE}]))", "created"),
                    (
                        f"sum(rate(scheduler_schedule_occurrences_aborted_total[{RATE}]))",
                        "aborted: paused or deleted during a tick",
                    ),
                    (
                        f"sum(rate(scheduler_schedule_occurrences_invalid_total[{RATE}]))",
                        "not created: would be refused",
                    ),
                    (
                        f"sum(rate(scheduler_schedule_ticks_skipped_total[{RATE}]))",
                        "ticks that dropped missed occurrences (catch-up policy)",
                    ),
                ],
                "Published to the requests topic by the leader's runner, ahead of their instants.",
            ),
            Panel(
                "Runner tick duration",
                "s",
                quantiles("scheduler_schedule_tick_seconds"),
                "One pass over every live schedule: grows with the number of schedules.",
            ),
            Panel(
                "Failed runner ticks (last hour)",
                "short",
                [(per_hour("scheduler_schedule_tick_failures_total"), "failed")],
                "Kafka or Cassandra trouble: the next tick repeats the work; nothing is skipped.",
            ),
        ],
    ),
]

DISPATCHER = [
    processes("dispatcher"),
    Row(
        "Dispatcher: settlement and transactions",
        [
            Panel(
                "Settled ring records per instance",
                "ops",
                [
                    (
                        f"sum by (instance) (rate(scheduler_dispatch_settled_total[{RATE}]))",
                        "{{instance}}",
                    )
                ],
                "Committed with their offsets. Flat while its ring lag is above 0: nothing"
                " settles (SchedulerDueMessagesNotSettled).",
            ),
            Panel(
                "Transaction duration",
                "s",
                quantiles("scheduler_dispatch_transaction_seconds"),
                "Produce and commit of one transaction; a KAFKA delivery is visible once it"
                " commits.",
            ),
            Panel(
                "Destination refusals by error",
                "ops",
                [
                    (
                        or_zero(
                            "sum by (error, kind) "
                            f"(rate(scheduler_dispatch_destination_refusals_total[{RATE}]))"
                        ),
                        "{{error}} {{kind}}",
                    )
                ],
                "KAFKA destination records refused by their topic and settled without them"
                " (permanent: FAILED; transient: retried).",
            ),
            Panel(
                "Deliveries waiting for a quarantined topic",
                "ops",
                [
                    (
                        or_zero(
                            f"sum by (instance) (rate(scheduler_dispatch_destination_waits_total"
                            f"[{RATE}]))"
                        ),
                        "{{instance}} waits",
                    )
                ],
                "KAFKA deliveries held back because their topic refused a record transiently:"
                " they wait SCHEDULER_DISPATCH_DESTINATION_QUARANTINE_MS at most (10 s) and"
                " spend no attempt on it.",
            ),
            Panel(
                "Ring records dropped as duplicates",
                "ops",
                [(f"sum(rate(scheduler_dispatch_duplicates_total[{RATE}]))", "duplicates")],
                "Already held or settled (replays after a restart, a bucket released twice).",
            ),
        ],
    ),
    Row(
        "Dispatcher: fire path",
        [
            Panel(
                "Fire delay (due to delivery start)",
                "s",
                quantiles("scheduler_dispatch_fire_delay_seconds"),
            ),
            Panel(
                "Fire-time record read",
                "s",
                quantiles("scheduler_dispatch_record_read_seconds"),
                "Cassandra read of the message records before firing (queueing included).",
            ),
            Panel(
                "Fire-time record checks",
                "ops",
                [
                    (
                        f"sum by (source) (rate(scheduler_dispatch_record_checks_total[{RATE}]))",
                        "{{source}}",
                    )
                ],
                "read: the message record was read before firing; known: the timer queue and"
                " the commands view know all it could show (due since the restart's reload and"
                " within the dedup window, created within the view's span). Reads stay on after"
                " the ring is repartitioned, until a restart.",
            ),
            Panel(
                "Ring lag and held messages per instance",
                "short",
                [
                    ("sum by (instance) (scheduler_dispatch_ring_lag_records)", "{{instance}} lag"),
                    ("sum by (instance) (scheduler_dispatch_held_messages)", "{{instance}} held"),
                ],
            ),
            Panel(
                "Held by an app's delivery policy (paused, rate limited)",
                "short",
                [
                    (
                        "sum by (instance) (scheduler_dispatch_admission_waiting_messages)",
                        "{{instance}} waiting",
                    ),
                ],
                "Due messages waiting for their app's resume or for a token of its rate limit."
                " They are delayed, never dropped; a steady rise means an app's rate is below"
                " what is scheduled for it.",
            ),
            Panel(
                "Oldest wait for an app's delivery policy",
                "s",
                [
                    (
                        "max by (instance) (scheduler_dispatch_admission_oldest_wait_seconds)",
                        "{{instance}} oldest",
                    ),
                ],
                "How long the oldest message held by a pause or rate limit has waited, its parks"
                " back into the ring included; SchedulerDeliveriesHeldLong fires at 3 days.",
            ),
            Panel(
                "Parked back into the ring",
                "ops",
                [
                    (
                        f"sum by (instance) (rate(scheduler_dispatch_parked_total[{RATE}]))",
                        "{{instance}} parked",
                    ),
                ],
                "Waiting messages that reached SCHEDULER_DISPATCH_PARK_AFTER_MS (6 h by default)"
                " and went back into the ring, committing their old ring offsets: a long pause"
                " costs one produce per waiting message per period, and never outlives the ring.",
            ),
        ],
    ),
    Row(
        "Dispatcher: record writer",
        [
            Panel(
                "Results applied to message records",
                "ops",
                [
                    (
                        f"sum by (outcome) (rate(scheduler_record_writer_results_total[{RATE}]))",
                        "{{outcome}}",
                    ),
                ],
                "Follows the deliveries; the records (GET /messages) lag when it does not.",
            ),
            Panel(
                "Message records behind the delivery results",
                "s",
                [("max by (instance) (scheduler_dispatch_records_lag_seconds)", "{{instance}}")],
                "A second or two when current. Late attempts wait for it"
                " (SchedulerMessageRecordsLagging).",
            ),
            Panel(
                "Record writer restarts (last hour)",
                "short",
                [(per_hour("scheduler_record_writer_restarts_total", "instance"), "{{instance}}")],
                "Its lines in the dispatcher's log (dispatcher-record-writer) say why.",
            ),
        ],
    ),
    Row(
        "Dispatcher: failure notices",
        [
            Panel(
                "Failure notices by outcome",
                "ops",
                [
                    (
                        "sum by (destination) "
                        f"(rate(scheduler_failure_notices_sent_total[{RATE}]))",
                        "sent {{destination}}",
                    ),
                    (
                        or_zero(
                            "sum by (destination) "
                            f"(rate(scheduler_failure_notices_retried_total[{RATE}]))"
                        ),
                        "retried {{destination}}",
                    ),
                    (
                        or_zero(
                            "sum by (destination, reason) "
                            f"(rate(scheduler_failure_notices_dropped_total[{RATE}]))"
                        ),
                        "dropped {{destination}} {{reason}}",
                    ),
                ],
                "Each message that ends FAILED is sent to its app's failure destination"
                " (docs/WEBHOOKS.md, Failure notices). Retried: a destination down; dropped:"
                " given up (attempts, age), refused, or an app with too many unfinished.",
            ),
            Panel(
                "Dead letters without a notice, by reason",
                "ops",
                [
                    (
                        or_zero(
                            "sum by (reason) "
                            f"(rate(scheduler_failure_notices_skipped_total[{RATE}]))"
                        ),
                        "{{reason}}",
                    )
                ],
                "no_destination: the app has no failure destination (most); app_gone; secrets:"
                " the app's secrets do not decrypt on this replica (its log names the app).",
            ),
            Panel(
                "Failure notifier lag and unfinished notices",
                "short",
                [
                    (
                        "sum by (instance) (scheduler_failure_notifier_lag_records)",
                        "{{instance}} lag",
                    ),
                    (
                        "sum by (instance) (scheduler_failure_notices_pending)",
                        "{{instance}} unfinished",
                    ),
                ],
                "Dead letters after the committed offset; unfinished notices (in flight or"
                " waiting for a retry) hold it back. 0 when idle.",
            ),
            Panel(
                "Failure notifier restarts (last hour)",
                "short",
                [
                    (
                        per_hour("scheduler_failure_notifier_restarts_total", "instance"),
                        "{{instance}}",
                    )
                ],
                "Its lines in the dispatcher's log (dispatcher-failure-notifier) say why.",
            ),
        ],
    ),
]

BOARDS = {
    "scheduler-overview": ("pit-scheduler-overview", "Point-in-time scheduler", OVERVIEW),
    "scheduler-ingest": ("pit-scheduler-ingest", "Point-in-time scheduler: ingest", INGEST),
    "scheduler-bucketer": ("pit-scheduler-bucketer", "Point-in-time scheduler: bucketer", BUCKETER),
    "scheduler-releaser": ("pit-scheduler-releaser", "Point-in-time scheduler: releaser", RELEASER),
    "scheduler-dispatcher": (
        "pit-scheduler-dispatcher",
        "Point-in-time scheduler: dispatcher",
        DISPATCHER,
    ),
}


DATASOURCE: dict[str, Any] = {
    "name": "datasource",
    "label": "Prometheus",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "hide": 0,
}


def _variable(name: str, label: str, query: str, *, all_values: bool) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "definition": query,
        "query": {"query": query, "refId": name},
        "refresh": 2,  # on time range change: pods come and go
        "sort": 1,
        "multi": all_values,
        "includeAll": all_values,
        **({"allValue": ".*"} if all_values else {}),
        "current": {},
        "hide": 0,
    }


# namespace: one install at a time, never All (two installs would be summed); job and
# instance narrow it down to a component's target or one pod.
VARIABLES = [
    _variable("namespace", "Namespace", f"label_values({UP}, namespace)", all_values=False),
    _variable(
        "job",
        "Job",
        f'label_values(up{{{SERVICES}, namespace=~"$namespace"}}, job)',
        all_values=True,
    ),
    _variable(
        "instance",
        "Instance (pod)",
        f'label_values(up{{{SERVICES}, namespace=~"$namespace", job=~"$job"}}, instance)',
        all_values=True,
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
                "expr": scoped(expr),
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
        "templating": {"list": [DATASOURCE, *VARIABLES]},
        "links": [
            {
                "title": "Point-in-time scheduler",
                "type": "dashboards",
                "tags": ["pit-scheduler"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "annotations": {"list": []},
        "panels": panels,
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (uid, title, rows) in BOARDS.items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(dashboard(uid, title, rows), indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
