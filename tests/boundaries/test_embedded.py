"""The embedded stack: each server answers, and stopping (or our death) leaves no process behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis

from helpers.processes import still_alive
from segment_worker import kafka
from segment_worker.embedded import EmbeddedStack, ServerStartError


def _tree(pid: int) -> list[int]:
    """The pid and every descendant (PostgreSQL's backends)."""
    proc = psutil.Process(pid)
    return [pid, *(c.pid for c in proc.children(recursive=True))]



async def test_stack_answers_and_stop_leaves_no_process() -> None:
    async with EmbeddedStack() as stack:
        data_dir = stack.data_dir
        conn = await asyncpg.connect(stack.database_url)
        try:
            assert await conn.fetchval("SHOW server_version_num") >= "180000"
            assert await conn.fetchval("SELECT 6 * 7") == 42
        finally:
            await conn.close()

        client = aioredis.from_url(stack.redis_url)
        try:
            assert await client.ping() is True
        finally:
            await client.aclose()

        topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
        async with kafka.producer(stack.kafka_bootstrap) as prod:
            await prod.send_and_wait(topic, b"hello", key=b"ws:c1", headers=[("h", b"1")])
        async with kafka.consumer(stack.kafka_bootstrap, topic, group_id=None) as cons:
            got = await cons.getmany(timeout_ms=10_000)
        records = [r for batch in got.values() for r in batch]
        assert [(r.key, r.value, tuple(r.headers)) for r in records] == [(b"ws:c1", b"hello", (("h", b"1"),))]

        pids = [p for pid in stack.pids().values() for p in _tree(pid)]
        assert set(stack.pids()) == {"kafka", "postgres", "redis"}
        assert len(pids) > 3  # PostgreSQL's children are part of what must disappear

    assert still_alive(pids, within=0) == []
    assert not data_dir.exists()  # a temporary stack cleans up after itself
    assert stack.pids() == {}


def test_servers_start_lazily_and_a_failed_start_stops_only_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = EmbeddedStack()
    try:
        redis_url = stack.start_redis()
        assert set(stack.pids()) == {"redis"}
        assert stack.start_redis() == redis_url  # already running: same server
        monkeypatch.setenv("CALF_TANSU_BIN", "/bin/false")  # a broker that exits at once
        with pytest.raises(ServerStartError) as info:
            stack.start_kafka()
        assert info.value.context["server"] == "kafka"
        assert "exited" in info.value.message
        assert set(stack.pids()) == {"redis"}
        assert psutil.Process(stack.pids()["redis"]).is_running()
    finally:
        stack.stop()


def test_kept_directory_keeps_postgres_data(tmp_path: Path) -> None:
    async def query(dsn: str, sql: str) -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    with EmbeddedStack(tmp_path / "data", kafka=False, redis=False) as stack:
        asyncio.run(query(stack.database_url, "CREATE TABLE kept AS SELECT 7 AS n"))
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
    with EmbeddedStack(tmp_path / "data", kafka=False, redis=False) as stack:
        assert asyncio.run(query(stack.database_url, "SELECT n FROM kept")) == 7


def test_a_later_start_reaps_servers_an_abruptly_ended_run_left(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        created = psutil.Process(leftover.pid).create_time()
        (data / "pids.json").write_text(json.dumps({"redis": [leftover.pid, created]}))
        with EmbeddedStack(data, kafka=False, postgres=False):
            assert still_alive([leftover.pid], within=5) == []
    finally:
        leftover.kill()
        leftover.wait()


def test_a_temporary_start_sweeps_directories_of_dead_stacks_only() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])
    abandoned = Path(tempfile.mkdtemp(prefix="segment-worker-"))
    in_use = Path(tempfile.mkdtemp(prefix="segment-worker-"))
    starting = Path(tempfile.mkdtemp(prefix="segment-worker-"))  # no pids.json yet
    # Its servers are all down for a moment (a test restarting them), its owner alive.
    restarting = Path(tempfile.mkdtemp(prefix="segment-worker-"))
    try:
        (abandoned / "pids.json").write_text(json.dumps({"redis": [dead.pid, time.time() - 5]}))
        (abandoned / "owner.json").write_text(json.dumps({"owner": [dead.pid, time.time() - 5]}))
        created = psutil.Process(live.pid).create_time()
        (in_use / "pids.json").write_text(json.dumps({"redis": [live.pid, created]}))
        (restarting / "pids.json").write_text(json.dumps({"redis": [dead.pid, time.time() - 5]}))
        (restarting / "owner.json").write_text(json.dumps({"owner": [live.pid, created]}))
        with EmbeddedStack(kafka=False, postgres=False):
            assert not abandoned.exists()
            assert in_use.exists() and starting.exists() and restarting.exists()
    finally:
        live.kill()
        live.wait()
        for path in (abandoned, in_use, starting, restarting):
            shutil.rmtree(path, ignore_errors=True)


_CHILD = textwrap.dedent(
    """
    import json, signal, sys, time
    from segment_worker.embedded import EmbeddedStack
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if inherited ignored
    stack = EmbeddedStack().start()
    print(json.dumps({"pids": stack.pids(), "dir": str(stack.data_dir)}), flush=True)
    time.sleep(120)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_no_orphans_when_the_owning_process_ends(sig: signal.Signals) -> None:
    """Ctrl-C runs our clean stop; SIGTERM/SIGKILL skip Python entirely and rely on the
    parent-death signal the servers were started with."""
    info: dict[str, Any] = {}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        # A fresh session with default signal dispositions, like a terminal's foreground job.
        start_new_session=True, restore_signals=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        info = json.loads(line)
        pids = [p for pid in info["pids"].values() for p in _tree(pid)]
        assert len(info["pids"]) == 3
        os.kill(child.pid, sig)
        child.wait(timeout=30)
        assert still_alive(pids) == []
        if sig == signal.SIGINT:
            assert not Path(info["dir"]).exists()  # the clean path also removed the temporary data
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
        if info:
            shutil.rmtree(info["dir"], ignore_errors=True)  # SIGTERM/SIGKILL leave the temporary data
