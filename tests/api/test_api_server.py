"""The API as an operator runs it: `segment-worker tokens create` then `segment-worker api`
(uvicorn, a real process, real sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from helpers.service import api_process, cli_command, cli_env
from segment_worker.service.tokens import hash_token


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cli_command(), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_tokens_create_then_serve(
    pg_dsn: str, redis_url: str, workspace_id: str, tmp_path: Path
) -> None:
    env = cli_env(pg_dsn, redis_url)
    status, out, err = await _cli(env, "tokens", "create", "--workspace", workspace_id)
    assert status == 0, err
    token = out.strip().splitlines()[-1]
    assert token.startswith("swt_") and " " not in token
    status, _, err = await _cli(env, "tokens", "create", "--workspace", "a:b")
    assert status == 1 and "workspace id" in err

    log = tmp_path / "api.log"
    async with api_process(env, log) as server, httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/readyz")).json()["status"] == "ready"
        auth = {"Authorization": f"Bearer {token}"}
        url = f"/v1/workspaces/{workspace_id}/segments"
        assert (await client.get(url)).status_code == 401
        created = await client.post(url, json={"name": "Over the wire", "type": "static"}, headers=auth)
        assert created.status_code == 201, created.text
        listed = (await client.get(url, headers=auth)).json()
        assert [s["name"] for s in listed["items"]] == ["Over the wire"]
        assert (await client.get("/v1/workspaces/other/segments", headers=auth)).status_code == 404
    assert server.process.returncode == 0, server.output()
    assert token not in server.output() and hash_token(token) not in server.output()
