"""Fixtures and helpers for service and API tests, against the session's real PostgreSQL and Redis.

Fixtures are in ``helpers.service_fixtures``. Customers are seeded the
way the worker would leave them: input events applied by ``apply.apply_event`` and saved in a
partition unit (states, opt-out set) — no shortcut around our own stores.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from segment_worker.apply import apply_event
from segment_worker.embedded import free_port
from segment_worker.events import parse_event
from segment_worker.partitioning import customer_partition
from segment_worker.service.context import ServiceContext
from segment_worker.service.workspaces import input_partition_count
from segment_worker.state import CustomerState
from segment_worker.stores import OptOutChange
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import optout_key, segment_key
from segment_worker.stores.redis import read_set
from segment_worker.stores.unit import partition_unit


def event(
    ws: str, cid: str, etype: str, data: Mapping[str, Any], at: datetime | None = None
) -> dict[str, Any]:
    """An input event (CONTRACT §2)."""
    when = (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    return {
        "event_id": f"seed-{uuid.uuid4()}",
        "type": etype,
        "workspace_id": ws,
        "customer_id": cid,
        "occurred_at": when,
        "data": dict(data),
    }


async def seed(
    ctx: ServiceContext, ws: str, customers: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, CustomerState]:
    """Create customers from input events: ``{customer_id: [event, …]}`` where each event is
    ``{"type": …, "data": …, "at"?: datetime}``. Answers the saved states."""
    async with ctx.pool.acquire() as conn:
        n = await input_partition_count(conn, ctx.settings)
    states: dict[str, CustomerState] = {}
    optouts: list[OptOutChange] = []
    for cid, events in customers.items():
        state: CustomerState | None = None
        part = customer_partition(ws, cid, n)
        for ev in events:
            parsed = parse_event(orjson.dumps(event(ws, cid, ev["type"], ev["data"], ev.get("at"))))
            result = apply_event(state, parsed, {}, None, part)
            assert result.rejected is None, result.rejected
            state = result.state
        assert state is not None
        states[cid] = state
        if state.marketing_opt_out:
            optouts.append(OptOutChange(ws, cid, part, True))
    async with partition_unit(
        ctx.pool, ctx.redis, {s.partition for s in states.values()}, bump_generation=True
    ) as u:
        await pg.save_states(u.conn, list(states.values()))
        await pg.write_optout(u.conn, optouts)
    return states


def upsert(at: datetime | None = None, **data: Any) -> dict[str, Any]:
    """A ``customer.upserted`` seed event (at ``at``, default now)."""
    return {"type": "customer.upserted", "data": data, "at": at}


def incoming(at: datetime) -> dict[str, Any]:
    """A ``customer.interaction`` (incoming) seed event at ``at``."""
    return {"type": "customer.interaction", "data": {"direction": "incoming"}, "at": at}


def tags(*names: str) -> dict[str, Any]:
    """A ``customer.tags_added`` seed event."""
    return {"type": "customer.tags_added", "data": {"tags": list(names)}}


def attrs(**values: Any) -> dict[str, Any]:
    """A ``customer.attributes_set`` seed event."""
    return {"type": "customer.attributes_set", "data": {"attributes": values}}


def opt_out() -> dict[str, Any]:
    """A ``customer.opt_out_set`` (true) seed event."""
    return {"type": "customer.opt_out_set", "data": {"marketing_opt_out": True}}


async def redis_members(ctx: ServiceContext, ws: str, segment_id: str | uuid.UUID) -> set[str]:
    """The Redis set of a segment."""
    return await read_set(ctx.redis, segment_key(ws, segment_id))


async def optout_members(ctx: ServiceContext, ws: str) -> set[str]:
    """The workspace's opt-out set."""
    return await read_set(ctx.redis, optout_key(ws))


async def pg_members(ctx: ServiceContext, segment_id: str | uuid.UUID) -> set[str]:
    """The members in ``segment_memberships``."""
    rows = await ctx.pool.fetch(
        "SELECT customer_id FROM segment_memberships WHERE segment_id = $1", uuid.UUID(str(segment_id))
    )
    return {r["customer_id"] for r in rows}


async def transitions(ctx: ServiceContext, segment_id: str | uuid.UUID) -> list[dict[str, Any]]:
    """Every transitions row of a segment, in id order."""
    rows = await ctx.pool.fetch(
        "SELECT customer_id, seq, kind, cause, at, partition, segment_name FROM transitions"
        " WHERE segment_id = $1 ORDER BY id",
        uuid.UUID(str(segment_id)),
    )
    return [dict(r) for r in rows]


def cli_command(name: str = "segment-worker") -> list[str]:
    """How to run a console script of the venv (``segment-worker``, ``schemathesis``)."""
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    module = {"segment-worker": "segment_worker.cli", "schemathesis": "schemathesis.cli"}[name]
    return [sys.executable, "-m", module]


def cli_env(pg_dsn: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI process using these servers (no other SEGMENT_WORKER_* leaks in)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")}
    return base | {"SEGMENT_WORKER_DATABASE_URL": pg_dsn, "SEGMENT_WORKER_REDIS_URL": redis_url, **extra}


@dataclass
class ApiProcess:
    """A running ``segment-worker api``: its base URL and where its output goes."""

    url: str
    log: Path
    process: asyncio.subprocess.Process

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text(errors="replace")


@asynccontextmanager
async def api_process(env: Mapping[str, str], log: Path) -> AsyncIterator[ApiProcess]:
    """``segment-worker api`` on a free port as a real process (output to ``log``), once /healthz
    answers; stopped with SIGINT on exit."""
    port = free_port()
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *cli_command(), "api", "--port", str(port), env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )
    server = ApiProcess(f"http://127.0.0.1:{port}", log, proc)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            for _ in range(300):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.returncode is None, server.output()
                await asyncio.sleep(0.1)
        yield server
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
