"""The bench on a terminal: a results table that fills in as phases finish, under a progress bar
(rich), and the targets of the issue checked at the end."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .results import MB, Baseline, Results, Summary
from .runner import Ui


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:,.0f} ms"


def _lat(s: Summary) -> str:
    if not s.count:
        return "no samples"
    return f"p50 {_ms(s.p50)} · p95 {_ms(s.p95)} · p99 {_ms(s.p99)} · max {_ms(s.max)}"


def _baseline(b: Baseline) -> tuple[str, str, str]:
    if b.skipped:
        return f"baseline: {b.name}", escape(b.skipped), b.what
    value = f"{b.per_second:,.0f} {b.unit}"
    if b.name == "batch-sql":
        return (f"baseline: {b.name}", f"{b.seconds:,.1f} s per full refresh",
                f"{b.what}; {b.extra.get('memberships', 0):,} memberships")
    elif b.name == "pg-upsert":
        value += f" ({b.extra.get('rows_per_second', 0):,.0f} rows/s)"
    return f"baseline: {b.name}", value, f"{b.what}; {b.events:,} events in {b.seconds:,.1f} s"


def results_table(r: Results) -> Table:
    """Every measurement so far, one row each."""
    t = Table(title="segment-worker bench", show_lines=False, expand=False)
    t.add_column("measurement", style="bold")
    t.add_column("result", justify="right")
    t.add_column("detail", style="dim")
    if r.seed:
        s = r.seed
        mix = r.options.get("mix", "churn")
        t.add_row("workload", f"{s['customers']:,} customers · {s['segments']} segments · {mix} mix",
                  f"{s['memberships']:,} memberships seeded in {s['customers_seconds']:,.0f} s")
    for tp in r.throughput:
        cores = {k: v / tp.seconds for k, v in tp.cpu_seconds.items() if v > 0.05 * tp.seconds}
        t.add_row(f"end-to-end, {tp.workers} worker{'s' if tp.workers > 1 else ''}",
                  f"{tp.events_per_second:,.0f} events/s",
                  f"{tp.events:,} events in {tp.seconds:,.1f} s, {tp.transitions:,} transitions, "
                  f"{tp.batches:,} batches; cores: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cores.items(), key=lambda kv: -kv[1])))
    for lat in r.latency:
        note = " — above what 1 worker sustains: queueing" if lat.saturated else ""
        note = " — sub-saturation (half the 1-worker throughput)" if lat.kind != "requested" else note
        t.add_row(f"latency at {lat.rate:,.0f}/s", _lat(lat.summary),
                  f"{lat.samples:,} CloudEvents from {lat.events:,} events"
                  f" ({lat.achieved_rate:,.0f}/s sent); {lat.batches:,} batches of"
                  f" {lat.batch_records:,.0f} records, {lat.batch_seconds * 1000:,.0f} ms each{note}")
    if r.rule_change:
        rc = r.rule_change
        steps = (("rule change: create ~10%", rc.create), ("rule change: edit, swap ~5%", rc.edit))
        for label, step in steps:
            t.add_row(label, f"{step.emitted_seconds:,.2f} s",
                      f"+{step.entered:,} −{step.exited:,}; call answered after {step.api_seconds:,.2f} s")
    if r.ticks:
        tk = r.ticks
        cost = "–" if tk.mean_tick_seconds is None else f"{tk.mean_tick_seconds * 1000:,.0f} ms"
        t.add_row("tick cost", cost, f"mean of {tk.ticks} ticks, {tk.time_relative_segments} time-relative "
                  f"segments, every {tk.tick_seconds:g} s")
        t.add_row("time flip visible after", _ms(tk.delay.max).replace(" ms", " ms max"),
                  f"{tk.flips_seen}/{tk.flips} flips; p50 {_ms(tk.delay.p50)}")
    if r.audience:
        a = r.audience
        t.add_row("audience: 5 segments − opt-outs", f"{a.seconds * 1000:,.0f} ms",
                  f"{a.count:,} customers from {a.members_in:,} memberships")
    peaks = [max(tp.peak_rss) for tp in r.throughput if tp.peak_rss]
    if peaks:
        t.add_row("worker peak RSS", f"{max(peaks) / MB:,.0f} MB", "VmHWM of each worker process")
    for b in r.baselines:
        t.add_row(*_baseline(b))
    if r.profile and "skipped" in r.profile:
        t.add_row("profile (1 worker)", escape(r.profile["skipped"]), "")
    elif r.profile:
        top = ", ".join(f"{n} {share:.0%}" for n, _, share in r.profile.get("by_package", [])[:4])
        t.add_row("profile (1 worker)", f"{r.profile['events_per_second']:,.0f} events/s profiled", top)
    return t


def targets_table(r: Results) -> Table:
    """The issue's targets: met, missed, or not measured."""
    t = Table(title="targets (2 cores)")
    for col in ("target", "goal", "measured", ""):
        t.add_column(col)
    for tg in r.targets():
        mark = "[green]met[/]" if tg.met else "[red]missed[/]" if tg.met is False else "[yellow]n/a[/]"
        t.add_row(tg.name, tg.goal, tg.measured, mark)
    return t


class RichUi(Ui):
    """Progress bar and live results table on ``console`` (plain output when not a terminal)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._results: Results | None = None
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description:<40}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self._task: TaskID | None = None
        self._live = Live(self._render(), console=console, refresh_per_second=4, transient=True)

    def _render(self) -> Group:
        parts: list[Table | Progress] = []
        if self._results is not None:
            parts.append(results_table(self._results))
        parts.append(self._progress)
        return Group(*parts)

    def phase(self, name: str, total: int | None = None) -> Callable[[int, int | None], None]:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = task = self._progress.add_task(name, total=total)
        if not self.console.is_terminal:
            self.console.print(f"· {name}")

        def update(done: int, of: int | None) -> None:
            self._progress.update(task, completed=done, total=of)

        return update

    def updated(self, results: Results) -> None:
        self._results = results
        self._live.update(self._render())

    def __enter__(self) -> RichUi:
        if self.console.is_terminal:
            self._live.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.console.is_terminal:
            self._live.stop()
