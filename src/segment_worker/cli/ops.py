"""Operator commands: ``segment-worker dev`` (everything local, with a demo) and
``segment-worker reconcile`` (compare Redis with PostgreSQL, repair, report drift).

Registered on the group at the bottom of ``cli/main.py``; this module imports ``cli.main`` (and anything
heavy) only inside the commands, so ``python -m segment_worker.cli`` has no import cycle.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ConfigError, SegmentWorkerError, StoreUnavailable

if TYPE_CHECKING:
    from ..stores.reconcile import DriftReport


def _quiet_unless_asked() -> None:
    """``dev`` prints its own progress: keep library INFO logs (aiokafka, …) off the console
    unless ``--log-level`` or ``SEGMENT_WORKER_LOG_LEVEL`` asked for them."""
    parent = click.get_current_context().parent
    source = parent.get_parameter_source("log_level") if parent is not None else None
    if source in (None, click.core.ParameterSource.DEFAULT):
        logging.getLogger().setLevel(logging.WARNING)


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".data/dev"),
              show_default=True, help="Where the embedded servers keep data and logs (PostgreSQL's survive).")
@click.option("--no-demo", is_flag=True, help="Start empty: no demo workspace, customers or live events.")
@click.option("--api-port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port of the API on 127.0.0.1 (taken: a free one is used and printed; 0: any free one).")
@click.option("--customers", type=click.IntRange(1, 1_000_000), default=3000, show_default=True,
              help="Demo customers to create (as input events through Kafka).")
@click.option("--trickle-rate", type=click.FloatRange(0, 1000), default=3.0, show_default=True,
              help="Live demo events per second once loaded (0: none).")
def dev(data_dir: Path, no_demo: bool, api_port: int, customers: int, trickle_rate: float) -> None:
    """Run everything locally: embedded broker, PostgreSQL and Redis, the worker and the API, a demo
    workspace with live events. Prints where everything is; Ctrl-C stops it all."""
    from rich.console import Console

    from .. import tracing
    from ..dev import DevOptions, run_dev
    from .main import load_settings, run_async

    _quiet_unless_asked()
    settings = load_settings()
    tracing.setup_from_env()
    options = DevOptions(
        data_dir=data_dir.resolve(), demo=not no_demo, api_port=api_port, customers=customers,
        trickle_rate=trickle_rate,
    )
    run_async(run_dev(options, settings, out=Console(), err=Console(stderr=True, soft_wrap=True)))


# Exit codes of `reconcile` (docs/OPERATIONS.md, README): drift and failure differ, so a cron job or
# a probe can tell "Redis was wrong" from "could not look".
EXIT_OK, EXIT_DRIFT, EXIT_FAILED = 0, 1, 2


@click.command()
@click.option("--check", is_flag=True, help="Only report: repair nothing, exit 1 when there is drift.")
@click.option("--workspace", "workspace_id", metavar="WS", help="Only this workspace's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print the drift report as one JSON object.")
def reconcile(check: bool, workspace_id: str | None, as_json: bool) -> None:
    """Compare every Redis segment set and opt-out set with PostgreSQL; repair and report the drift
    per key (exit 0), or with --check report only (exit 1 on drift). Exit 2: it could not run
    (configuration, PostgreSQL or Redis unreachable)."""
    from .main import fail, say

    try:
        report = _reconcile(check, workspace_id)
    except SegmentWorkerError as exc:
        fail(exc, EXIT_FAILED)
    scope = f"workspace {workspace_id!r}" if workspace_id else "all workspaces"
    if as_json:
        click.echo(json.dumps(_report_json(report, workspace_id, check)))
    elif not report.has_drift:
        say(f"no drift: {report.keys_checked} Redis keys of {scope} match PostgreSQL",
            keys_checked=report.keys_checked, drift=0)
    else:
        for line, d in zip(report.lines()[1:], report.drift, strict=True):
            say(line.strip(), key=d.key, missing=d.missing, extra=d.extra)
        verb = "repaired" if report.repaired else "found (nothing changed; run without --check to repair)"
        say(f"drift {verb} in {len(report.drift)} of {report.keys_checked} Redis keys of {scope}",
            keys_checked=report.keys_checked, drift=len(report.drift), repaired=report.repaired)
    if check and report.has_drift:
        raise click.exceptions.Exit(EXIT_DRIFT)


def _report_json(report: DriftReport, workspace_id: str | None, check: bool) -> dict[str, Any]:
    """``reconcile --json``: the drift report as one JSON object (counts and samples per key)."""
    return {
        "workspace": workspace_id,
        "check": check,
        "keys_checked": report.keys_checked,
        "drift": len(report.drift),
        "repaired": report.repaired,
        "keys": [
            {"key": d.key, "missing": d.missing, "extra": d.extra, "sample_missing": list(d.sample_missing),
             "sample_extra": list(d.sample_extra)}
            for d in report.drift
        ],
    }


def _reconcile(check: bool, workspace_id: str | None) -> DriftReport:
    """Run the comparison (and repair unless ``check``); our typed errors on failure."""
    import asyncpg
    from redis.exceptions import RedisError
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import budget
    from ..service.workspaces import check_workspace_id
    from ..stores import postgres as pg
    from ..stores.reconcile import rebuild_and_diff
    from ..stores.redis_client import connect_redis
    from .main import load_settings, run_async

    settings = load_settings()
    if not settings.database_url or not settings.redis_url:
        raise ConfigError("SEGMENT_WORKER_DATABASE_URL and SEGMENT_WORKER_REDIS_URL must be set to reconcile")
    if workspace_id is not None:
        check_workspace_id(workspace_id)
    database_url = settings.database_url
    err = Console(stderr=True)

    async def compare() -> DriftReport:
        pool = await pg.create_pool(database_url, min_size=1, max_size=budget.RECONCILE.postgres)
        try:
            redis = await connect_redis(settings, max_connections=budget.RECONCILE.redis_per_node)
        except BaseException:
            await pool.close()
            raise
        try:
            # A transient bar, on terminals only: what remains (and what a pipe gets) is the report.
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=err, transient=True,
                          disable=not err.is_terminal) as progress:
                task = progress.add_task("checking keys" if check else "reconciling keys", total=None)

                def advance(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                return await rebuild_and_diff(pool, redis, workspace_id, repair=not check, progress=advance)
        finally:
            await redis.aclose()
            await pool.close()

    try:
        return run_async(compare())
    except (OSError, asyncpg.CannotConnectNowError, RedisError) as exc:
        raise StoreUnavailable(f"cannot reach PostgreSQL or Redis: {exc}",
                               context={"operation": "reconcile"}) from exc
    except asyncpg.PostgresError as exc:
        raise SegmentWorkerError(f"reconcile failed: {exc}", retriable=False,
                                 context={"sqlstate": exc.sqlstate}) from exc
