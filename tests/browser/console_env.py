"""The browser tests' handle on their world (kept out of conftest.py so test modules import it
by a name no other conftest shares)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from console_data import Customer

from helpers.kafka_io import produce
from segment_worker.config import Settings


@dataclass
class Console:
    """What a test needs: the console's URL, the API, the workspace and its customers."""

    url: str
    token: str
    ws: str
    settings: Settings
    api: httpx.AsyncClient
    customers: dict[str, Customer]
    shots: Path

    async def send(self, *evs: dict[str, Any]) -> None:
        """Produce input events (as an upstream CRM service would)."""
        await produce(
            self.settings.kafka_bootstrap,
            self.settings.topic_events,
            [(f"{e['workspace_id']}:{e['customer_id']}".encode(), orjson.dumps(e)) for e in evs],
        )

    def event(self, customer_id: str, etype: str, data: dict[str, Any]) -> dict[str, Any]:
        """An input event for a customer of the workspace, with a fresh id and time."""
        return {"event_id": f"console-{uuid.uuid4()}", "type": etype, "workspace_id": self.ws,
                "customer_id": customer_id, "occurred_at": datetime.now(UTC).isoformat(), "data": data}

    async def wait_customers(self, n: int, limit_s: float = 60.0) -> None:
        """Until the worker has stored ``n`` customers of the workspace."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while True:
            r = await self.api.post("/customers/search", json={"rules": {"all": []}, "limit": 1})
            if r.status_code == 200 and r.json()["total"] >= n:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the worker stored {r.json().get('total')} of {n} customers")
            await asyncio.sleep(0.2)
