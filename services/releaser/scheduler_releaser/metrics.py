"""Every Prometheus metric of the releaser and the dispatcher, declared once.

Each process builds one of these objects on its own CollectorRegistry (tests build several).
Each also exports the process's own figures (process_cpu_seconds_total,
process_resident_memory_bytes, process_start_time_seconds, ...; prometheus_client's
ProcessCollector, Linux only) for the dashboards' process panels.

The metrics written for every message on the dispatcher's event loop are LoopCounter and
LoopHistogram (scheduler.loop_metrics): no lock per write, as only the loop writes them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from scheduler.loop_metrics import LoopCounter, LoopHistogram
from scheduler.top_apps import AppCounter, TopApps, top_apps

# Lateness and dispatch delay (docs/ARCHITECTURE.md, "Lateness"), in seconds: fine buckets where
# the targets are. The other timings of the dispatcher use them too.
LATENESS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class DispatchMetrics:
    def __init__(self, registry: CollectorRegistry, top: TopApps | None = None) -> None:
        ProcessCollector(registry=registry)
        self.lateness = LoopHistogram(
            "scheduler_dispatch_lateness_seconds",
            "Lateness, the client-facing figure (latenessMs): the attempt's due instant (sendAt"
            " for a first attempt, however far past) to delivery (REST: response; KAFKA:"
            " transaction committed). Not for SLOs: see scheduler_dispatch_delay_seconds",
            ["destination"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.delay = LoopHistogram(
            "scheduler_dispatch_delay_seconds",
            "Dispatch delay, the SLO figure: max(the attempt's due instant, the message's"
            " acceptance) to delivery (REST: response; KAFKA: transaction committed); a sendAt"
            " already past at acceptance and a retry's backoff are not in it",
            ["destination"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.fire_delay = LoopHistogram(
            "scheduler_dispatch_fire_delay_seconds",
            "Due instant to the start of the delivery (after the fire-time checks)",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.record_read = LoopHistogram(
            "scheduler_dispatch_record_read_seconds",
            "Fire-time read of the message record (queueing included)",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.record_checks = LoopCounter(
            "scheduler_dispatch_record_checks_total",
            "Attempts at fire time by how a settled copy is ruled out: read (the message record"
            " is read) or known (the timer queue knows every settlement that could concern it)",
            ["source"],
            registry=registry,
        )
        self.attempts = LoopCounter(
            "scheduler_dispatch_attempts_total",
            "Delivery attempts by destination type, outcome and reason",
            ["destination", "outcome", "reason"],
            registry=registry,
        )
        self.app_attempts = AppCounter(
            "scheduler_dispatch_app_attempts",
            "Delivery attempts per application and outcome (sent, retry, failed): the top"
            " SCHEDULER_METRICS_TOP_APPS apps of this instance by recent volume, the rest as"
            ' app="other"',
            ["outcome"],
            registry,
            top or top_apps(),
        )
        self.skipped = Counter(
            "scheduler_dispatch_skipped_total",
            "Held messages not delivered at fire time, by reason (aborted, stale, ...)",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "scheduler_dispatch_duplicates_total",
            "Ring records dropped as already held or settled (message, generation, attempt)",
            registry=registry,
        )
        self.in_flight = Gauge(
            "scheduler_dispatch_in_flight",
            "Firing tasks started and not yet done (a KAFKA app's run of due messages is one;"
            " each REST delivery is one)",
            registry=registry,
        )
        self.held = Gauge(
            "scheduler_dispatch_held_messages",
            "Messages held in memory waiting for their due instant",
            registry=registry,
        )
        self.admission_waiting = Gauge(
            "scheduler_dispatch_admission_waiting_messages",
            "Due messages waiting for their app's resume or rate limit (a delivery policy)",
            registry=registry,
        )
        self.admission_oldest_wait = Gauge(
            "scheduler_dispatch_admission_oldest_wait_seconds",
            "How long the oldest message waiting for its app's resume or rate limit has waited"
            " (0: none waits), its parks back into the ring included",
            registry=registry,
        )
        self.parked = Counter(
            "scheduler_dispatch_parked_total",
            "Messages that waited for their app (or a quarantined destination topic) past"
            " SCHEDULER_DISPATCH_PARK_AFTER_MS and went back into the ring, committing their"
            " ring offset",
            registry=registry,
        )
        self.destination_waits = Counter(
            "scheduler_dispatch_destination_waits_total",
            "KAFKA deliveries that waited for their topic's quarantine to end (the topic refused"
            " a record transiently; SCHEDULER_DISPATCH_DESTINATION_QUARANTINE_MS)",
            registry=registry,
        )
        self.ring_lag = Gauge(
            "scheduler_dispatch_ring_lag_records",
            "Ring records received but not yet settled (uncommitted)",
            registry=registry,
        )
        self.commands_lag = Gauge(
            "scheduler_dispatch_commands_lag_seconds",
            "Age of the stalest commands partition, last confirmed at its end (firing stops"
            " above the guard)",
            registry=registry,
        )
        self.ring_partitions = Gauge(
            "scheduler_dispatch_ring_partitions",
            "Ring partitions this instance owns, by state (paused, draining, active)",
            ["state"],
            registry=registry,
        )
        self.fenced = Gauge(
            "scheduler_dispatch_fenced",
            "1 once another dispatcher took this instance's partitions (it stands down)",
            registry=registry,
        )
        self.transactions = Counter(
            "scheduler_dispatch_transactions_total",
            "Kafka transactions by result (committed, aborted, abandoned: stuck and redone)",
            ["result"],
            registry=registry,
        )
        for result in ("committed", "aborted", "abandoned"):
            # Exported at 0 from the start: "none committed" is a flat line, not "no data".
            self.transactions.labels(result)
        self.settled = Counter(
            "scheduler_dispatch_settled_total",
            "Ring records settled: their attempt's result (sent, retry, failed, skipped), or"
            " their drop as a duplicate or undecodable record, committed with their offset in a"
            " Kafka transaction. Flat while messages are due: nothing is being settled",
            registry=registry,
        )
        self.records_lag = Gauge(
            "scheduler_dispatch_records_lag_seconds",
            "How far behind the message records are: the age of the newest instant before which"
            " every delivery result has been written (late attempts wait for it)",
            registry=registry,
        )
        self.refusals = Counter(
            "scheduler_dispatch_destination_refusals_total",
            "KAFKA destination records refused by their topic and settled without them, by the"
            " broker's error and whether it is permanent (FAILED) or transient (retried)",
            ["error", "kind"],
            registry=registry,
        )
        self.transaction_seconds = Histogram(
            "scheduler_dispatch_transaction_seconds",
            "Time to produce and commit one transaction",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.rejected = Counter(
            "scheduler_dispatch_rejected_records_total",
            "Undecodable ring records sent to scheduler.rejected",
            registry=registry,
        )
        self.records_written = Counter(
            "scheduler_record_writer_results_total",
            "Delivery results applied to message records, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.record_writer_restarts = Counter(
            "scheduler_record_writer_restarts_total",
            "Times the record writer process exited unexpectedly and was started again",
            registry=registry,
        )


class ReleaseMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        ProcessCollector(registry=registry)
        self.release_duration = Histogram(
            "scheduler_release_bucket_seconds",
            "Time to release one bucket (read, produce, drop)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=registry,
        )
        self.released = Counter(
            "scheduler_release_messages_total",
            "Messages streamed from Cassandra buckets into the ring",
            registry=registry,
        )
        self.aborted = Counter(
            "scheduler_release_app_deleted_total",
            "Stored messages of deleted apps, aborted at release instead",
            registry=registry,
        )
        self.watermark = Gauge(
            "scheduler_release_watermark_ms",
            "Released-up-to watermark (epoch ms)",
            registry=registry,
        )
        self.behind = Gauge(
            "scheduler_release_behind_seconds",
            "How far the watermark is behind now + look-ahead (0 when current)",
            registry=registry,
        )
        self.leader = Gauge(
            "scheduler_release_leader",
            "1 while this replica holds the release lease",
            registry=registry,
        )
        self.fenced = Counter(
            "scheduler_release_fenced_total",
            "Times a newer leader fenced this replica's ring transaction (it then stands by)",
            registry=registry,
        )
        self.pending = Gauge(
            "scheduler_release_pending_messages",
            "Messages stored in Cassandra and not yet released, by how far ahead their bucket"
            " starts (<1m, <1h, <1d, <7d, >=7d); approximate (counters), leader only",
            ["horizon"],
            registry=registry,
        )


class OccurrenceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.created = Counter(
            "scheduler_schedule_occurrences_created_total",
            "Occurrences of recurring schedules published as messages (a repeated tick counts"
            " again)",
            registry=registry,
        )
        self.skipped = Counter(
            "scheduler_schedule_ticks_skipped_total",
            "Schedule ticks that dropped missed occurrences by their catch-up policy",
            registry=registry,
        )
        self.invalid = Counter(
            "scheduler_schedule_occurrences_invalid_total",
            "Occurrences not created because the request would be refused (e.g. a payload over"
            " a lowered size limit)",
            registry=registry,
        )
        self.aborted = Counter(
            "scheduler_schedule_occurrences_aborted_total",
            "Occurrences created ahead and aborted because their schedule was paused or deleted"
            " during the tick",
            registry=registry,
        )
        self.failures = Counter(
            "scheduler_schedule_tick_failures_total",
            "Runner ticks that failed (Kafka or Cassandra); the next tick repeats the work",
            registry=registry,
        )
        self.duration = Histogram(
            "scheduler_schedule_tick_seconds",
            "Time of one runner tick over every live schedule",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )


class FailureNoticeMetrics:
    """The failure notifier's (scheduler_releaser.failures): a child process of the dispatcher
    that reports its counts to the dispatcher, which exports them with its own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "scheduler_failure_notices_sent_total",
            "Failure notices accepted by their destination (HTTP 2xx, Kafka acknowledgement), by"
            " destination type",
            ["destination"],
            registry=registry,
        )
        self.retried = Counter(
            "scheduler_failure_notices_retried_total",
            "Failure notice attempts that failed and will be tried again, by destination type"
            " and reason (5xx, timeout, connection, ...)",
            ["destination", "reason"],
            registry=registry,
        )
        self.dropped = Counter(
            "scheduler_failure_notices_dropped_total",
            "Failure notices given up, by destination type and reason (attempts, age: the"
            " bounds; refused and 4xx-like answers: not retried; overflow: the app had too many"
            " unfinished)",
            ["destination", "reason"],
            registry=registry,
        )
        self.skipped = Counter(
            "scheduler_failure_notices_skipped_total",
            "Dead letters with no notice to send, by reason (no_destination, app_gone, secrets:"
            " the app's secrets do not decrypt, undecodable)",
            ["reason"],
            registry=registry,
        )
        self.pending = Gauge(
            "scheduler_failure_notices_pending",
            "Failure notices in memory, in flight or waiting for a retry (they hold the"
            " dead-letter offsets back)",
            registry=registry,
        )
        self.lag = Gauge(
            "scheduler_failure_notifier_lag_records",
            "Dead letters after the notifier's committed offsets, on the partitions this"
            " instance holds (0 when every notice is finished)",
            registry=registry,
        )
        self.restarts = Counter(
            "scheduler_failure_notifier_restarts_total",
            "Times the failure notifier process exited unexpectedly and was started again",
            registry=registry,
        )
        for destination in ("REST", "KAFKA"):
            # Exported at 0 from the start: "none sent" is a flat line, not "no data".
            self.sent.labels(destination)
