"""PostgreSQL access: the connection pool (with an orjson jsonb codec) and, re-exported, every
store function — ``from segment_worker.stores import postgres as pg`` then ``pg.save_states(conn, …)``.

The functions live by subject in ``pg_customers``, ``pg_memberships``, ``pg_partitions``,
``pg_outbox`` and ``pg_redisops``. All take a connection; writes belong inside ``stores.unit.partition_unit``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import asyncpg
import orjson

from .pg_customers import json_default, load_records, refresh_customer_times, save_states
from .pg_memberships import (
    delete_segment_rows,
    diff_segment,
    diff_segment_tally,
    insert_redis_ops,
    optout_ops,
    segment_member_counts,
    write_optout,
    write_transitions,
)
from .pg_outbox import fetch_unsent, mark_sent, max_ids
from .pg_partitions import (
    bump_generation,
    check_epochs,
    claim_partitions,
    current_epochs,
    get_ticked_at,
    input_partitions,
    known_partitions,
    load_fingerprints,
    load_offsets,
    load_positions,
    new_incarnation,
    record_topic,
    save_offsets,
    set_ticked_at,
)
from .pg_redisops import Cursors, cursors, fetch_redis_ops, settle_redis_ops
from .pgtimeouts import DEFAULT_TIMEOUTS, Timeouts

# jsonb's binary wire format is a version byte (1) followed by the JSON text.
_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + orjson.dumps(value, default=json_default)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """Make jsonb (and json) parameters and results plain Python values, through orjson
    (dataclasses serialise as objects, sets as sorted arrays)."""
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )
    await conn.set_type_codec(
        "json",
        schema="pg_catalog",
        encoder=lambda v: orjson.dumps(v, default=json_default).decode(),
        decoder=orjson.loads,
    )


def _server_settings(
    dsn: str, timeouts: Timeouts, application_name: str | None, kwargs: dict[str, Any]
) -> dict[str, str]:
    settings = timeouts.server_settings(application_name or "segment-worker")
    if application_name is None and "application_name=" in urllib.parse.urlsplit(dsn).query:
        del settings["application_name"]  # the DSN names the connection
    return {**settings, **kwargs.get("server_settings", {})}


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    application_name: str | None = None,
    **kwargs: Any,
) -> asyncpg.Pool:
    """A pool whose connections have the jsonb codec (every store function relies on it) and the
    session ``timeouts`` (``pgtimeouts``), named ``application_name`` in ``pg_stat_activity``
    (default: the DSN's ``application_name``, else ``segment-worker``)."""
    kwargs["server_settings"] = _server_settings(dsn, timeouts, application_name, kwargs)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, **kwargs
    )
    return pool


async def connect(
    dsn: str,
    *,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    application_name: str | None = None,
    **kwargs: Any,
) -> asyncpg.Connection:
    """One connection with the jsonb codec and the session ``timeouts`` (scripts and the CLI)."""
    kwargs["server_settings"] = _server_settings(dsn, timeouts, application_name, kwargs)
    conn: asyncpg.Connection = await asyncpg.connect(dsn, **kwargs)
    await init_connection(conn)
    return conn


__all__ = [
    "Cursors",
    "bump_generation",
    "check_epochs",
    "claim_partitions",
    "connect",
    "create_pool",
    "current_epochs",
    "cursors",
    "delete_segment_rows",
    "diff_segment",
    "diff_segment_tally",
    "fetch_redis_ops",
    "fetch_unsent",
    "get_ticked_at",
    "init_connection",
    "input_partitions",
    "insert_redis_ops",
    "known_partitions",
    "load_fingerprints",
    "load_offsets",
    "load_positions",
    "load_records",
    "mark_sent",
    "max_ids",
    "new_incarnation",
    "optout_ops",
    "record_topic",
    "refresh_customer_times",
    "save_offsets",
    "save_states",
    "segment_member_counts",
    "set_ticked_at",
    "settle_redis_ops",
    "write_optout",
    "write_transitions",
]
