"""The base commands as an operator runs them: `migrate` (a real process, a real database), `schemas`,
and how the group reports errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from segment_worker.cli.main import main
from segment_worker.embedded import free_port
from segment_worker.migrate import available


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("segment-worker")  # the console script pip installed
    command = [str(script)] if script.exists() else [sys.executable, "-m", "segment_worker.cli"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")} | env
    return subprocess.run([*command, *args], env=environ, capture_output=True, text=True, timeout=60)


async def test_migrate_applies_once_then_reports_up_to_date(empty_database: str) -> None:
    first = _cli("migrate", SEGMENT_WORKER_DATABASE_URL=empty_database)
    assert first.returncode == 0, first.stderr
    names = [m.name for m in available()]
    assert [line.removeprefix("applied ") for line in first.stdout.splitlines()[:-1]] == names
    assert f"{len(names)} applied" in first.stdout

    second = _cli("migrate", SEGMENT_WORKER_DATABASE_URL=empty_database)
    assert second.returncode == 0, second.stderr
    assert "applied " not in second.stdout and "up to date" in second.stdout

    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(names)
    finally:
        await conn.close()


def test_migrate_without_a_database_url_says_what_to_set() -> None:
    result = _cli("migrate")
    assert result.returncode == 1
    assert "SEGMENT_WORKER_DATABASE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_against_an_unreachable_server_is_a_retriable_error() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/x"  # nothing listens there
    result = CliRunner().invoke(main, ["migrate", "--database-url", dsn])
    assert result.exit_code == 1
    assert "cannot reach PostgreSQL" in result.output and "retrying may help" in result.output


def test_invalid_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENT_WORKER_TICK_SECONDS", "soon")
    result = CliRunner().invoke(main, ["migrate", "--database-url", "postgresql://x@127.0.0.1:1/x"])
    assert result.exit_code == 1
    assert "SEGMENT_WORKER_TICK_SECONDS" in result.output


def test_schemas_passes_its_options_to_the_generator(tmp_path: Path) -> None:
    runner = CliRunner()
    stale = runner.invoke(main, ["schemas", "--check", "--out", str(tmp_path)])
    assert stale.exit_code == 1  # nothing written yet
    assert runner.invoke(main, ["schemas", "--out", str(tmp_path)]).exit_code == 0
    assert (tmp_path / "customer-events.json").exists()
    assert runner.invoke(main, ["schemas", "--check", "--out", str(tmp_path)]).exit_code == 0
