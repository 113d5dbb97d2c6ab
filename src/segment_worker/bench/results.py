"""Results of a benchmark run: frozen records per measurement, the targets of the issue checked
against them, and the JSON document (``bench-results.json``). Pure."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MB = 1024 * 1024
# Phases ``bench --skip`` can leave out (the one-worker throughput run is always measured).
SKIPPABLE = frozenset(("latency", "rule-change", "ticks", "audience", "kafka-baseline", "upsert-baseline",
                       "recompute-baseline"))


@dataclass(frozen=True, slots=True)
class Summary:
    """Percentiles of a sample (seconds), None when there is no sample."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    mean: float | None


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of sorted values, nearest rank."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(values: Sequence[float]) -> Summary:
    """p50/p95/p99/max/mean of ``values``."""
    if not values:
        return Summary(0, None, None, None, None, None)
    s = sorted(values)
    return Summary(len(s), percentile(s, 50), percentile(s, 95), percentile(s, 99), s[-1], sum(s) / len(s))


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    """End-to-end: first record produced → last record's effects visible (PostgreSQL, Redis, output)."""

    workers: int
    events: int
    seconds: float
    events_per_second: float
    produce_seconds: float
    transitions: int
    timeline: tuple[tuple[float, int, int], ...]  # (seconds since start, processed, emitted)
    cpu_seconds: dict[str, float]
    batches: int = 0  # units of work the workers committed (their batch metrics)
    batch_seconds: float = 0.0  # their total wall time, from records in hand to offsets stored
    peak_rss: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """Produce → enter/exit CloudEvent consumed, at a fixed rate."""

    rate: float
    seconds: float
    events: int
    achieved_rate: float
    samples: int
    summary: Summary
    curve: tuple[float, ...]  # latency at percentiles 0..100
    kind: str = "requested"  # or "sub-saturation": half the measured one-worker throughput
    saturated: bool = False  # the rate is at or above what one worker sustains: queues grow
    batches: int = 0  # the workers' batches meanwhile, and their mean size and duration
    batch_records: float = 0.0
    batch_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RuleChangeStep:
    """One rule change: its transitions, when the call answered, when the last event was consumed."""

    entered: int
    exited: int
    api_seconds: float
    emitted_seconds: float


@dataclass(frozen=True, slots=True)
class RuleChangeResult:
    """Creating a ~10% segment and editing one to swap ~5% of the customers."""

    customers: int
    create: RuleChangeStep
    edit: RuleChangeStep


@dataclass(frozen=True, slots=True)
class TickResult:
    """Cost of the workers' ticks and the delay of time-driven flips."""

    tick_seconds: float
    time_relative_segments: int
    ticks: int
    mean_tick_seconds: float | None
    flip_rule: str
    flips: int
    flips_seen: int
    delay: Summary


@dataclass(frozen=True, slots=True)
class AudienceResult:
    """Union of five segments minus opted-out customers into a Redis set."""

    segments: tuple[str, ...]
    count: int
    seconds: float
    members_in: int


@dataclass(frozen=True, slots=True)
class Baseline:
    """One comparison point; ``skipped`` says why it was not measured."""

    name: str
    what: str
    events: int = 0
    seconds: float = 0.0
    per_second: float = 0.0
    unit: str = "events/s"
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A target of the issue and what this run measured (``met`` None: not measured)."""

    name: str
    goal: str
    measured: str
    met: bool | None


@dataclass(slots=True)
class Results:
    """Everything one run measured (filled as phases finish)."""

    machine: dict[str, Any]
    command: str
    options: dict[str, Any]
    seed: dict[str, Any] = field(default_factory=dict)
    throughput: list[ThroughputResult] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    rule_change: RuleChangeResult | None = None
    ticks: TickResult | None = None
    audience: AudienceResult | None = None
    baselines: list[Baseline] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase, in order

    def one_worker(self) -> ThroughputResult | None:
        """The single-worker throughput run, if measured."""
        return next((t for t in self.throughput if t.workers == 1), None)

    def baseline(self, name: str) -> Baseline | None:
        """A baseline by name, if run (measured or skipped)."""
        return next((b for b in self.baselines if b.name == name), None)

    def targets(self) -> list[Target]:
        """The targets of issue 17 (2 cores, ratios within this run) against this run: speed as
        ratios to baselines on the same machine and CPU per event, since the machine's speed
        varies by ±40% between sessions."""
        out = []
        one = self.one_worker()
        faust = self.baseline("faust")
        ratio = (one.events_per_second / faust.per_second
                 if one and faust and not faust.skipped and faust.per_second else None)
        out.append(_target("1 worker vs faust agent", "≥ 1.2×", ratio, lambda v: v >= 1.2, "{:.2f}×"))
        upsert = self.baseline("pg-upsert")
        share = (one.events_per_second / upsert.per_second
                 if one and upsert and not upsert.skipped and upsert.per_second else None)
        out.append(_target("1 worker vs batched upsert ceiling", "≥ 40%", share, lambda v: v >= 0.4,
                           "{:.0%}"))
        for who, limit in (("postgres", 75), ("workers", 100)):
            name = "PostgreSQL" if who == "postgres" else "worker"
            cpu = one.cpu_seconds.get(who) if one else None
            value = cpu / one.events * 1e6 if one and cpu is not None and one.events else None
            out.append(_target(f"{name} CPU per event, 1 worker", f"≤ {limit} µs", value,
                               lambda v, g=limit: v <= g, "{:.0f} µs"))
        for lat in self.latency:
            goal = f"≤ 250 ms at {lat.rate:,.0f}/s"
            if lat.saturated:
                goal += " (above what 1 worker sustains)"
            name = "latency p99" if lat.kind == "requested" else "latency p99, sub-saturation"
            out.append(_target(name, goal, lat.summary.p99, lambda v: v <= 0.25, "{:.3f} s"))
        if not self.latency:
            out.append(_target("latency p99", "≤ 250 ms", None, bool, ""))
        rc = self.rule_change
        worst = max(rc.create.emitted_seconds, rc.edit.emitted_seconds) if rc else None
        goal = "≤ 5 s over 1M customers"
        if rc:
            goal += f" (measured over {rc.customers:,})"
        out.append(_target("rule change", goal, worst, lambda v: v <= 5, "{:.2f} s"))
        flip = self.ticks.delay.max if self.ticks else None
        out.append(_target("time flips visible", "≤ 1 s", flip, lambda v: v <= 1, "{:.2f} s"))
        rss = max((max(t.peak_rss) for t in self.throughput if t.peak_rss), default=None)
        customers = self.options.get("customers", 0)
        out.append(_target("worker RSS", f"≤ 1 GB at 1M customers (measured at {customers:,})",
                           rss / MB if rss else None, lambda v: v <= 1024, "{:.0f} MB"))
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document of everything, targets included."""
        doc = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        doc["targets"] = [_plain(t) for t in self.targets()]
        return doc


def _target(name: str, goal: str, value: float | None, ok: Any, fmt: str) -> Target:
    if value is None:
        return Target(name, goal, "not measured", None)
    return Target(name, goal, fmt.format(value), bool(ok(value)))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value
