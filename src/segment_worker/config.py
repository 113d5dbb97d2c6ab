"""Configuration from ``SEGMENT_WORKER_*`` environment variables (CONTRACT §1)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
# How workers write ``customers.versions`` (``stores.pg_customers.read_versions`` reads both).
VersionsFormat = Literal["map", "grouped"]


class Settings(BaseSettings):
    """Every setting of the contract, with its default."""

    model_config = SettingsConfigDict(env_prefix="SEGMENT_WORKER_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Kafka security (CONTRACT §1), for every Kafka client of the project (kafka.client_security).
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_sasl_mechanism: KafkaSaslMechanism = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None  # SecretStr: shown as ****** in reprs and logs
    database_url: str | None = None
    redis_url: str | None = None
    topic_events: str = "customer-events"
    topic_membership: str = "segment-membership-events"
    topic_dlq: str = "customer-events.dlq"
    consumer_group: str = "segment-worker"
    tick_seconds: float = Field(default=5.0, gt=0)
    api_tokens: str | None = None
    input_partitions: int = Field(default=12, ge=1)
    audience_ttl_seconds: int = Field(default=86400, ge=1)
    # The Redis URL names a node of a Redis Cluster: "auto" asks it (stores.redis_client).
    redis_cluster: Literal["auto", "true", "false"] = "auto"
    # Not in the contract: a worker's memory knob (record_cache.RecordCache's byte budget).
    record_cache_mb: int = Field(default=256, ge=1)
    # Not in the contract: consumers per ``segment-worker run`` process (``lanes``).
    lanes: int = Field(default=2, ge=1, le=32)
    # Not in the contract: the format workers write ``customers.versions`` in. Workers read both
    # since migration 014; "grouped" is a third of the bytes and ~15% less PostgreSQL CPU per
    # churn event (docs/PERFORMANCE.md), but a worker from before migration 014 cannot read it:
    # switch only once none runs, nor will (rollback) — the two-step upgrade of Kafka's
    # log.message.format.version (docs/OPERATIONS.md). A next release makes it the default.
    versions_format: VersionsFormat = "map"

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        """Refuse combinations that would not do what they say (raised as ``ConfigError``, so the CLI
        prints it as it is): a setting that the chosen protocol would silently ignore, SASL without
        credentials, half a client certificate, files that are not there."""
        protocol = self.kafka_security_protocol
        sasl, ssl = protocol.startswith("SASL_"), protocol.endswith("SSL")
        problems: list[str] = []
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password is not None):
            problems.append(f"SEGMENT_WORKER_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                            "SEGMENT_WORKER_KAFKA_SASL_USERNAME and SEGMENT_WORKER_KAFKA_SASL_PASSWORD")
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password is not None):
            problems.append("SEGMENT_WORKER_KAFKA_SASL_USERNAME/_PASSWORD are set but "
                            f"SEGMENT_WORKER_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL "
                            "(SASL_PLAINTEXT or SASL_SSL)")
        files = {"CAFILE": self.kafka_ssl_cafile, "CERTFILE": self.kafka_ssl_certfile,
                 "KEYFILE": self.kafka_ssl_keyfile}
        given = [f"SEGMENT_WORKER_KAFKA_SSL_{k}" for k, v in files.items() if v]
        if given and not ssl:
            problems.append(f"{', '.join(given)} set but SEGMENT_WORKER_KAFKA_SECURITY_PROTOCOL={protocol} "
                            "does not use TLS (SSL or SASL_SSL)")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            problems.append("a client certificate needs both SEGMENT_WORKER_KAFKA_SSL_CERTFILE and "
                            "SEGMENT_WORKER_KAFKA_SSL_KEYFILE")
        for name, path in files.items():
            if path and not Path(path).is_file():
                problems.append(f"SEGMENT_WORKER_KAFKA_SSL_{name}={path}: no such file")
        if problems:
            raise ConfigError("invalid Kafka security settings: " + "; ".join(problems),
                              context={"kafka_security_protocol": protocol})
        return self

    def require_database_url(self) -> str:
        """The PostgreSQL DSN, or a clear error when it is not configured."""
        if not self.database_url:
            raise RuntimeError("SEGMENT_WORKER_DATABASE_URL is not set (a PostgreSQL DSN, asyncpg form)")
        return self.database_url

    def require_redis_url(self) -> str:
        """The Redis URL, or a clear error when it is not configured."""
        if not self.redis_url:
            raise RuntimeError("SEGMENT_WORKER_REDIS_URL is not set (redis://… or unix://…)")
        return self.redis_url

    def as_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """These settings as ``SEGMENT_WORKER_*`` variables over ``base`` (whose own
        ``SEGMENT_WORKER_*`` variables are dropped), so a child process sees exactly them."""
        env = {k: v for k, v in (base or {}).items() if not k.startswith("SEGMENT_WORKER_")}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):  # the child needs the secret itself, not its mask
                value = value.get_secret_value()
            if value is not None:
                env[f"SEGMENT_WORKER_{name.upper()}"] = str(value)
        return env
