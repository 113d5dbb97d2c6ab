"""The ``segment-worker`` command line (CONTRACT §9).

Adding a command is one decorated function: ``@main.command()``. Import heavy modules (API,
worker) inside the function so that e.g. ``segment-worker migrate`` stays quick. Raise our typed
errors (``segment_worker.errors``); the group prints them as one ``error:`` line and exits 1.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click
import pydantic

from .. import logs, tracing
from ..config import Settings
from ..errors import ConfigError, NotFound, SegmentWorkerError, StoreUnavailable
from ..timeutil import format_ms

T = TypeVar("T")


class _Group(click.Group):
    """Turns our errors into a clean message and exit status 1 (no traceback); with JSON logs the
    message is one JSON log line (level ERROR, with the error's code and context)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SegmentWorkerError as exc:
            fail(exc, 1)


def fail(exc: SegmentWorkerError, exit_code: int) -> NoReturn:
    """Report ``exc`` as one ``Error: …`` line on stderr (with JSON logs, one JSON log line at level
    ERROR with the error's code and context) and exit with ``exit_code``."""
    hint = " (temporary: retrying may help)" if exc.retriable else ""
    if logs.log_format() == "json":
        log = logging.getLogger("segment_worker.cli")
        log.error("%s%s", exc.message, hint, extra={"error": exc.to_dict()})
        raise click.exceptions.Exit(exit_code) from exc
    # click prints "Error: <message>" and exits with the class's exit_code.
    failure = type("CommandFailed", (click.ClickException,), {"exit_code": exit_code})
    raise failure(f"{exc.message}{hint}") from exc


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit values (e.g. CLI options) taking precedence."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"SEGMENT_WORKER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc


def say(message: str, **fields: Any) -> None:
    """One line of a command's report on stdout: as is, or with JSON logs one JSON object (logger
    ``segment_worker.cli``, level INFO, ``fields`` added), so every line the process writes parses."""
    if logs.log_format() == "json":
        click.echo(logs.json_line("segment_worker.cli", message, **fields))
    else:
        click.echo(message)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion (Ctrl-C cancels it cleanly)."""
    return asyncio.run(coro)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="segment-worker")
@click.option("--log-level", default="INFO", show_default=True, envvar="SEGMENT_WORKER_LOG_LEVEL",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, envvar="SEGMENT_WORKER_LOG_FORMAT",
              type=click.Choice(logs.FORMATS, case_sensitive=False),
              help="text, or json: one JSON object per line (every log line, uvicorn's included).")
def main(log_level: str, log_format: str) -> None:
    """Real-time customer segments: Kafka events in, PostgreSQL + Redis + CloudEvents out."""
    logs.configure("json" if log_format.lower() == "json" else "text", log_level)


@main.command()
@click.option("--database-url", help="PostgreSQL DSN (default: $SEGMENT_WORKER_DATABASE_URL).")
@click.option("--status", "show_status", is_flag=True,
              help="Apply nothing: list the applied migrations (with when) and the pending ones.")
def migrate(database_url: str | None, show_status: bool) -> None:
    """Apply pending PostgreSQL migrations (Kafka topics are created by the worker)."""
    import asyncpg

    from ..migrate import available, status
    from ..migrate import migrate as apply_migrations

    settings = load_settings(database_url=database_url)
    if not settings.database_url:
        raise ConfigError("SEGMENT_WORKER_DATABASE_URL is not set (a PostgreSQL DSN, e.g. "
                          "postgresql://user:password@host:5432/dbname)")
    try:
        if show_status:
            report = run_async(status(settings.database_url))
            for name, at in report.applied:
                say(f"applied {name} at {format_ms(at)}", migration=name, state="applied",
                    applied_at=format_ms(at))
            for name in report.pending:
                say(f"pending {name}", migration=name, state="pending")
            for name in report.unknown:
                say(f"unknown {name} (applied by a newer release)", migration=name, state="unknown")
            say(f"{len(report.applied)} applied, {len(report.pending)} pending", applied=len(report.applied),
                pending=len(report.pending))
            return
        applied = run_async(apply_migrations(settings.database_url))
    except (OSError, asyncpg.CannotConnectNowError) as exc:
        raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}", context={"operation": "migrate"}) from exc
    except asyncpg.PostgresError as exc:
        raise SegmentWorkerError(f"migration failed: {exc}", retriable=False,
                                 context={"sqlstate": exc.sqlstate}) from exc
    for name in applied:
        say(f"applied {name}", migration=name)
    latest = available()[-1].name if available() else "none"
    if applied:
        say(f"database migrated to {latest} ({len(applied)} applied)", latest=latest, applied=len(applied))
    else:
        say(f"database is up to date ({latest}); nothing applied", latest=latest, applied=0)


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def schemas(args: tuple[str, ...]) -> None:
    """Write the JSON Schemas of the Kafka contract to schemas/ (--check: verify only; --help)."""
    try:
        schemas_gen: Any = importlib.import_module("segment_worker.schemas_gen")
    except ModuleNotFoundError as exc:
        if exc.name != "segment_worker.schemas_gen":
            raise
        raise ConfigError("segment_worker.schemas_gen is not available in this build") from exc
    status = schemas_gen.main(list(args))
    if isinstance(status, int) and status:
        raise click.exceptions.Exit(status)


@main.command()
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus metrics on this port (/metrics).")
@click.option("--max-records", type=click.IntRange(1, 100_000), default=2000, show_default=True,
              help="Records per batch at most.")
@click.option("--session-timeout-ms", type=click.IntRange(1000), default=10_000, show_default=True,
              help="Consumer group session timeout: how soon a dead worker's partitions move.")
@click.option("--lanes", type=click.IntRange(1, 32), default=None,
              help="Consumers in this process, each on its own partitions, so one computes while "
                   "another waits on PostgreSQL [default: SEGMENT_WORKER_LANES or 2].")
def run(metrics_port: int | None, max_records: int, session_timeout_ms: int, lanes: int | None) -> None:
    """Run the consumer worker until SIGINT/SIGTERM (run several for scale-out)."""
    from ..worker.lanes import run_until_signalled
    from ..worker.loop import WorkerOptions

    settings = load_settings()
    if not settings.database_url or not settings.redis_url:
        raise ConfigError("SEGMENT_WORKER_DATABASE_URL and SEGMENT_WORKER_REDIS_URL must be set to run "
                          "the worker")
    if lanes is not None:
        settings = settings.model_copy(update={"lanes": lanes})
    options = WorkerOptions(max_records=max_records, session_timeout_ms=session_timeout_ms,
                            heartbeat_interval_ms=max(300, session_timeout_ms // 4))
    tracing.setup_from_env()  # the otel extra, when OTEL_* variables ask for an exporter
    run_async(run_until_signalled(settings, options=options, metrics_port=metrics_port))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="Port to listen on.")
def api(host: str, port: int) -> None:
    """Serve the HTTP API (OpenAPI at /docs) until SIGINT/SIGTERM."""
    import uvicorn

    from ..api import create_app

    settings = load_settings()
    if not settings.database_url or not settings.redis_url:
        raise ConfigError("SEGMENT_WORKER_DATABASE_URL and SEGMENT_WORKER_REDIS_URL must be set to serve "
                          "the API")
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    tracing.setup_from_env()
    uvicorn.run(create_app(settings), host=host, port=port, log_level=level, server_header=False,
                **logs.uvicorn_options(level))


@main.group()
def tokens() -> None:
    """API bearer tokens (stored only as SHA-256 hashes)."""


@tokens.command("create")
@click.option("--workspace", required=True, metavar="WS", help="The workspace the token may use ('*' = all).")
def tokens_create(workspace: str) -> None:
    """Create a token for WS; the token alone is the last line printed (it cannot be shown again)."""
    from ..service.tokens import create_token
    from ..stores import postgres as pg

    settings = load_settings()
    if not settings.database_url:
        raise ConfigError("SEGMENT_WORKER_DATABASE_URL is not set (a PostgreSQL DSN)")
    dsn = settings.database_url

    async def create() -> str:
        try:
            conn = await pg.connect(dsn)
        except OSError as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}",
                                   context={"operation": "tokens create"}) from exc
        try:
            return await create_token(conn, workspace)
        finally:
            await conn.close()

    token = run_async(create())
    scope = "every workspace" if workspace == "*" else f"workspace {workspace}"
    say(f"created an API token for {scope}; keep it now, it is stored only as a hash:", workspace=workspace)
    click.echo(token)  # alone on the last line (CONTRACT §9), also with JSON logs: scripts read it


def _database_url() -> str:
    settings = load_settings()
    if not settings.database_url:
        raise ConfigError("SEGMENT_WORKER_DATABASE_URL is not set (a PostgreSQL DSN)")
    return settings.database_url


async def _with_connection(operation: str, body: Callable[[Any], Awaitable[T]]) -> T:
    import asyncpg

    from ..stores import postgres as pg

    try:
        conn = await pg.connect(_database_url())
    except OSError as exc:
        raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}", context={"operation": operation}) from exc
    try:
        return await body(conn)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
        raise ConfigError(f"the database schema is older than this release ({exc}): run segment-worker "
                          "migrate", context={"operation": operation}) from exc
    finally:
        await conn.close()


@tokens.command("list")
@click.option("--workspace", metavar="WS", help="Only the tokens of WS (and those for every workspace).")
def tokens_list(workspace: str | None) -> None:
    """List stored tokens: id, workspace ('*' = all) and creation time — never a token or its hash."""
    from ..service.tokens import list_tokens

    found = run_async(_with_connection("tokens list", lambda conn: list_tokens(conn, workspace)))
    if logs.log_format() == "json":
        for t in found:
            say(f"token {t.id}", id=t.id, workspace=t.workspace_id, created_at=format_ms(t.created_at))
        return
    width = max([len("WORKSPACE"), *(len(t.workspace_id) for t in found)])
    click.echo(f"{'ID':>6}  {'WORKSPACE':<{width}}  CREATED")
    for t in found:
        click.echo(f"{t.id:>6}  {t.workspace_id:<{width}}  {format_ms(t.created_at)}")


@tokens.command("revoke")
@click.argument("token_id", type=click.IntRange(1), metavar="ID")
def tokens_revoke(token_id: int) -> None:
    """Delete the stored token ID (from `tokens list`): requests with it get 401 at once."""
    from ..service.tokens import revoke_token

    revoked = run_async(_with_connection("tokens revoke", lambda conn: revoke_token(conn, token_id)))
    if revoked is None:
        raise NotFound(f"no stored token has id {token_id} (see: segment-worker tokens list)",
                       context={"id": token_id})
    created = format_ms(revoked.created_at)
    say(f"revoked token {revoked.id} (workspace {revoked.workspace_id}, created {created})",
        id=revoked.id, workspace=revoked.workspace_id)


from .ops import dev, reconcile  # noqa: E402  (commands of other modules, registered last)

main.add_command(dev)
main.add_command(reconcile)

from ..bench.command import bench  # noqa: E402

main.add_command(bench)

if __name__ == "__main__":
    main()
