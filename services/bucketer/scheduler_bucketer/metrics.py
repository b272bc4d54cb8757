"""Every metric of the bucketer, declared once. Pass a CollectorRegistry so tests can build many."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class BucketerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # The process's CPU, memory, start time, file descriptors (Linux): process panels.
        ProcessCollector(registry=registry)
        self.consumed = Counter(
            "scheduler_bucketer_consumed_total",
            "Records consumed, by topic kind (requests, commands).",
            ["kind"],
            registry=registry,
        )
        self.stored = Counter(
            "scheduler_bucketer_stored_total",
            "Messages written to the bucket table (status READY).",
            registry=registry,
        )
        self.pending_count_failures = Counter(
            "scheduler_bucketer_pending_count_failures_total",
            "Batches whose stored messages could not be added to the approximate pending counts"
            " (the gauge under-counts them; the messages themselves are stored)",
            registry=registry,
        )
        self.routed_direct = Counter(
            "scheduler_bucketer_routed_direct_total",
            "Messages produced straight to their due-minute topic (status QUEUED), by cause:"
            " near (due within the look-ahead), released (bucket below the release claim plus"
            " margin), released_meanwhile (bucket claimed by the releaser while the message was"
            " being stored).",
            ["cause"],
            registry=registry,
        )
        self.rejected = Counter(
            "scheduler_bucketer_rejected_total",
            "Records sent to the rejected topic, by machine-readable reason.",
            ["reason"],
            registry=registry,
        )
        self.key_duplicates = Counter(
            "scheduler_bucketer_key_duplicates_total",
            "Requests that repeat the request holding their idempotency key (same body, another"
            " created_ms), by outcome: skipped (the message is recorded), processed (not yet"
            " recorded: written with the holder's created_ms).",
            ["outcome"],
            registry=registry,
        )
        self.commands = Counter(
            "scheduler_bucketer_commands_total",
            "Commands, by kind and outcome"
            " (applied, reapplied, stale, unknown, not_aborted, invalid).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.schedule_definitions = Counter(
            "scheduler_bucketer_schedule_definitions_total",
            "Recurring schedule changes (ScheduleDefinition records), by operation (PUT, PAUSE,"
            " RESUME, DELETE; unknown when undecodable) and outcome (created, updated, applied,"
            " repeated, superseded, rejected).",
            ["operation", "outcome"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "scheduler_bucketer_batch_seconds",
            "Time from a batch consumed to its offsets committed.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.batch_size = Histogram(
            "scheduler_bucketer_batch_records",
            "Records per batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.retries = Counter(
            "scheduler_bucketer_batch_retries_total",
            "Batches rolled back and retried after a transient failure, by stage.",
            ["stage"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "scheduler_bucketer_consumer_lag",
            "Records not yet consumed, per assigned topic partition (high watermark - position).",
            ["topic", "partition"],
            registry=registry,
        )
