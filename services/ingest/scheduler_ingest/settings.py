"""Settings of the ingest process (env prefix `SCHEDULER_INGEST_`), built once in main()."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCHEDULER_INGEST_", frozen=True, extra="ignore")

    host: str = "0.0.0.0"  # noqa: S104 - a container listens on every interface
    port: int = Field(default=8080, ge=1, le=65535)
    metrics_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        description="port of /metrics, apart from the API's `port` so that what exposes the API"
        " (a public Service, an Ingress) never exposes the metrics and their app ids (0: none)",
    )
    log_level: str = "INFO"
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="request bodies above this get 413"
    )
    batch_limit: int = Field(default=500, ge=1, description="messages per batch request at most")
    list_limit_max: int = Field(default=500, ge=1, description="largest `limit` of a list")
    rate_per_s: float = Field(
        default=1_000.0, gt=0, description="messages per second per data key (token bucket)"
    )
    rate_burst: float = Field(default=2_000.0, ge=1, description="token bucket size per data key")
    daily_quota: int | None = Field(
        default=None, ge=1, description="messages per app per UTC day, per replica (None: off)"
    )
    max_pending_per_app: int = Field(
        default=1_000_000,
        ge=0,
        description="messages accepted and not yet sent, failed or aborted, per app, beyond"
        " which scheduling answers 429 pending_limit_exceeded (0: no cap)",
    )
    pending_refresh_ms: int = Field(
        default=5_000,
        ge=0,
        description="how long a read of an app's pending count is reused by this replica",
    )
    key_cache_ttl_ms: int = Field(
        default=10_000,
        ge=0,
        description="how long a key lookup is reused: deactivation takes effect within this",
    )
    key_cache_max: int = Field(default=10_000, ge=1, description="cached keys at most (LRU)")
    produce_timeout_ms: int = Field(
        default=10_000, ge=100, description="Kafka delivery timeout; then 503"
    )
    linger_ms: float = Field(default=2.0, ge=0, description="producer batching delay")
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After of a 503")
    abort_outcome_wait_ms: int = Field(
        default=5_000,
        ge=0,
        description="an abort whose command was acknowledged after due - guard waits until"
        " this long after the due time for the dispatcher's result of the attempt; none by"
        " then: 409 too_late (could not be confirmed)",
    )
    kafka_endpoint_prefixes: list[str] = Field(
        default_factory=list,
        description="topic prefixes KAFKA apps may deliver to (empty: KAFKA apps refused)",
    )
    allow_missing_kafka_topics: bool = Field(
        default=False,
        description="save a KAFKA app whose topic does not exist (or could not be checked),"
        " with a warning in the answer, instead of 400 unknown_topic (503 when Kafka does not"
        " answer the check)",
    )
    signing_secret_grace_ms: int = Field(
        default=86_400_000, ge=0, description="old signing secret validity after a rotation"
    )
    usage_flush_ms: int = Field(
        default=1_000, ge=0, description="usage counters are written this often (0: per request)"
    )
    usage_default_days: int = Field(default=30, ge=1, le=366)
    console_enabled: bool = Field(default=True, description="serve the web console at /console")
    console_cookie_secure: bool = Field(
        default=True, description="Secure session cookie (turn off only for http://localhost)"
    )
    console_session_ttl_ms: int = Field(
        default=3_600_000, ge=60_000, description="console sessions expire after this idle time"
    )
    console_session_max_age_ms: int = Field(
        default=43_200_000,
        ge=60_000,
        description="console sessions end this long after sign-in, however much they are used",
    )

    @model_validator(mode="after")
    def _metrics_apart_from_the_api(self) -> IngestSettings:
        if self.metrics_port and self.metrics_port == self.port:
            raise ValueError(f"metrics_port ({self.metrics_port}) must differ from port")
        return self
