"""``SEGMENT_WORKER_LOG_FORMAT=json`` (CONTRACT §1) on real commands: every line a process writes is
one JSON object with ``ts``, ``level``, ``logger`` and ``message`` — ``migrate``'s report, an error,
an uncaught exception's traceback, a worker dead-lettering a bad record (with its partition and
offset), the API under uvicorn (its access log with the request id the response echoes)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from helpers.kafka_io import produce
from helpers.service import api_process, cli_command, cli_env
from segment_worker.config import Settings
from segment_worker.migrate import migrate

JSON = {"SEGMENT_WORKER_LOG_FORMAT": "json"}
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object with the four base fields (asserts it)."""
    out = []
    for line in text.splitlines():
        doc = json.loads(line)  # raises on anything that is not one JSON value
        assert isinstance(doc, dict), line
        assert _TS.match(doc["ts"]), line
        ts = datetime.fromisoformat(doc["ts"])
        assert abs(datetime.now(UTC) - ts) < timedelta(minutes=10), line
        assert doc["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        assert isinstance(doc["logger"], str) and doc["logger"], line
        assert isinstance(doc["message"], str), line
        out.append(doc)
    return out


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_command(), *args], env=env, capture_output=True, text=True, timeout=60)


def test_migrate_reports_in_json_lines(empty_database: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")}
    result = _run("migrate", env=env | JSON | {"SEGMENT_WORKER_DATABASE_URL": empty_database})
    assert result.returncode == 0, result.stderr
    out = json_lines(result.stdout)
    json_lines(result.stderr)
    applied = [d["migration"] for d in out if "migration" in d]
    assert applied and applied[0] == "001_initial.sql"
    assert out[-1]["message"].startswith("database migrated to")
    assert {d["logger"] for d in out} == {"segment_worker.cli"}


def test_an_error_is_one_json_line_and_exit_1() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")} | JSON
    result = _run("migrate", env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = json_lines(result.stderr)
    assert line["level"] == "ERROR" and "SEGMENT_WORKER_DATABASE_URL is not set" in line["message"]
    assert line["error"]["code"] == "config_error"


def test_text_stays_the_default() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")}
    result = _run("migrate", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: SEGMENT_WORKER_DATABASE_URL is not set")


async def _wait_for(log_path: Path, text: str, proc: asyncio.subprocess.Process, deadline: float) -> None:
    while text not in (seen := await asyncio.to_thread(log_path.read_text)):
        assert proc.returncode is None, seen[-3000:]
        assert time.monotonic() < deadline, seen[-3000:]
        await asyncio.sleep(0.2)


async def test_a_worker_logs_dead_letters_and_tracebacks_in_json(
    unique_settings: Settings, empty_database: str, tmp_path: Path
) -> None:
    """A bad record (a warning with its partition and offset), then a batch that fails on PostgreSQL
    (a table renamed away under the worker: an error with its traceback), then recovery."""
    await migrate(empty_database)
    settings = unique_settings.model_copy(update={"input_partitions": 2, "lanes": 1,
                                                  "database_url": empty_database})
    log_path = tmp_path / "worker.log"
    env = settings.as_env(os.environ) | JSON
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "segment_worker.cli", "run", "--session-timeout-ms", "2000",
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    conn = await asyncpg.connect(empty_database)
    try:
        deadline = time.monotonic() + 90
        await _wait_for(log_path, "partitions assigned", proc, deadline)
        ends = await produce(settings.kafka_bootstrap, settings.topic_events, [(b"ws:c1", b"not json")])
        (partition, end), = ends.items()
        await _wait_for(log_path, "goes to the DLQ", proc, deadline)

        await conn.execute("ALTER TABLE customers RENAME TO customers_away")
        good = json.dumps({"event_id": "e-1", "type": "customer.tags_added", "workspace_id": "ws",
                           "customer_id": "c1", "occurred_at": "2026-11-22T10:00:00Z",
                           "data": {"tags": ["VIP"]}})
        await produce(settings.kafka_bootstrap, settings.topic_events, [(b"ws:c1", good.encode())])
        await _wait_for(log_path, "re-reading them from the stored offsets", proc, deadline)
        await conn.execute("ALTER TABLE customers_away RENAME TO customers")
        while await conn.fetchval("SELECT count(*) FROM customers WHERE customer_id = 'c1'") == 0:
            assert time.monotonic() < deadline, "the worker did not recover"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    lines = json_lines(await asyncio.to_thread(log_path.read_text))
    (dead,) = [d for d in lines if "goes to the DLQ" in d["message"]]
    assert dead["level"] == "WARNING" and dead["logger"] == "segment_worker.worker.deadletter"
    assert dead["partition"] == partition and dead["offset"] == end - 1
    failed = [d for d in lines if "re-reading them from the stored offsets" in d["message"]]
    assert failed and failed[0]["level"] == "ERROR"
    assert failed[0]["partition"] == partition  # the batch's context
    trace = failed[0]["exc_info"]
    assert trace.startswith("Traceback (most recent call last):") and "customers" in trace
    assert trace.count("\n") > 3  # a multi-line traceback, as one JSON string


async def test_the_api_logs_json_with_request_ids(pg_dsn: str, redis_url: str, tmp_path: Path) -> None:
    token = f"logs-{uuid.uuid4().hex}"
    env = cli_env(pg_dsn, redis_url, SEGMENT_WORKER_API_TOKENS=f"{token}=*", **JSON)
    log = tmp_path / "api.log"
    async with api_process(env, log) as server, httpx.AsyncClient(base_url=server.url) as client:
        given = await client.get("/v1/workspaces/ws-logs/segments/nope",
                                 headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-42"})
        assert given.status_code == 404 and given.headers["x-request-id"] == "req-42"
        made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
        assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
        await asyncio.sleep(0.3)
    lines = json_lines(await asyncio.to_thread(log.read_text))
    loggers = {d["logger"] for d in lines}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers, loggers
    access = [d for d in lines if d["logger"] == "uvicorn.access"]
    mine = [d for d in access if d.get("request_id") == "req-42"]
    assert len(mine) == 1, access
    assert mine[0]["status"] == 404 and mine[0]["method"] == "GET"
    assert mine[0]["workspace"] == "ws-logs" and mine[0]["segment_id"] == "nope"
    assert any(d.get("request_id") == made.headers["x-request-id"] for d in access)


@pytest.mark.parametrize("command", [
    ["tokens", "create", "--workspace", "ws-json"], ["tokens", "list"], ["reconcile", "--check"],
])
def test_operator_commands_write_json_lines(pg_dsn: str, redis_url: str, command: list[str]) -> None:
    result = _run(*command, env=cli_env(pg_dsn, redis_url, **JSON))
    assert result.returncode in (0, 1), result.stderr  # reconcile --check: 1 if another test left drift
    json_lines(result.stderr)
    lines = result.stdout.splitlines()
    if command[:2] == ["tokens", "create"]:
        token = lines.pop()  # alone on the last line, as the contract says, for scripts to read
        assert token.startswith("swt_")
    assert lines and json_lines("\n".join(lines))
