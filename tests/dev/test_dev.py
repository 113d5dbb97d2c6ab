"""`segment-worker dev` as a newcomer runs it: a real process that starts every server, loads the
demo through Kafka, prints where everything is, serves the API with the printed token and curl
commands, and on SIGINT stops everything it started."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
import psutil
import pytest

from helpers.processes import still_alive
from segment_worker.childproc import free_port, port_answers
from segment_worker.config import Settings
from segment_worker.csvimport import parse_csv
from segment_worker.dev import demo
from segment_worker.dev.processes import DevError, bind_api_socket, lock_data_dir
from segment_worker.dev.seed import Produced, forget_positions, wait_processed
from segment_worker.stores import postgres as pg

_STARTUP_SECONDS = 75


class _Lines:
    """A child's stdout, collected line by line by a thread (reads never block the test)."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, proc: subprocess.Popen[str], within: float) -> re.Match[str]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}; got:\n" + "\n".join(self.lines))



def _port(url: str) -> int:
    m = re.search(r":(\d+)(/|$)", url)
    assert m, url
    return int(m.group(1))


def test_dev_serves_the_demo_and_stops_everything_on_sigint(tmp_path: Path) -> None:
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")}
    stderr_path = tmp_path / "dev.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segment_worker.cli", "dev", "--data-dir", str(tmp_path / "dev"),
             "--customers", "200", "--api-port", str(api_port), "--trickle-rate", "20"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
            start_new_session=True, restore_signals=True,  # like a terminal's foreground job
        )
    descendants: list[int] = []
    try:
        assert proc.stdout is not None
        out = _Lines(proc.stdout)
        api_url = out.wait_for(r"^  API +(http://\S+)$", proc, _STARTUP_SECONDS).group(1)
        out.wait_for(r"^Try it:$", proc, 5)
        curls = out.wait_for(r"^  curl .*/segments'?$", proc, 5)  # the create example, printed last
        console_url = out.wait_for(r"^  Console +(http://\S+/console) +\(paste the API", proc, 1).group(1)
        token = out.wait_for(r"^  API token +(swt_\S+)", proc, 1).group(1)
        addresses = {name: out.wait_for(rf"^  {name} +(\S+)", proc, 1).group(1)
                     for name in ("Kafka", "PostgreSQL", "Redis")}
        metrics_url = out.wait_for(r"metrics (http://\S+/metrics)", proc, 1).group(1)
        assert api_url == f"http://127.0.0.1:{api_port}"
        assert curls

        descendants = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        names = {psutil.Process(p).name() for p in descendants}
        assert {"postgres", "redis-server"} <= names and any(n.startswith("tansu") for n in names)
        worker = [p for p in descendants if "run" in psutil.Process(p).cmdline()
                  and "segment_worker.cli" in psutil.Process(p).cmdline()]
        assert len(worker) == 1
        ports = [api_port, _port(metrics_url), *(_port(a) for a in addresses.values())]
        assert all(port_answers(p) for p in ports)

        assert httpx.get(f"{api_url}/readyz", timeout=10).status_code == 200
        # The web console loads with no token (it asks for the printed one).
        page = httpx.get(console_url, timeout=10, follow_redirects=True)
        assert page.status_code == 200 and "js/app.js" in page.text
        listed = httpx.get(f"{api_url}/v1/workspaces/{demo.DEMO_WORKSPACE}/segments",
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert listed.status_code == 200, listed.text
        counts = {s["name"]: s["member_count"] for s in listed.json()["items"]}
        expected = {s["name"] for s in demo.SEGMENTS} | {demo.STATIC_SEGMENT["name"]}
        assert set(counts) == expected
        # 200 seeded customers give every demo segment members (the seed is fixed).
        assert all(n > 0 for n in counts.values()), counts

        # The printed curl commands work as pasted (list, members, create).
        commands = [line.strip() for line in out.lines if line.startswith("  curl ")]
        assert len(commands) == 3
        if shutil.which("curl"):
            answers = [json.loads(subprocess.run(["bash", "-c", c], capture_output=True, text=True,
                                                 timeout=30, check=True).stdout) for c in commands]
            assert answers[0]["total"] == len(expected)
            assert len(answers[1]["items"]) == 5
            assert answers[2]["name"] == demo.EXAMPLE_SEGMENT["name"] and answers[2]["member_count"] > 0

        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert still_alive(descendants, within=10) == []
        assert not [p for p in ports if port_answers(p)]
        assert "stopped" in stderr_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in still_alive(descendants, within=0):
            psutil.Process(pid).kill()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_taken_api_port_is_reported_and_a_free_one_used() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listening = bind_api_socket("127.0.0.1", port)
        try:
            assert listening.port != port
            assert listening.notice is not None
            assert f"port {port}" in listening.notice and str(listening.port) in listening.notice
            assert port_answers(listening.port)
        finally:
            listening.sock.close()
    anywhere = bind_api_socket("127.0.0.1", 0)
    anywhere.sock.close()
    assert anywhere.notice is None and anywhere.port > 0


async def test_waiting_for_the_worker_follows_its_stored_positions(
    pg_dsn: str, unique_name: Callable[[str], str]
) -> None:
    settings = Settings(
        database_url=pg_dsn, consumer_group=unique_name("dev"), topic_events=unique_name("in")
    )
    produced = Produced(first={0: 0, 1: 5}, last={0: 9, 1: 7}, count=13)  # 10 + 3 records
    pool = await pg.create_pool(pg_dsn, max_size=2)

    async def store(offsets: dict[int, int]) -> None:
        async with pool.acquire() as conn:
            await pg.save_offsets(conn, settings.consumer_group, settings.topic_events, offsets)

    try:
        seen: list[tuple[int, int]] = []
        await store({0: 4})
        with pytest.raises(DevError, match="processed no demo event"):
            await wait_processed(pool, settings, produced, progress=lambda d, t: seen.append((d, t)),
                                 stall_seconds=0.6)
        assert seen[0] == (4, 13) and seen[-1] == (4, 13)

        def worker_died() -> None:
            raise DevError("the worker exited")

        with pytest.raises(DevError, match="the worker exited"):
            await wait_processed(pool, settings, produced, check=worker_died)

        await store({0: 10, 1: 8})
        seen.clear()
        await wait_processed(pool, settings, produced, progress=lambda d, t: seen.append((d, t)))
        assert seen == [(13, 13)]

        await forget_positions(pool, settings)
        assert not await pool.fetchval(
            "SELECT count(*) FROM consumer_offsets WHERE group_id = $1", settings.consumer_group
        )
    finally:
        await pool.close()


def test_demo_data_is_reproducible_and_its_csv_imports_cleanly() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    first = list(demo.customer_events(50, now=now))
    assert first == list(demo.customer_events(50, now=now))
    assert len({e["event_id"] for e in first}) == len(first)
    assert {e["customer_id"] for e in first} == {demo.customer_id(i) for i in range(50)}

    # Live events of two runs never share an id (a shared id would be dropped as a duplicate).
    runs = [demo.trickle_events(seed=s, customers=50, clock=lambda: now) for s in (1, 2)]
    ids = [next(run)["event_id"] for run in runs for _ in range(100)]
    assert len(set(ids)) == len(ids)

    parsed = parse_csv(demo.newsletter_csv(20, customers=50).encode(), demo.DEMO_REGION)
    assert parsed.invalid == ()
    known = {demo.phone(i) for i in range(50)}
    assert len([r for r in parsed.rows if r.phone in known]) == 20
    assert len([r for r in parsed.rows if r.phone not in known]) == 1


def test_a_data_directory_serves_one_dev_at_a_time(tmp_path: Path) -> None:
    first = lock_data_dir(tmp_path / "dev")
    try:
        with pytest.raises(DevError, match="another `segment-worker dev` is running"):
            lock_data_dir(tmp_path / "dev")
    finally:
        first.close()
    lock_data_dir(tmp_path / "dev").close()  # free again once the first one is gone
