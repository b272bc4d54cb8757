"""Settings of the releaser and the dispatcher (built once, in their entry points)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.domain.backoff import Backoff


class DispatchSettings(BaseSettings):
    """``SCHEDULER_DISPATCH_*``: delivery, retries and the dispatcher's Kafka pipeline."""

    model_config = SettingsConfigDict(env_prefix="SCHEDULER_DISPATCH_", frozen=True, extra="ignore")

    instance: int = Field(default=0, ge=0, description="this replica's index in [0, instances)")
    instances: int = Field(default=1, ge=1, description="replicas sharing the ring partitions")
    max_instances: int = Field(
        default=6,
        ge=1,
        description="the largest instance count this deployment may ever use: a starting"
        " instance fences the owners of its partitions under every count up to it",
    )
    metadata_refresh_ms: int = Field(
        default=5_000,
        ge=100,
        description="ring partitions added while running are found this often",
    )
    commands_confirm_ms: int = Field(
        default=100,
        ge=10,
        description="how often the commands view confirms it is at the end of every partition"
        " (must stay well below the cancel guard)",
    )
    offsets_refresh_ms: int = Field(
        default=60_000,
        ge=1_000,
        description="every ring partition's offset (idle ones too) is committed again this often:"
        " it keeps offsets from expiring and bounds the results a restart reloads",
    )
    txn_interval_ms: int = Field(default=5, ge=1, description="transaction commit interval")
    txn_results_interval_ms: int = Field(
        default=50,
        ge=1,
        description="a transaction without a Kafka delivery (results of REST deliveries, skips,"
        " retries) is committed this long after the last one at most, with whatever joined it;"
        " one with a Kafka delivery still commits within txn_interval_ms",
    )
    txn_offsets_interval_ms: int = Field(
        default=100, ge=0, description="ring offsets ride along in a transaction this often"
    )
    txn_recover_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="a transaction not at its commit after this long is redone on a new producer",
    )
    txn_stuck_ms: int = Field(
        default=60_000, ge=1_000, description="a transaction in flight this long fails /healthz"
    )
    destination_timeout_ms: int = Field(
        default=5_000,
        ge=100,
        description="a KAFKA destination record unacknowledged this long is refused (retried"
        " later): a slow tenant topic holds the others' commits back this long at most",
    )
    destination_quarantine_ms: int = Field(
        default=10_000,
        ge=0,
        description="after a transient refusal, deliveries to that topic wait this long before"
        " it is produced to again (it would stall every transaction again); the wait spends no"
        " attempt",
    )
    shutdown_timeout_ms: int = Field(
        default=15_000,
        ge=1_000,
        description="SIGTERM: the stop (in-flight deliveries, last commit) is given up after"
        " this long; what is not committed is read again after the restart",
    )
    txn_max_emits: int = Field(default=2_000, ge=1, description="settled attempts per transaction")
    http_timeout_s: float = Field(default=2.0, gt=0)
    http_max_connections: int = Field(default=256, ge=1)
    per_app_concurrency: int = Field(default=32, ge=1)
    allow_private_destinations: bool = Field(
        default=False, description="allow loopback/private/link-local REST endpoints (tests, demo)"
    )
    kafka_destination_prefixes: list[str] = Field(
        default_factory=list, description="allowed KAFKA app topic prefixes (empty: any)"
    )
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_ms: int = Field(default=1_000, ge=0)
    backoff_max_delay_ms: int = Field(default=300_000, ge=0)
    body_excerpt_chars: int = Field(default=512, ge=0)
    results_slack_ms: int = Field(
        default=10_000, ge=0, description="extra history of results loaded at startup"
    )
    prefetch_ms: int = Field(
        default=50, ge=0, description="read record + app this early; must stay below the guard"
    )
    kafka_produce_ahead_ms: int = Field(
        default=5,
        ge=0,
        description="KAFKA deliveries are produced this early into a transaction that commits"
        " only once all its records are due (read_committed consumers never see one early)",
    )
    store_threads: int = Field(default=32, ge=1, description="threads for record reads")
    dedup_window_ms: int = Field(
        default=300_000, ge=0, description="remember settled attempts this long (then: record)"
    )
    max_held: int = Field(default=500_000, ge=1, description="pause the ring above this")
    park_after_ms: int = Field(
        default=21_600_000,
        ge=1_000,
        description=(
            "a message held by its app's pause or rate limit this long goes back into the ring"
            " (a copy in the current slot, committed with its offset) and waits again: bounds"
            " what a restart reads again, and keeps a long pause within the ring's retention"
        ),
    )
    metrics_port: int = Field(
        default=9104, ge=0, description="port of /metrics, /healthz, /readyz (0: none)"
    )
    log_level: str = Field(default="INFO", description="the dispatcher's and its record writer's")

    @model_validator(mode="after")
    def _instance_in_range(self) -> DispatchSettings:
        if self.instance >= self.instances:
            raise ValueError(f"instance {self.instance} is not below instances ({self.instances})")
        if self.instances > self.max_instances:
            raise ValueError(
                f"instances ({self.instances}) exceeds max_instances ({self.max_instances})"
            )
        return self

    def backoff(self) -> Backoff:
        return Backoff(
            max_attempts=self.max_attempts,
            base_ms=self.backoff_base_ms,
            max_delay_ms=self.backoff_max_delay_ms,
        )


class ReleaseSettings(BaseSettings):
    """``SCHEDULER_RELEASE_*``: the release tick."""

    model_config = SettingsConfigDict(env_prefix="SCHEDULER_RELEASE_", frozen=True, extra="ignore")

    tick_ms: int = Field(default=1_000, ge=10)
    writers: int = Field(
        default=16,
        ge=1,
        description="threads reading a bucket's partitions ahead, dropping released partitions"
        " and writing aborts",
    )
    tick_budget_ms: int = Field(
        default=5_000,
        ge=100,
        description="a catch-up tick stops after this long (between partitions) so the loop"
        " reports health and serves the lease group; the next tick goes on",
    )
    session_timeout_ms: int = Field(
        default=10_000, ge=6_000, description="leader failover bound (broker minimum: 6 s)"
    )
    initial_backfill_ms: int = Field(
        default=86_400_000,
        ge=0,
        description="a keyspace upgraded without its bucket index, whose releaser never ran:"
        " walk from this far back",
    )
    bucketer_group_id: str = Field(
        default="scheduler-bucketer",
        description="the bucketer's consumer group (as SCHEDULER_BUCKETER_GROUP_ID): checked for"
        " writers of the previous version before an upgraded keyspace's bucket index is completed",
    )
    index_check_interval_ms: int = Field(
        default=120_000,
        ge=1_000,
        description="while the bucket index is incomplete (an upgrade): how often the leader"
        " checks whether the backfill can run",
    )
    transaction_timeout_ms: int = Field(
        default=60_000,
        ge=1_000,
        description="ring transaction timeout: the broker aborts a frozen leader's open"
        " transaction after it",
    )
    schedule_tick_ms: int = Field(
        default=1_000,
        ge=10,
        description="how often the leader's occurrence runner looks at the recurring"
        " schedules due (docs/SCHEDULES.md)",
    )
    schedule_lookahead_ms: int = Field(
        default=60_000,
        ge=0,
        description="occurrences are created this far ahead of their instant; a pause or delete"
        " aborts the ones already created",
    )
    schedule_rescan_ms: int = Field(
        default=300_000,
        ge=1_000,
        description="how often the occurrence runner starts a pass over every schedule (200 per"
        " tick); otherwise it reads only the schedules due and those changed lately"
        " (docs/SCHEDULES.md)",
    )
    schedule_limit: int = Field(
        default=100,
        ge=1,
        description="upcoming occurrences one schedule creates per tick at most (the next tick"
        " goes on)",
    )
    metrics_port: int = Field(
        default=9103, ge=0, description="port of /metrics, /healthz, /readyz (0: none)"
    )
    log_level: str = "INFO"


class FailureNoticeSettings(BaseSettings):
    """``SCHEDULER_DISPATCH_FAILURE_*``: the failure notifier, which sends each message that
    ends FAILED to its application's failure destination (docs/WEBHOOKS.md, "Failure notices").
    Which addresses and topics it may send to follows the dispatcher's own settings
    (`SCHEDULER_DISPATCH_ALLOW_PRIVATE_DESTINATIONS`, `_KAFKA_DESTINATION_PREFIXES`)."""

    model_config = SettingsConfigDict(
        env_prefix="SCHEDULER_DISPATCH_FAILURE_", frozen=True, extra="ignore"
    )

    notices: bool = Field(
        default=True,
        description="run the failure notifier (a child process of each dispatcher); false: no"
        " notice is sent, the dead letters stay on their topic",
    )
    max_attempts: int = Field(
        default=10, ge=1, description="attempts of one notice before it is dropped (counted)"
    )
    backoff_base_ms: int = Field(
        default=1_000, ge=0, description="delay before a notice's second attempt (then doubled)"
    )
    backoff_max_delay_ms: int = Field(
        default=300_000, ge=0, description="longest delay between two attempts of a notice"
    )
    max_age_ms: int = Field(
        default=86_400_000,
        ge=1_000,
        description="a notice is dropped, sent or not, once this long has passed since its"
        " message failed: a notifier far behind (an outage, a group reading the topic from its"
        " start) sends no day-old notices, and no retry goes on past it",
    )
    timeout_ms: int = Field(
        default=5_000,
        ge=100,
        description="a notice not accepted within this long (HTTP answer, Kafka"
        " acknowledgement) is retried",
    )
    per_app_concurrency: int = Field(
        default=4, ge=1, description="notices of one application in flight at once"
    )
    concurrency: int = Field(
        default=64, ge=1, description="notices in flight at once (also the HTTP pool size)"
    )
    per_app_max_pending: int = Field(
        default=1_000,
        ge=1,
        description="unfinished notices (in flight, waiting for a retry or to start) of one"
        " application whose destination fails: its further notices are dropped (counted,"
        " reason overflow) while it has this many",
    )
    max_pending: int = Field(
        default=10_000,
        ge=1,
        description="unfinished notices in memory; reading the dead letters pauses above it",
    )
    commit_interval_ms: int = Field(
        default=1_000,
        ge=10,
        description="how often the offsets of finished notices are committed; a restart sends"
        " again what was finished since the last commit",
    )
    shutdown_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="SIGTERM: notices in flight are given this long, then the finished ones'"
        " offsets are committed; the rest is read again after the restart",
    )
