"""The PNG chart of a run: throughput over time (each worker count, with the faust baseline's
mean as a line) and the latency distribution at the fixed rate with its percentiles. Needs
matplotlib (the ``bench`` extra); without it no chart is drawn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .results import Results


def chart_available() -> bool:
    """Whether matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


Timeline = tuple[tuple[float, int, int], ...]


def _rates(timeline: Timeline, window: float = 5.0) -> tuple[list[float], list[float]]:
    """Events/s over a sliding ``window`` from cumulative (t, processed, emitted) samples."""
    xs: list[float] = []
    ys: list[float] = []
    j = 0
    for i, (t, done, _) in enumerate(timeline):
        while j < i and timeline[j][0] < t - window:
            j += 1
        if i > j and t > timeline[j][0]:
            xs.append(t)
            ys.append((done - timeline[j][1]) / (t - timeline[j][0]))
    return xs, ys


def write_chart(results: Results, path: Path) -> bool:
    """Draw the chart into ``path``; False when matplotlib is missing or nothing was measured."""
    if not chart_available() or not results.throughput:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for tp in results.throughput:
        xs, ys = _rates(tp.timeline)
        label = f"{tp.workers} worker{'s' if tp.workers > 1 else ''}: {tp.events_per_second:,.0f}/s overall"
        ax1.plot(xs, ys, label=label)
    faust = results.baseline("faust")
    if faust is not None and not faust.skipped:
        ax1.axhline(faust.per_second, color="grey", linestyle="--",
                    label=f"faust agent (mean): {faust.per_second:,.0f}/s")
    # Workers commit a batch (up to 2,000 records) every second or two: a 5 s window smooths that.
    ax1.set_title("end-to-end throughput (committed input records, 5 s window)")
    ax1.set_xlabel("seconds since the first record was produced")
    ax1.set_ylabel("events/s")
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower right", fontsize=8)

    if results.latency:
        for lat in results.latency:
            if not lat.curve:
                continue
            ms = [v * 1000 for v in lat.curve]
            p = lat.summary
            state = " (saturated)" if lat.saturated else ""
            label = (f"{lat.rate:,.0f}/s{state}: p50 {(p.p50 or 0) * 1000:,.0f}"
                     f" · p95 {(p.p95 or 0) * 1000:,.0f} · p99 {(p.p99 or 0) * 1000:,.0f}"
                     f" · max {(p.max or 0) * 1000:,.0f} ms")
            ax2.plot(ms, range(len(ms)), label=label)
        ax2.set_xscale("log")
        ax2.set_title("latency: produce → enter/exit CloudEvent consumed")
        ax2.set_xlabel("milliseconds (log scale)")
        ax2.set_ylabel("percentile")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(loc="lower right", fontsize=8)
    else:
        ax2.set_axis_off()
    m = results.machine
    fig.suptitle(f"segment-worker bench · {results.options.get('customers', 0):,} customers, "
                 f"{results.options.get('segments', 0)} segments · {m.get('cores')} cores, "
                 f"load {m.get('load_average_at_start', ['?'])[0]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
