"""Settings shared by every service, read from the environment (prefix `SCHEDULER_`).

Each service builds its settings once, in its entry point, and passes them down; nothing reads
the environment elsewhere. Defaults are production defaults (replication 3, LOCAL_QUORUM); the
local stack overrides them through the environment (see README, "Settings").
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.domain.ring import Ring

DAY_MS = 86_400_000


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCHEDULER_KAFKA_", frozen=True, extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = Field(
        default=None, description="PEM CA bundle the brokers' certificates are verified against"
    )
    ssl_certificate_location: str | None = Field(
        default=None, description="PEM client certificate (mTLS); needs ssl_key_location"
    )
    ssl_key_location: str | None = Field(default=None, description="PEM key of the client cert")
    ssl_key_password: SecretStr | None = Field(
        default=None, description="password of an encrypted ssl_key_location"
    )
    ssl_check_hostname: bool = Field(
        default=True,
        description="verify that a broker's certificate names the host connected to; false only"
        " for certificates without the brokers' names (the chain is verified either way)",
    )
    schema_registry_url: str | None = Field(
        default=None, description="Confluent wire format when set; single-object Avro otherwise"
    )
    topic_prefix: str = "scheduler."
    replication_factor: int = Field(default=3, ge=1)
    min_insync_replicas: int = Field(default=2, ge=1)
    requests_partitions: int = Field(default=12, ge=1)
    commands_partitions: int = Field(default=6, ge=1)
    due_partitions: int = Field(default=6, ge=1)
    results_partitions: int = Field(default=6, ge=1)
    requests_retention_ms: int = Field(default=7 * DAY_MS, ge=3_600_000)
    due_retention_ms: int = Field(default=7 * DAY_MS, ge=3_600_000)
    operator_retention_ms: int = Field(default=30 * DAY_MS, ge=3_600_000)
    results_retention_ms: int = Field(
        default=7 * DAY_MS,
        ge=3_600_000,
        description="delivery results are kept this long (then deleted, besides compaction):"
        " beyond the longest tolerated dispatcher outage plus a restart's reload window",
    )

    @model_validator(mode="after")
    def _client_certificate_needs_tls(self) -> KafkaSettings:
        require_certificate_with_key(self.ssl_certificate_location, self.ssl_key_location)
        if self.ssl_certificate_location and not self.uses_tls:  # else ignored, silently
            raise ValueError(
                f"a client certificate is set but security_protocol is {self.security_protocol}"
                " (SSL or SASL_SSL use it)"
            )
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol.upper() in ("SSL", "SASL_SSL")

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings common to every client of the system (every producer, consumer
        and admin client starts from these: tests/unit/test_client_construction.py)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        if self.uses_tls:
            config.update(self._tls_config())
        return config

    def _tls_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            # librdkafka >= 2.0 verifies the name by default; said explicitly so that the
            # opt-out is the only way to turn it off.
            "ssl.endpoint.identification.algorithm": "https" if self.ssl_check_hostname else "none",
        }
        if self.ssl_certificate_location:
            config["ssl.certificate.location"] = self.ssl_certificate_location
        if self.ssl_key_location:
            config["ssl.key.location"] = self.ssl_key_location
        if self.ssl_key_password:
            config["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return config


class CassandraSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCHEDULER_CASSANDRA_", frozen=True, extra="ignore"
    )

    contact_points: list[str] = ["127.0.0.1"]
    port: int = 9042
    local_dc: str = "datacenter1"
    keyspace: str = Field(default="scheduler", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    replication_factor: int = Field(default=3, ge=1)
    consistency: str = Field(default="LOCAL_QUORUM", pattern=r"^[A-Z_]+$")
    username: str | None = None
    password: SecretStr | None = None
    request_timeout_s: float = Field(default=10.0, gt=0)
    reconnect_max_s: float = Field(
        default=2.0, gt=0, description="cap of the driver's exponential reconnection backoff"
    )
    address_map: dict[str, str] = Field(
        default={},
        description="a node's address (as the cluster announces it) -> the host:port to connect"
        " to instead: nodes behind NAT or a proxy per node; contact points are mapped too",
    )
    ssl_enabled: bool = Field(default=False, description="TLS to the CQL port (scheduler.tls)")
    ssl_ca_location: str | None = Field(
        default=None, description="PEM CA bundle the nodes are verified against; unset: system CAs"
    )
    ssl_certificate_location: str | None = Field(
        default=None, description="PEM client certificate, for nodes that require one"
    )
    ssl_key_location: str | None = Field(default=None, description="PEM key of the client cert")
    ssl_key_password: SecretStr | None = Field(
        default=None, description="password of an encrypted ssl_key_location"
    )
    ssl_check_hostname: bool = Field(
        default=True,
        description="verify that a node's certificate names the address connected to (the driver"
        " connects to each node's rpc_address); false: the chain is still verified",
    )

    @field_validator("address_map")
    @classmethod
    def _host_and_port(cls, mapping: dict[str, str]) -> dict[str, str]:
        for node, target in mapping.items():
            host, _, port = target.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"address_map[{node!r}] = {target!r}: expected host:port")
        return mapping

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> CassandraSettings:
        require_certificate_with_key(self.ssl_certificate_location, self.ssl_key_location)
        given = self.ssl_ca_location or self.ssl_certificate_location
        if given and not self.ssl_enabled:  # else the files would be ignored, silently
            raise ValueError("Cassandra TLS files are set but ssl_enabled is false")
        return self


def require_certificate_with_key(certificate: str | None, key: str | None) -> None:
    # One without the other would connect without the client identity and fail only at the
    # server's refusal; say so at start instead.
    if bool(certificate) != bool(key):
        raise ValueError("ssl_certificate_location and ssl_key_location go together: set both")


class SchedulingSettings(BaseSettings):
    """Horizons, buckets and the ring. Tests shrink these to seconds."""

    model_config = SettingsConfigDict(env_prefix="SCHEDULER_", frozen=True, extra="ignore")

    bucket_width_ms: int = Field(default=60_000, ge=100)
    lookahead_ms: int = Field(default=300_000, ge=0, description="how far ahead buckets release")
    placement_margin_ms: int = Field(default=60_000, ge=0)
    ring_size: int = Field(default=60, ge=3)
    ring_slot_ms: int = Field(default=60_000, ge=100)
    cancel_guard_ms: int = Field(default=500, ge=0)
    past_window_ms: int = Field(default=DAY_MS, ge=0)
    max_future_ms: int = Field(default=100 * 366 * DAY_MS, ge=DAY_MS)
    max_payload_bytes: int = Field(default=256 * 1024, ge=1)
    shards_per_bucket: int = Field(default=8, ge=1, le=1024)

    @model_validator(mode="after")
    def _ring_holds_the_lookahead(self) -> SchedulingSettings:
        # A released message must land in a slot that is not still being dispatched for its
        # previous cycle: look-ahead plus margin plus one bucket must fit in the ring minus the
        # current and next slots.
        span = self.lookahead_ms + self.placement_margin_ms + self.bucket_width_ms
        if span > (self.ring_size - 2) * self.ring_slot_ms:
            raise ValueError(
                f"lookahead ({self.lookahead_ms} ms) + margin + one bucket exceeds what the ring of"
                f" {self.ring_size} x {self.ring_slot_ms} ms topics can hold"
            )
        return self

    def ring(self, kafka: KafkaSettings) -> Ring:
        return Ring(
            prefix=f"{kafka.topic_prefix}due.", size=self.ring_size, slot_ms=self.ring_slot_ms
        )
