"""``segment-worker dev``: one command that runs everything locally and loads a demo.

Order: bind the API socket (a taken port is reported before anything starts) → embedded broker,
PostgreSQL and Redis → migrate → worker child process → API → demo workspace (service layer),
demo customers as Kafka input events, wait for the worker, CSV import → token → print where
everything is → live trickle until SIGINT/SIGTERM.

Every part is pushed on one exit stack the moment it runs, so a signal at any point (startup is
a task of its own, cancelled by the signal) or a failure stops exactly what runs, in reverse
order: trickle, API, worker (SIGTERM, then SIGKILL), connections, servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import kafka
from ..api.app import create_app
from ..childproc import free_port
from ..config import Settings
from ..embedded import EmbeddedStack
from ..errors import SegmentWorkerError
from ..migrate import migrate
from ..service.context import ServiceContext
from ..service.segments import list_segments
from ..service.tokens import ALL_WORKSPACES, create_token
from ..stores.reconcile import rebuild_and_diff
from . import demo, report, seed
from .processes import ApiServer, DevError, WorkerProcess, bind_api_socket, lock_data_dir


@dataclass(frozen=True, slots=True)
class DevOptions:
    """The options of ``segment-worker dev``."""

    data_dir: Path
    demo: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    customers: int = 3000
    trickle_rate: float = 3.0


@dataclass(slots=True)
class _Running:
    """What the serving phase needs from startup."""

    ctx: ServiceContext
    worker: WorkerProcess
    lines: list[str]
    trickle: asyncio.Task[None] | None = None
    sent: int = 0  # live events produced so far


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    )


def _bar(progress: Progress, description: str, total: int) -> Callable[[int, int], None]:
    task = progress.add_task(description, total=total)

    def update(done: int, of: int) -> None:
        progress.update(task, completed=done, total=of)

    return update


async def _load_demo(
    options: DevOptions, settings: Settings, producer: AIOKafkaProducer, ctx: ServiceContext,
    worker: WorkerProcess, err: Console,
) -> None:
    err.print(f"loading the demo workspace {demo.DEMO_WORKSPACE!r} …")
    ids = await seed.prepare_workspace(ctx)
    have = await seed.customer_count(ctx.pool)
    if have >= options.customers:
        err.print(f"the demo workspace has {have} customers already; not producing more")
    else:
        events = list(demo.customer_events(options.customers, now=demo.default_now()))
        with _progress(err) as progress:
            sent = _bar(progress, f"producing {options.customers} customers", len(events))
            produced = await seed.produce(producer, settings.topic_events, events, progress=sent)
            await seed.wait_processed(
                ctx.pool, settings, produced, progress=_bar(progress, "worker processing", produced.span),
                check=worker.check_alive,
            )
    result = await seed.import_newsletter(ctx, ids[str(demo.STATIC_SEGMENT["name"])], options.customers)
    err.print(f"imported the newsletter CSV: {result.added} added, {result.already_members} already members,"
              f" {result.created} new customers, {len(result.invalid)} invalid rows")


async def _start(options: DevOptions, base: Settings, resources: AsyncExitStack, err: Console) -> _Running:
    listening = bind_api_socket(options.api_host, options.api_port)
    resources.callback(listening.sock.close)
    if listening.notice:
        err.print(f"[yellow]note:[/] {listening.notice}")

    resources.callback((await asyncio.to_thread(lock_data_dir, options.data_dir)).close)
    err.print(f"starting the embedded broker, PostgreSQL and Redis under {options.data_dir} …", markup=False)
    stack = EmbeddedStack(options.data_dir)
    resources.push_async_callback(stack.astop)
    await stack.astart()
    settings = base.model_copy(update={
        "kafka_bootstrap": stack.kafka_bootstrap, "database_url": stack.database_url,
        "redis_url": stack.redis_url,
    })
    await migrate(stack.database_url)
    ctx = await ServiceContext.open(settings)
    resources.push_async_callback(ctx.close)
    await seed.forget_positions(ctx.pool, settings)
    # Redis starts empty while a kept data directory's PostgreSQL remembers every membership.
    rebuilt = await rebuild_and_diff(ctx.pool, ctx.redis, repair=True)
    if rebuilt.has_drift:
        err.print(f"rebuilt {len(rebuilt.drift)} Redis sets from PostgreSQL")
    await kafka.ensure_topics(settings)

    worker = WorkerProcess(settings, stack.log_path("worker"), metrics_port=free_port())
    await worker.start()
    resources.push_async_callback(worker.stop)
    api = ApiServer(create_app(settings, context=ctx), listening)
    await api.start()
    resources.push_async_callback(api.stop)

    running = _Running(ctx, worker, [])
    if options.demo:
        producer = await resources.enter_async_context(
            kafka.producer(settings, client_id="segment-worker-dev")
        )
        await _load_demo(options, settings, producer, ctx, worker, err)
    token = await create_token(ctx.pool, ALL_WORKSPACES)
    segments = (await list_segments(ctx, demo.DEMO_WORKSPACE, limit=100)).items if options.demo else []
    endpoints = report.Endpoints(
        api_url=f"http://{listening.host}:{listening.port}", token=token,
        kafka_bootstrap=settings.kafka_bootstrap, input_topic=settings.topic_events,
        output_topic=settings.topic_membership, database_url=stack.database_url, redis_url=stack.redis_url,
        worker_pid=worker.pid, worker_metrics_url=f"http://127.0.0.1:{worker.metrics_port}/metrics",
        logs_dir=stack.data_dir / "logs", data_dir=stack.data_dir,
    )
    running.lines = report.summary_lines(
        endpoints, workspace=demo.DEMO_WORKSPACE, segments=segments, demo_loaded=options.demo,
        trickle_rate=options.trickle_rate,
    )
    if options.demo and options.trickle_rate > 0:

        def count(n: int) -> None:
            running.sent = n

        running.trickle = asyncio.create_task(seed.trickle(
            producer, settings.topic_events, rate=options.trickle_rate, seed=time.time_ns() // 1000,
            customers=options.customers, on_sent=count,
        ))
        resources.push_async_callback(_cancel, running.trickle)
    return running


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _serve(running: _Running, options: DevOptions, stop: asyncio.Event, out: Console) -> None:
    """Until a signal: report failures of the worker or the trickle, redraw counts on a terminal."""
    watched: dict[asyncio.Task[Any], str] = {
        asyncio.create_task(stop.wait()): "stop",
        asyncio.create_task(running.worker.wait_exit()): "worker",
    }
    if running.trickle is not None:
        watched[running.trickle] = "trickle"
    counts = None
    if options.demo and out.is_terminal:
        counts = asyncio.create_task(
            report.live_counts(running.ctx, out, demo.DEMO_WORKSPACE, lambda: running.sent)
        )
    try:
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finished = next(iter(done))
        if watched[finished] == "worker":
            running.worker.check_alive()
        elif watched[finished] == "trickle":
            finished.result()  # its error (e.g. the broker went away)
            raise DevError("the live event trickle stopped")
    finally:
        for task in watched:
            if task is not running.trickle:
                await _cancel(task)
        if counts is not None:
            with contextlib.suppress(Exception):  # a display that failed is no reason to fail the stop
                await _cancel(counts)


async def run_dev(options: DevOptions, settings: Settings, *, out: Console, err: Console) -> None:
    """Run ``segment-worker dev`` until SIGINT/SIGTERM; everything started is stopped on return.
    Raises ``DevError`` (or another of our errors) when a part fails to start or dies."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            err.print("still stopping (whatever does not exit in time is killed) …")
            return
        stop.set()
        err.print("stopping …")

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with AsyncExitStack() as resources:
            startup = asyncio.create_task(_start(options, settings, resources, err))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
            await _cancel(stopper)
            if startup.done():
                running = startup.result()
                for line in running.lines:
                    click.echo(line)  # plain: never wrapped, so each command stays copy-pasteable
                await _serve(running, options, stop, out)
            else:
                await _cancel(startup)  # whatever it had started is on ``resources``
    except SegmentWorkerError as exc:
        if exc.context.get("log_tail"):  # a server or the worker failed: its own words help most
            err.print(f"last lines of {exc.context.get('log', 'its log')}:", style="bold")
            err.out(str(exc.context["log_tail"]).rstrip(), highlight=False)
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    err.print(f"stopped; PostgreSQL data kept in {options.data_dir}", markup=False)
