"""Plots of ``pyrallel bench --suite scale``, one PNG per curve: ``scale-<curve>.png`` next to the results.

Partitions, keys and value size: records/s, CPU µs per record and peak RSS against the curve's x (log scale).
Instances: the aggregate against the ideal of their records in flight, CPU per record, peak RSS per instance.
Backlog: RSS over time while the consumer drains it. matplotlib's Agg canvas is used directly, as in
:mod:`~pyrallel_tools.benchmark.plots`; importing this module needs matplotlib (the ``report`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from pyrallel_tools.benchmark.scale_report import CURVES, ScaleMeasure, ScaleReport, size_text

FILES = {"partitions": "scale-partitions.png", "keys": "scale-keys.png", "value_bytes": "scale-value-size.png",
         "instances": "scale-instances.png", "backlog": "scale-backlog.png"}
_COLOR = "tab:blue"


def _tick(curve: str, x: int) -> str:
    return size_text(x) if curve == "value_bytes" else f"{x:,}"


def _panels(fig: Figure, curve: str, points: list[tuple[int, ScaleMeasure]]) -> list[Any]:
    """Three panels against the curve's x: records/s, CPU µs per record, peak RSS MB; the axes."""
    xs = [x for x, _ in points]
    series: list[tuple[str, list[float | None]]] = [
        ("records/s", [m.records_per_s for _, m in points]),
        ("CPU µs per record (process CPU / records)", [m.cpu_us_per_record for _, m in points]),
        ("peak RSS MB" + (" (largest instance)" if curve == "instances" else ""), [m.peak_rss_mb for _, m in points]),
    ]
    axes = []
    for i, (label, ys) in enumerate(series, start=1):
        ax = fig.add_subplot(1, 3, i)
        shown = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        ax.plot([x for x, _ in shown], [y for _, y in shown], marker="o", linewidth=2, color=_COLOR)
        for x, y in shown:
            ax.annotate(f"{y:,.0f}" if y >= 100 else f"{y:,.1f}", (x, y), textcoords="offset points", xytext=(0, 7),
                        ha="center", fontsize="small")
        if curve != "instances":
            ax.set_xscale("log")
        ax.set_xticks(xs, [_tick(curve, x) for x in xs])
        ax.set_xlabel(CURVES[curve])
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0, top=max((y for _, y in shown), default=1) * 1.25)
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.grid(True, alpha=0.3)
        axes.append(ax)
    return axes


def curve_figure(report: ScaleReport, curve: str, path: Path) -> Path | None:
    """The curve's three panels (instances: with the ideal aggregate); None when no point of it was measured."""
    points = [(x, m) for x, m in report.curve(curve) if not m.error]
    if not points:
        return None
    fig = Figure(figsize=(15, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = _panels(fig, curve, points)
    if curve == "instances":
        ideal = [(x, m.ideal_per_s) for x, m in points if m.ideal_per_s]
        axes[0].plot([x for x, _ in ideal], [y for _, y in ideal], linestyle=":", color="grey",
                     label="ideal: instances x in flight / 5 ms")
        for x, m in points:
            axes[0].scatter([x] * len(m.member_rates), m.member_rates, marker="x", color="tab:orange", zorder=3)
        axes[0].scatter([], [], marker="x", color="tab:orange", label="each instance")
        axes[0].set_ylim(bottom=0, top=max(y for _, y in ideal) * 1.15 if ideal else None)
        axes[0].legend(fontsize="small", loc="upper left")
        axes[0].set_ylabel("aggregate records/s")
    fig.suptitle(_title(report, curve), fontsize="medium")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _title(report: ScaleReport, curve: str) -> str:
    plan = report.plan
    if curve == "instances":
        return (f"Instances of one group: {plan['group_partitions']} partitions, 5 ms handler, "
                f"{plan['group_concurrency']} in flight each, {plan['window_s']:g} s window")
    fixed = {"partitions": f"{plan['base_keys']:,} keys, {plan['base_value_bytes']} B values",
             "keys": f"{plan['base_partitions']} partitions, {plan['base_value_bytes']} B values",
             "value_bytes": f"{plan['base_partitions']} partitions, {plan['base_keys']:,} keys"}[curve]
    return f"Async engine, no-op handler, key order: {CURVES[curve]} ({fixed})"


def backlog_figure(report: ScaleReport, path: Path) -> Path | None:
    """RSS of the consumer over time while it drains the backlog, the handled span shaded."""
    m = report.measure("backlog")
    if m is None or m.error or not m.rss_series:
        return None
    fig = Figure(figsize=(10, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    alive = [(t, mb) for t, mb in m.rss_series if mb > 0]  # the sample after the process exited reads 0
    ax.plot([t for t, _ in alive], [mb for _, mb in alive], color=_COLOR, linewidth=2, label="RSS MB")
    if len(m.window) == 2:
        ax.axvspan(m.window[0], m.window[1], color="tab:green", alpha=0.12, label="first to last handled record")
    ax.set_xlabel("seconds since the consumer process started")
    ax.set_ylabel("RSS MB (sampled every 50 ms)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    ax.set_title(f"Backlog of {m.topic_records:,} records ({m.partitions} partitions, {m.keys:,} keys), no-op: "
                 f"{m.records_per_s:,.0f} records/s, {m.cpu_us_per_record} µs CPU per record, peak RSS "
                 f"{m.peak_rss_mb} MB", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_scale_plots(report: ScaleReport, out_dir: Path) -> list[Path]:
    """Every curve's PNG under ``out_dir`` (curves without a measured point have none)."""
    written = [backlog_figure(report, out_dir / FILES["backlog"]) if curve == "backlog"
               else curve_figure(report, curve, out_dir / FILES[curve]) for curve in CURVES]
    return [p for p in written if p is not None]
