"""The browser tests' world: a real worker and API (uvicorn on a socket) over the session's
embedded Kafka, PostgreSQL and Redis, a workspace filled through Kafka input events, and Debian's
Chromium driven by Playwright (never a downloaded browser).

Every module here is marked ``browser``: run with ``-m browser`` (``scripts/test-browser``); the
default run deselects them. Without
Chromium or Playwright they fail, saying how to install them — never a silent skip.
Screenshots go to ``docs/console/`` when ``CONSOLE_SCREENSHOTS=1``, else to a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_data import ATTRIBUTES, customers, events
from console_env import Console

from helpers.harness import WorkerHarness
from segment_worker.api import create_app
from segment_worker.config import Settings
from segment_worker.dev.processes import ApiServer, bind_api_socket
from segment_worker.service.context import ServiceContext
from segment_worker.service.tokens import create_token

INSTALL = (
    "the browser tests need Debian's Chromium and Playwright's Python package: "
    "`apt-get update && apt-get install -y chromium chromium-driver` and "
    "`.venv/bin/pip install -e '.[dev,browser]'` (scripts/test-browser does both); "
    "never `playwright install`"
)
# Visible inputs, selects, textareas and buttons with no accessible name (label, aria-label,
# aria-labelledby or, for buttons, text).
UNLABELLED_JS = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => el.type !== 'hidden' && el.getClientRects().length)
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => el.outerHTML.slice(0, 120))"""
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (fails, with how to install it, when missing)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(f"Chromium not found on PATH: {INSTALL}", pytrace=False)
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.fail(f"Playwright is not installed: {INSTALL}", pytrace=False)
    return path


@pytest.fixture(scope="session")
async def console(
    chromium: str, kafka_bootstrap: str, pg_dsn: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Console]:
    """Worker + API + a workspace with 24 customers produced through Kafka."""
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, database_url=pg_dsn, redis_url=redis_url,
        topic_events=f"console-in-{tag}", topic_membership=f"console-out-{tag}",
        topic_dlq=f"console-dlq-{tag}",
        consumer_group=f"console-{tag}", input_partitions=2, tick_seconds=1,
    )
    ws = f"ws-console-{tag}"
    ctx = await ServiceContext.open(settings)
    harness = WorkerHarness(settings)
    server = ApiServer(create_app(settings, context=ctx), bind_api_socket("127.0.0.1", 0))
    try:
        await harness.start()
        await server.start()
        token = await create_token(ctx.pool, ws)
        to_docs = os.environ.get("CONSOLE_SCREENSHOTS") == "1"
        shots = DOCS_SHOTS if to_docs else tmp_path_factory.mktemp("shots")
        shots.mkdir(parents=True, exist_ok=True)
        base = f"http://127.0.0.1:{server._socket.port}"
        async with httpx.AsyncClient(
            base_url=f"{base}/v1/workspaces/{ws}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            for a in ATTRIBUTES:
                spec = {k: v for k, v in a.items() if k != "name"}
                r = await api.put(f"/attributes/{a['name']}", json=spec)
                assert r.status_code in (200, 201), r.text
            settings_url = f"{base}/v1/workspaces/{ws}"  # no trailing slash (httpx adds one to "")
            r = await api.put(settings_url, json={"timezone": "Asia/Muscat", "default_region": "OM"})
            assert r.status_code == 200, r.text
            env = Console(f"{base}/console", token, ws, settings, api, customers(), shots)
            await env.send(*(e for c in env.customers.values() for e in events(ws, c)))
            await env.wait_customers(len(env.customers))
            yield env
    finally:
        await server.stop()
        await harness.stop()
        await ctx.close()


@pytest.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Any]:
    """Headless Chromium (the system's; ``--no-sandbox`` since tests run as root)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Any, console: Console) -> AsyncIterator[Any]:
    """A signed-in page at 1280 px; console errors of the page fail the test."""
    context = await browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    pg = await context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    await sign_in(pg, console)
    yield pg
    await context.close()
    # Only script errors count: a 4xx the console handles (a 422 while a rule is being built)
    # is logged by Chromium as a failed fetch, which is no defect.
    assert not problems, problems


async def sign_in(pg: Any, console: Console) -> None:
    """Load the console and enter the token and workspace as a person would."""
    await pg.goto(console.url)
    await pg.get_by_label("API token").fill(console.token)
    await pg.get_by_label("Workspace").fill(console.ws)
    await pg.get_by_role("button", name="Open console").click()
    await pg.get_by_role("heading", name="Segments").wait_for()


@pytest.fixture
def shot(console: Console) -> Callable[[Any, str], Any]:
    """``await shot(page, "segments")`` saves ``<shots>/segments.png``."""

    async def take(pg: Any, name: str, *, full_page: bool = False) -> None:
        await pg.screenshot(path=str(console.shots / f"{name}.png"), full_page=full_page)
        # Every screen shot is also checked for form controls a screen reader could not name.
        unlabelled = await pg.evaluate(UNLABELLED_JS)
        assert not unlabelled, f"{name}: controls without a label: {unlabelled}"

    return take
