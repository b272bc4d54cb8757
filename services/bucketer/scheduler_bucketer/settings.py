"""Settings of the bucketer process (env prefix `SCHEDULER_BUCKETER_`), built once in main()."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BucketerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCHEDULER_BUCKETER_", frozen=True, extra="ignore")

    group_id: str = "scheduler-bucketer"
    batch_size: int = Field(default=2_000, ge=1, description="records consumed per batch at most")
    poll_timeout_s: float = Field(default=0.5, gt=0, description="wait for a batch to fill")
    write_concurrency: int = Field(default=32, ge=1, description="Cassandra requests in flight")
    write_batch_statements: int = Field(
        default=50, ge=1, description="statements per unlogged batch (1: no batching)"
    )
    write_batch_bytes: int = Field(
        default=40_000,
        ge=1_000,
        description="bytes per batch at most; keep below Cassandra's batch_size_fail_threshold",
    )
    watermark_cache_ms: int = Field(
        default=1_000,
        ge=0,
        description="how long a read release claim is reused for routing (the re-check after"
        " a store always reads it afresh)",
    )
    app_cache_ms: int = Field(default=5_000, ge=0, description="how long an app lookup is reused")
    max_pending_per_app: int = Field(
        default=1_000_000,
        ge=0,
        description="cap on an app's pending messages for Kafka-native requests (over it:"
        " rejected, reason pending_limit_exceeded); keep equal to ingest's (0: no cap)",
    )
    pending_refresh_ms: int = Field(
        default=5_000, ge=0, description="how long a read of an app's pending count is reused"
    )
    retry_initial_ms: int = Field(default=200, ge=1, description="first backoff after a failure")
    retry_max_ms: int = Field(default=10_000, ge=1, description="longest backoff between retries")
    flush_timeout_s: float = Field(default=30.0, gt=0, description="wait for Kafka acks")
    session_timeout_ms: int = Field(
        default=10_000,
        ge=6_000,
        description="a crashed bucketer's partitions move to another member after this"
        " (librdkafka's default, 45 s, kept them unread that long after a kill -9)",
    )
    metrics_port: int = Field(
        default=9102, ge=0, le=65535, description="port of /metrics, /healthz, /readyz (0: none)"
    )
    log_level: str = "INFO"
