"""Schemathesis against ``/openapi.json`` of a running ``segment-worker api``: generated requests
(valid and invalid, NUL bytes included) never get a 5xx answer."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from helpers.service import api_process, cli_command, cli_env


async def test_no_generated_request_gets_a_server_error(pg_dsn: str, redis_url: str, tmp_path: Path) -> None:
    token = f"fuzz-{uuid.uuid4().hex}"
    # A token for every workspace, so requests reach the handlers; Kafka is unreachable on purpose
    # (no generated customer exists, so no edit gets as far as publishing).
    env = cli_env(
        pg_dsn,
        redis_url,
        SEGMENT_WORKER_API_TOKENS=f"{token}=*",
        SEGMENT_WORKER_KAFKA_BOOTSTRAP="127.0.0.1:1",
    )
    async with api_process(env, tmp_path / "api.log") as server:
        proc = await asyncio.create_subprocess_exec(
            *cli_command("schemathesis"),
            "run",
            f"{server.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "8",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "20261122",
            "--generation-allow-x00",
            "true",
            "--generation-database",
            "none",
            "--no-color",
            "--report-dir",
            str(tmp_path / "report"),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-6000:]
    assert " passed" in report and "generated" in report
    assert "Exception in ASGI application" not in server.output()


async def test_every_check_of_schemathesis_passes(pg_dsn: str, redis_url: str, tmp_path: Path) -> None:
    """``--checks all``: status codes, content types, headers and bodies as documented, 405 with the
    path's methods in ``Allow``, invalid requests refused, … — except ``positive_data_acceptance``
    (a schema-valid request must be accepted): the schema gives shapes, and the service refuses
    with a 422 naming the path what only it can judge (a rule against the workspace's attributes, a
    cursor of another list, an unknown segment id, a workspace id with a non-printable character)."""
    token = f"fuzz-{uuid.uuid4().hex}"
    env = cli_env(pg_dsn, redis_url, SEGMENT_WORKER_API_TOKENS=f"{token}=*",
                  SEGMENT_WORKER_KAFKA_BOOTSTRAP="127.0.0.1:1")
    async with api_process(env, tmp_path / "api.log") as server:
        proc = await asyncio.create_subprocess_exec(
            *cli_command("schemathesis"), "run", f"{server.url}/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--checks", "all",
            "--exclude-checks", "positive_data_acceptance",
            "--max-examples", "5",
            "--phases", "examples,coverage,fuzzing",
            "--seed", "20261202",
            "--generation-database", "none",
            "--no-color",
            "--report-dir", str(tmp_path / "report"),
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 280)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-8000:]
