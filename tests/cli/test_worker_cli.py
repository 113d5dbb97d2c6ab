"""``segment-worker run``'s command line (the process itself is exercised in test_worker_failover)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from segment_worker.cli.main import main


def test_run_documents_its_options() -> None:
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    assert "--metrics-port" in result.output
    assert "SIGINT/SIGTERM" in result.output


def test_run_without_stores_configured_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENT_WORKER_DATABASE_URL", raising=False)
    monkeypatch.delenv("SEGMENT_WORKER_REDIS_URL", raising=False)
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 1
    assert "SEGMENT_WORKER_DATABASE_URL" in result.output
