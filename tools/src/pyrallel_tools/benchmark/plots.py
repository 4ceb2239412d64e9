"""PNG plots of ``pyrallel bench`` results: throughput against the number of keys, and latency CDFs.

matplotlib's Agg canvas is used directly (no pyplot, no display); importing this module needs matplotlib (the
``report`` extra), which the runner treats as optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pyrallel_tools.benchmark.results import WORKLOAD_TITLES, BenchReport


def _name(report: BenchReport, contender_id: str) -> str:
    return next((c.name for c in report.contenders if c.id == contender_id), contender_id)


_MARKERS = {"key": "o", "partition": "s", "unordered": "^", "": "D"}


def _style(report: BenchReport, contender_id: str) -> dict[str, Any]:
    """This library: thick solid lines; references: dotted; peers: dashed. One colour per contender (tab20),
    one marker per ordering."""
    ids = [c.id for c in report.contenders]
    info = next((c for c in report.contenders if c.id == contender_id), None)
    family, ordering = (info.family, info.ordering) if info else ("peer", "")
    from matplotlib import colormaps

    color = colormaps["tab20"]((ids.index(contender_id) if contender_id in ids else 0) % 20)
    style: dict[str, Any] = {"color": color, "marker": _MARKERS.get(ordering, "D")}
    if family == "pyrallel":
        return {**style, "linewidth": 2.6, "linestyle": "-"}
    if family == "reference":
        return {**style, "linewidth": 1.4, "linestyle": ":"}
    return {**style, "linewidth": 1.4, "linestyle": "--"}


def _legend_below(ax: Any, columns: int = 2) -> None:
    ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=columns, frameon=False)


def throughput_figure(report: BenchReport, path: Path) -> Path | None:
    """One panel per workload: records/s (log scale) per contender; against the keys where several were measured,
    as bars where only one was."""
    workloads = [w for w in WORKLOAD_TITLES if any(m.workload == w for m in report.throughput)]
    if not workloads:
        return None
    fig = Figure(figsize=(7.5 * len(workloads), 8.5), dpi=100)
    FigureCanvasAgg(fig)
    for i, workload in enumerate(workloads, start=1):
        ax = fig.add_subplot(1, len(workloads), i)
        cells = [m for m in report.throughput if m.workload == workload and not m.error and m.counted]
        keys = sorted({m.keys for m in cells})
        contenders = list(dict.fromkeys(m.contender for m in cells))
        if len(keys) > 1:
            for contender_id in contenders:
                points = sorted((m.keys, m.records_per_s) for m in cells if m.contender == contender_id)
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                ax.plot(xs, ys, label=_name(report, contender_id), **_style(report, contender_id))
            ax.set_xscale("log")
            ax.set_xticks(keys, [f"{k:,}" for k in keys])
            ax.set_xlabel("distinct keys in the topic")
            ax.set_yscale("log")
            ax.set_ylabel("records/s (first to last handled record)")
            _legend_below(ax)
        else:
            rates = [next(m.records_per_s for m in cells if m.contender == c) for c in contenders]
            bars = ax.barh(range(len(contenders)), rates, color=[
                "tab:blue" if c.startswith(("async", "process")) else "tab:grey" for c in contenders])
            ax.set_yticks(range(len(contenders)), [_name(report, c) for c in contenders], fontsize="small")
            ax.bar_label(bars, labels=[f"{r:,.0f}" for r in rates], fontsize="small", padding=2)
            ax.invert_yaxis()
            ax.set_xlabel(f"records/s ({keys[0]:,} keys)" if keys else "records/s")
        ax.set_title(WORKLOAD_TITLES[workload], fontsize="medium")
        ax.grid(True, alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    return path


def latency_figure(report: BenchReport, path: Path) -> Path | None:
    """The CDF of end-to-end latency (produce -> handler done) per contender, one panel per rate-limited run."""
    runs = [m for m in report.latency if m.cdf and not m.error]
    workloads = list(dict.fromkeys(m.workload for m in runs))
    if not workloads:
        return None
    fig = Figure(figsize=(8 * len(workloads), 7.0), dpi=100)
    FigureCanvasAgg(fig)
    for i, workload in enumerate(workloads, start=1):
        ax = fig.add_subplot(1, len(workloads), i)
        panel = [m for m in runs if m.workload == workload]
        for m in panel:
            ax.plot([p[0] for p in m.cdf], [p[1] for p in m.cdf], label=f"{_name(report, m.contender)} "
                    f"(p50 {m.p50_ms:.1f} ms, p99 {m.p99_ms:.1f} ms)", markevery=20, markersize=4,
                    **_style(report, m.contender))
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency, ms (produce -> handler done), log scale")
        ax.set_ylabel("fraction of records")
        ax.set_title(f"{WORKLOAD_TITLES.get(workload, workload)}: {panel[0].rate:,} records/s, "
                     f"{panel[0].keys:,} keys", fontsize="medium")
        ax.axhline(0.99, color="grey", linewidth=0.8, linestyle=":")
        ax.grid(True, alpha=0.3, which="both")
        _legend_below(ax, 1)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_plots(report: BenchReport, out_dir: Path, name: str) -> list[Path]:
    written = [throughput_figure(report, out_dir / f"{name}-throughput.png"),
               latency_figure(report, out_dir / f"{name}-latency-cdf.png")]
    return [p for p in written if p is not None]
