"""``segment-worker bench``: the click command (registered on the CLI group in ``cli/main.py``)."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import click

from .results import SKIPPABLE
from .workload import MIXES, WorkloadSpec


@click.command()
@click.option("--customers", type=click.IntRange(10), default=100_000, show_default=True,
              help="Customers seeded in the workspace.")
@click.option("--segments", type=click.IntRange(5, 500), default=200, show_default=True,
              help="Dynamic segments (a tenth time-relative, at most 20).")
@click.option("--events", type=click.IntRange(1), default=100_000, show_default=True,
              help="Change events of the throughput runs (the issue's full workload: 1000000).")
@click.option("--rate", type=click.FloatRange(1), default=2000.0, show_default=True,
              help="Events/s of the latency measurement (keep it below saturation).")
@click.option("--latency-seconds", type=click.FloatRange(1), default=20.0, show_default=True,
              help="How long the latency measurement produces.")
@click.option("--workers", "scale_workers", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Workers of the scale-out run (1: no scale-out run).")
@click.option("--partitions", type=click.IntRange(1, 256), default=12, show_default=True,
              help="Partitions of the input topic.")
@click.option("--tick-seconds", type=click.FloatRange(0.2), default=5.0, show_default=True,
              help="The workers' SEGMENT_WORKER_TICK_SECONDS.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the workload generator.")
@click.option("--workload", "mix", type=click.Choice(sorted(MIXES)), default="churn", show_default=True,
              help="The event mix: churn (churn-heavy, ~2 transitions per event) or typical (mostly "
                   "interactions and attribute updates, ~0.2 transitions per event).")
@click.option("--no-faust", is_flag=True, help="Skip the faust-streaming baseline.")
@click.option("--profile", is_flag=True,
              help="Also run one worker under pyinstrument and report where its time goes.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results.json"),
              show_default=True, help="Results as JSON.")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-chart.png"),
              show_default=True, help="Throughput and latency chart (PNG; needs the bench extra).")
@click.option("--keep", is_flag=True,
              help="Keep the bench's databases on a given PostgreSQL server (embedded servers always stop).")
@click.option("--skip", "skip", multiple=True, type=click.Choice(sorted(SKIPPABLE)),
              help="Leave a phase out (repeatable), e.g. the 485 s full recompute at 1M customers.")
def bench(customers: int, segments: int, events: int, rate: float, latency_seconds: float, scale_workers: int,
          partitions: int, tick_seconds: float, seed: int, mix: str, no_faust: bool, profile: bool,
          output: Path, chart: Path, keep: bool, skip: tuple[str, ...]) -> None:
    """Benchmark the worker against its baselines on the embedded stack (or on the servers named by
    SEGMENT_WORKER_KAFKA_BOOTSTRAP / _DATABASE_URL / _REDIS_URL, in databases of its own): end-to-end
    throughput with one and several workers, latency at a fixed rate, rule changes, time ticks,
    an audience, worker memory; raw Kafka, PostgreSQL upsert, faust and batch-SQL baselines."""
    import json

    from rich.console import Console

    from ..cli.main import run_async
    from .chart import chart_available, write_chart
    from .report import RichUi, results_table, targets_table
    from .runner import BenchOptions, run_bench

    parent = click.get_current_context().parent
    source = parent.get_parameter_source("log_level") if parent is not None else None
    if source in (None, click.core.ParameterSource.DEFAULT):
        logging.getLogger().setLevel(logging.WARNING)  # the table is the output
    options = BenchOptions(
        spec=WorkloadSpec(customers=customers, segments=segments, events=events, seed=seed, mix=mix),
        rate=rate, latency_seconds=latency_seconds, partitions=partitions, tick_seconds=tick_seconds,
        scale_workers=scale_workers, faust=not no_faust, profile=profile, output=output, chart=chart,
        profile_output=output.with_name("bench-profile.txt"), keep=keep, skip=frozenset(skip),
    )
    console = Console()
    command = "segment-worker " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with RichUi(console) as ui:
        results = run_async(run_bench(options, ui, command))
    drawn = write_chart(results, chart)
    output.write_text(json.dumps(results.to_json(), indent=2) + "\n")
    console.print(results_table(results))
    console.print(targets_table(results))
    console.print(f"results: {output}")
    if drawn:
        console.print(f"chart: {chart}")
    elif not chart_available():
        console.print("chart: skipped (install .[bench] for matplotlib)", markup=False)
    if results.profile and "tree" in results.profile:
        console.print(f"profile: {results.profile['tree']}")
