"""What ``segment-worker dev`` tells its user: where everything is, copy-paste curl commands, and
(on a terminal) the demo segments' member counts as they move."""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..service.context import ServiceContext
from ..service.segments import Segment, list_segments
from . import demo


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Addresses of everything ``dev`` runs."""

    api_url: str
    token: str
    kafka_bootstrap: str
    input_topic: str
    output_topic: str
    database_url: str
    redis_url: str
    worker_pid: int | None
    worker_metrics_url: str
    logs_dir: Path
    data_dir: Path


def curl_examples(api_url: str, token: str, workspace: str, segment: Segment | None) -> list[str]:
    """Three commands: list segments, members of one, create one (each preceded by a comment)."""
    base = f"{api_url}/v1/workspaces/{workspace}"
    auth = shlex.quote(f"Authorization: Bearer {token}")
    if segment is not None:
        members_comment = f"# the first members of {segment.name!r}"
        members_url = f"{base}/segments/{segment.id}/members?limit=5"
    else:
        members_comment = "# the first members of a segment (put a segment id from the list)"
        members_url = f"{base}/segments/SEGMENT_ID/members?limit=5"
    body = json.dumps(demo.EXAMPLE_SEGMENT, separators=(",", ":"))
    listing = [
        f"# the segments of workspace {workspace!r}, with member counts",
        f"curl -s -H {auth} {shlex.quote(base + '/segments')}",
    ]
    members = [members_comment, f"curl -s -H {auth} {shlex.quote(members_url)}"]
    create = [
        "# create a dynamic segment (its members are computed before the answer)",
        f"curl -s -X POST -H {auth} -H 'Content-Type: application/json' -d {shlex.quote(body)}"
        f" {shlex.quote(base + '/segments')}",
    ]
    # Without the demo there is nothing to list yet: creating comes first.
    return listing + members + create if segment is not None else create + listing + members


def summary_lines(
    e: Endpoints, *, workspace: str, segments: Sequence[Segment], demo_loaded: bool, trickle_rate: float
) -> list[str]:
    """The block printed once everything runs (plain lines: nothing is wrapped, so each stays
    copy-pasteable)."""
    token_scope = "all workspaces"
    lines = [
        "",
        "segment-worker dev is running. Ctrl-C stops everything.",
        "",
        f"  API          {e.api_url}",
        f"  API docs     {e.api_url}/docs",
        f"  Console      {e.api_url}/console   (paste the API token; workspace {workspace!r})",
        f"  API token    {e.token}   ({token_scope})",
        f"  Kafka        {e.kafka_bootstrap}   (in: {e.input_topic}, out: {e.output_topic})",
        f"  PostgreSQL   {e.database_url}",
        f"  Redis        {e.redis_url}",
        f"  Worker       pid {e.worker_pid}, metrics {e.worker_metrics_url}",
        f"  Logs         {e.logs_dir}",
        f"  Data         {e.data_dir}   (PostgreSQL data is kept; the broker and Redis start empty)",
        "",
    ]
    if demo_loaded:
        live = f"live events at {trickle_rate:g}/s" if trickle_rate > 0 else "no live events"
        lines.append(f"Demo workspace {workspace!r} ({demo.DEMO_TIMEZONE}), {live}. Segments (members now):")
        width = max((len(s.name) for s in segments), default=0)
        lines += [f"  {s.name.ljust(width)}  {s.type:<7}  {s.member_count:>6}" for s in segments]
        lines.append("")
    first = next((s for s in segments if s.name == demo.SEGMENTS[0]["name"]), None)
    lines.append("Try it:")
    lines += [f"  {line}" for line in curl_examples(e.api_url, e.token, workspace, first)]
    lines.append("")
    return lines


def _table(segments: Sequence[Segment], sent: int) -> Table:
    table = Table(title=f"Demo segments, live ({sent} live events sent)", title_justify="left")
    table.add_column("segment")
    table.add_column("type")
    table.add_column("members", justify="right")
    for s in segments:
        table.add_row(s.name, s.type, str(s.member_count))
    return table


async def live_counts(
    ctx: ServiceContext, console: Console, workspace: str, sent: Callable[[], int], every: float = 2.0
) -> None:
    """Redraw the workspace's member counts every ``every`` seconds until cancelled (terminals)."""
    segments = (await list_segments(ctx, workspace, limit=100)).items
    with Live(_table(segments, sent()), console=console, auto_refresh=False) as live:
        while True:
            await asyncio.sleep(every)
            segments = (await list_segments(ctx, workspace, limit=100)).items
            live.update(_table(segments, sent()), refresh=True)
