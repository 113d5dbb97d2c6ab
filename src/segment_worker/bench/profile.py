"""Where a profiled worker's time went: a pyinstrument session (the worker ran under
``python -m pyinstrument -r session``) summarised as self time per package/module and per
function, plus pyinstrument's own call tree as text."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SITE = re.compile(r"site-packages/([A-Za-z0-9_]+)")
_OURS = re.compile(r"segment_worker/([A-Za-z0-9_/]+)\.py")


IDLE = "idle: waiting for I/O (PostgreSQL, Redis, Kafka)"


def bucket(file_path: str, function: str) -> str:
    """The package (or our module) a frame belongs to; waiting in the event loop's poll is idle."""
    if function.rsplit(".", 1)[-1] in ("select", "poll") or file_path.endswith("selectors.py"):
        return IDLE
    if file_path.startswith("<segment-rule>"):
        return "segment_worker.rules (generated predicates)"
    if file_path.startswith("<string>"):
        return "generated code (dataclass __init__)"
    if m := _OURS.search(file_path):
        return "segment_worker." + m.group(1).replace("/", ".")
    if m := _SITE.search(file_path):
        return m.group(1)
    if "asyncio" in file_path:
        return "asyncio (event loop)"
    return "python stdlib"


def _self_times(frame: Any, owner: Any = None) -> Iterator[tuple[Any, Any, float]]:
    """(frame, owner, self seconds) of every frame with self time (pyinstrument keeps it in
    synthetic ``[self]`` children). ``owner`` is the nearest frame that is not a C built-in, so
    e.g. ``orjson.loads`` counts for the module that called it."""
    here = owner if (frame.file_path or "") == "<built-in>" and owner is not None else frame
    for child in frame.children:
        if child.is_synthetic:
            yield frame, here, float(child.time)
        else:
            yield from _self_times(child, here)


def _top(times: dict[str, float], total: float, n: int) -> list[tuple[str, float, float]]:
    ranked = sorted(times.items(), key=lambda kv: -kv[1])[:n]
    return [(name, round(s, 3), round(s / total, 4)) for name, s in ranked]


def summarize_profile(session_file: Path, text_out: Path, top: int = 25) -> dict[str, Any]:
    """Summarise a saved pyinstrument session; writes its call tree to ``text_out``."""
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    session = Session.load(str(session_file))
    root = session.root_frame()
    text_out.write_text(ConsoleRenderer(unicode=False, color=False, show_all=False).render(session))
    if root is None:
        return {"duration": session.duration, "cpu_time": session.cpu_time, "by_package": [], "functions": []}
    packages: defaultdict[str, float] = defaultdict(float)
    functions: defaultdict[str, float] = defaultdict(float)
    for frame, owner, seconds in _self_times(root):
        packages[bucket(owner.file_path or "", frame.function or "")] += seconds
        functions[f"{frame.function} ({frame.file_path_short}:{frame.line_no})"] += seconds
    idle = packages.pop(IDLE, 0.0)
    busy = sum(packages.values()) or 1.0
    functions.pop("epoll.poll (<built-in>:0)", None)
    return {
        "duration": session.duration,
        "cpu_time": session.cpu_time,
        "idle_seconds": round(idle, 3),
        "busy_seconds": round(busy, 3),
        # Shares of the busy (non-idle) time: the worker's whole life is profiled, including the
        # waits before the first and after the last record.
        "by_package": _top(packages, busy, top),
        "functions": _top(functions, busy, top),
    }
