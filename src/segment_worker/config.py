"""Configuration from ``SEGMENT_WORKER_*`` environment variables (CONTRACT §1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the contract, with its default."""

    model_config = SettingsConfigDict(env_prefix="SEGMENT_WORKER_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
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
            if value is not None:
                env[f"SEGMENT_WORKER_{name.upper()}"] = str(value)
        return env
