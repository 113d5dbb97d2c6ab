"""Fixtures of the service and API tests, over the session's real PostgreSQL and Redis.

Imported by the conftest.py of the folders that use them (helper functions
live in ``helpers.service``, which test modules import directly).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from segment_worker.api import create_app
from segment_worker.config import Settings
from segment_worker.service.context import ServiceContext
from segment_worker.service.tokens import create_token


@pytest.fixture(scope="session")
def service_settings(pg_dsn: str, redis_url: str) -> Settings:
    """Settings of the service tests (4 input partitions; Kafka only where a test starts it)."""
    return Settings(database_url=pg_dsn, redis_url=redis_url, input_partitions=4)


@pytest.fixture(scope="session")
async def ctx(service_settings: Settings) -> AsyncIterator[ServiceContext]:
    """One service context (pool, Redis) for the session."""
    c = await ServiceContext.open(service_settings)
    yield c
    await c.close()


@pytest.fixture(scope="session")
async def app(service_settings: Settings, ctx: ServiceContext) -> AsyncIterator[FastAPI]:
    """The API app over the session's context, its lifespan running."""
    application = create_app(service_settings, context=ctx)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app (ASGI transport), without a token."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        yield client


@pytest.fixture
async def token(ctx: ServiceContext, workspace_id: str) -> str:
    """A token bound to this test's workspace."""
    return await create_token(ctx.pool, workspace_id)


@pytest.fixture
async def api(app: FastAPI, workspace_id: str, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose base URL is this test's workspace, with its token."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=f"http://api/v1/workspaces/{workspace_id}",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        yield client
