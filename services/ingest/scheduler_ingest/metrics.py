"""Every metric of the ingest gateway, declared once. Pass a CollectorRegistry so tests can
build several apps in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

from scheduler.top_apps import AppCounter, TopApps, top_apps

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry, top: TopApps | None = None) -> None:
        # The process's CPU, memory, start time, file descriptors (Linux): process panels.
        ProcessCollector(registry=registry)
        self.registry = registry
        self.requests = Counter(
            "scheduler_ingest_requests_total",
            "HTTP requests, by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "scheduler_ingest_request_seconds",
            "HTTP request latency (until the response starts), by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.produce_seconds = Histogram(
            "scheduler_ingest_kafka_produce_seconds",
            "Time from produce() to Kafka's delivery report (acks=all), by topic kind.",
            ["topic"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.produce_failures = Counter(
            "scheduler_ingest_kafka_produce_failures_total",
            "Records Kafka did not acknowledge (answered 503), by topic kind and cause.",
            ["topic", "cause"],
            registry=registry,
        )
        self.rejects = Counter(
            "scheduler_ingest_rejects_total",
            "Refused requests or batch items, by error token (invalid_sendAt, unauthorized,"
            " pending_limit_exceeded, ...).",
            ["reason"],
            registry=registry,
        )
        self.scheduled = Counter(
            "scheduler_ingest_messages_scheduled_total",
            "Messages acknowledged by Kafka and answered with an id, by source (single, batch).",
            ["source"],
            registry=registry,
        )
        self.app_scheduled = AppCounter(
            "scheduler_ingest_app_messages",
            "Messages acknowledged and answered with an id, per application: the top"
            " SCHEDULER_METRICS_TOP_APPS apps of this replica by recent volume, the rest as"
            ' app="other"',
            [],
            registry,
            top or top_apps(),
        )
        self.record_write_failures = Counter(
            "scheduler_ingest_record_write_failures_total",
            "Record writes that failed after Kafka acknowledged (the bucketer writes it later).",
            registry=registry,
        )
        self.abort_outcomes = Counter(
            "scheduler_ingest_abort_outcomes_total",
            "Aborts past the not_abortable and early too_late checks, by how they were answered:"
            " certain (command acknowledged by due - guard: 200), confirmed_not_delivered (the"
            " dispatcher's result says skipped: 200), too_late_delivered (its result says"
            " attempted: 409), unconfirmed (no result within the wait: 409).",
            ["outcome"],
            registry=registry,
        )
        self.message_operations = Counter(
            "scheduler_ingest_message_operations_total",
            "Reschedules, and the messages of bulk aborts and redrives, by how each ended:"
            " operation reschedule (outcome rescheduled or the error token: too_late,"
            " not_reschedulable, unavailable, ...), bulk_abort (aborted, too_late, not_abortable,"
            " failed) or bulk_redrive (redriven, not_redrivable, failed).",
            ["operation", "outcome"],
            registry=registry,
        )
        for operation, outcome in (
            ("reschedule", "rescheduled"),
            ("bulk_abort", "aborted"),
            ("bulk_redrive", "redriven"),
        ):  # shown at 0 from the start: a panel with no series reads as broken
            self.message_operations.labels(operation, outcome)
        self.key_cache = Counter(
            "scheduler_ingest_key_cache_total",
            "Key lookups by cache result (hit, miss).",
            ["result"],
            registry=registry,
        )
