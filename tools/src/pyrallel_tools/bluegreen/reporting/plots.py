"""The report's plots: lag, throughput, lifecycle states, partitions per instance and end-to-end latency of one run
over time, as PNG files.

Plots use matplotlib's Agg canvas directly (no pyplot, no display), and matplotlib is imported here only,
inside the functions that draw, so the ``pyrallel`` command works without the ``report`` extra.  Called by
:func:`pyrallel_tools.bluegreen.reporting.build.build_report`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pyrallel_tools.bluegreen.reporting.load import ReportError, RunFile
from pyrallel_tools.bluegreen.run_record import Event, Sample

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_run"]

_STATE_COLORS: dict[str, str] = {
    "ACTIVE": "#31a354",
    "DRAINING": "#fec44f",
    "PAUSED": "#bdbdbd",
    "STARTING": "#9ecae1",
    "STOPPED": "#636363",
    "DOWN": "#de2d26",
}
_UNKNOWN_STATE_COLOR = "#bcbd22"
_LINE_COLORS: dict[str, str] = {"blue": "tab:blue", "green": "tab:green"}
_EVENT_STYLES: dict[str, tuple[str, str]] = {
    "switch_start": ("black", "-"),
    "switch_end": ("black", "--"),
    "rollback_start": ("#ae017e", "-"),
    "rollback_end": ("#ae017e", "--"),
    "kill": ("#67000d", ":"),
    "restart": ("#67000d", "-."),
    "fault": ("#ff7f00", ":"),
    "scale_down": ("#636363", ":"),
}
_DEFAULT_SAMPLE_INTERVAL_S = 0.5

_Point = tuple[float, str, str, float | None]
"""(time, color, instance, value or None when unknown)"""


def _series_per_color(points: Iterable[_Point]) -> dict[str, tuple[list[float], list[float]]]:
    """Sum per color of each instance's latest value at every sample time of that color (NaN when none known)."""
    by_color: dict[str, list[tuple[float, str, float | None]]] = {}
    for t, color, instance, value in points:
        by_color.setdefault(color, []).append((t, instance, value))
    out: dict[str, tuple[list[float], list[float]]] = {}
    for color, items in sorted(by_color.items()):
        items.sort(key=lambda p: p[0])
        latest: dict[str, float | None] = {}
        times: list[float] = []
        values: list[float] = []
        for i, (t, instance, value) in enumerate(items):
            latest[instance] = value
            if i + 1 < len(items) and items[i + 1][0] == t:
                continue
            known = [v for v in latest.values() if v is not None]
            times.append(t)
            values.append(sum(known) if known else math.nan)
        out[color] = (times, values)
    return out


def _instances(samples: Sequence[Sample]) -> dict[tuple[str, str], list[Sample]]:
    per: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        per.setdefault((s.color, s.instance), []).append(s)
    return dict(sorted(per.items()))


def _rates(samples: Sequence[Sample]) -> list[_Point]:
    """Records/s of each instance over each sample interval; a counter that went down was restarted from 0."""
    points: list[_Point] = []
    for (color, instance), mine in _instances(samples).items():
        points.append((mine[0].t, color, instance, None))
        for prev, cur in pairwise(mine):
            dt = cur.t - prev.t
            if dt <= 0:
                continue
            delta = cur.handled - prev.handled if cur.handled >= prev.handled else cur.handled
            points.append((cur.t, color, instance, delta / dt))
    return points


def _mark_events(ax: Axes, events: Sequence[Event], t0: float) -> None:
    labelled: set[str] = set()
    for e in events:
        color, style = _EVENT_STYLES.get(e.kind, ("#969696", ":"))
        label = e.kind.replace("_", " ") if e.kind not in labelled else None
        labelled.add(e.kind)
        ax.axvline(e.t - t0, color=color, linestyle=style, linewidth=1.2, label=label)


def _new_figure(height: float) -> tuple[Figure, Axes]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ReportError("the report needs matplotlib: pip install 'pyrallel-consumer[report]'") from exc
    fig = Figure(figsize=(10, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _finish(fig: Figure, ax: Axes, run: RunFile, what: str, ylabel: str, path: Path,
            extra_handles: Sequence[Artist] = ()) -> None:
    """Event markers, labels and a legend outside the plot area (it never hides data), then save."""
    _frame(ax, run, ylabel, extra_handles)
    ax.set_title(f"{run.label}: {what}")
    fig.savefig(path, bbox_inches="tight")


def _frame(ax: Axes, run: RunFile, ylabel: str, extra_handles: Sequence[Artist] = ()) -> None:
    """Event markers, the run's time axis (0 is the run's start, as in the report's text), labels, grid and a legend
    outside the plot area of one panel."""
    _mark_events(ax, run.record.events, run.record.started_at)
    times = [run.record.ended_at] + [x.t for x in run.record.samples[-1:]] + [e.t for e in run.record.events[-1:]]
    hi = max(times) - run.record.started_at
    ax.set_xlim(0.0, hi + 0.02 * max(hi, 1.0))  # a margin, so a marker at the very end stays visible
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    handles = [*extra_handles, *ax.get_legend_handles_labels()[0]]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


def _plot_lines(run: RunFile, points: Iterable[_Point], what: str, ylabel: str, path: Path,
                where: Literal["pre", "post"]) -> None:
    """``where``: a lag holds from its sample on (post), a rate covers the interval up to its sample (pre)."""
    fig, ax = _new_figure(3.6)
    series = _series_per_color(points)
    for color, (times, values) in series.items():
        ax.step([t - run.record.started_at for t in times], values, where=where, label=color,
                color=_LINE_COLORS.get(color), linewidth=1.6)
    if all(math.isnan(v) for _, values in series.values() for v in values):
        ax.text(0.5, 0.5, "not reported by any instance", transform=ax.transAxes, ha="center", va="center")
    ax.set_ylim(bottom=0)
    _finish(fig, ax, run, what, ylabel, path)


def _plot_states(run: RunFile, path: Path) -> None:
    per = _instances(run.record.samples)
    fig, ax = _new_figure(1.4 + 0.4 * len(per))
    from matplotlib.patches import Patch  # after _new_figure: it reports a missing matplotlib

    seen_states: list[str] = []
    for row, mine in enumerate(per.values()):
        gaps = [b.t - a.t for a, b in pairwise(mine) if b.t > a.t]
        tail = statistics.median(gaps) if gaps else _DEFAULT_SAMPLE_INTERVAL_S
        ends = [s.t for s in mine[1:]] + [mine[-1].t + tail]
        start = 0
        for i in range(len(mine)):
            if i + 1 < len(mine) and mine[i + 1].state == mine[start].state:
                continue
            state = mine[start].state
            if state not in seen_states:
                seen_states.append(state)
            ax.broken_barh([(mine[start].t - run.record.started_at, ends[i] - mine[start].t)], (row - 0.4, 0.8),
                           facecolors=_STATE_COLORS.get(state, _UNKNOWN_STATE_COLOR))
            start = i + 1
    ax.set_yticks(range(len(per)), [i if c in i else f"{c} {i}" for c, i in per])
    for tick, (color, _) in zip(ax.get_yticklabels(), per, strict=True):
        tick.set_color(_LINE_COLORS.get(color, "black"))
    ax.set_ylim(-0.6, len(per) - 0.4)
    ax.invert_yaxis()
    states = [Patch(facecolor=_STATE_COLORS.get(state, _UNKNOWN_STATE_COLOR), label=state) for state in seen_states]
    _finish(fig, ax, run, "lifecycle state per instance", "instance", path, states)


_INSTANCE_STYLES = ("-", "--", ":", "-.")


def _plot_partitions(run: RunFile, path: Path) -> None:
    """Partitions owned per instance, a step line each, one panel per color (a dash per instance): shows a group
    that leaves an ACTIVE instance without a partition, or one instance with all of them, after a switch."""
    per = _instances(run.record.samples)
    colors = list(dict.fromkeys(color for color, _ in per))
    fig, top = _new_figure(0.6 + 2.4 * len(colors))
    from matplotlib.ticker import MaxNLocator  # after _new_figure: it reports a missing matplotlib

    grid = fig.add_gridspec(len(colors), 1, hspace=0.35)
    top.set_subplotspec(grid[0])
    axes = [top] + [fig.add_subplot(grid[i], sharex=top) for i in range(1, len(colors))]
    for ax, color in zip(axes, colors, strict=True):
        mine = [(instance, samples) for (c, instance), samples in per.items() if c == color]
        for index, (instance, samples) in enumerate(mine):
            ax.step([s.t - run.record.started_at for s in samples],
                    [math.nan if s.assigned is None else float(s.assigned) for s in samples], where="post",
                    label=instance, color=_LINE_COLORS.get(color),
                    linestyle=_INSTANCE_STYLES[index % len(_INSTANCE_STYLES)], linewidth=1.4)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        _frame(ax, run, f"{color}: partitions")
    top.set_title(f"{run.label}: partitions owned per instance")
    fig.savefig(path, bbox_inches="tight")


def _plot_latency(run: RunFile, path: Path) -> None:
    """Produced-to-handled latency per second of production: how long the records waited around each switch."""
    fig, ax = _new_figure(3.6)
    points = run.record.latency
    times = [p.t - run.record.started_at for p in points] + [points[-1].t - run.record.started_at + 1.0]
    ax.step(times, [p.max_s for p in points] + [points[-1].max_s], where="post", label="max", color="tab:red",
            linewidth=1.6)  # each point holds for its second: the last one is repeated at its end
    ax.step(times, [p.p50_s for p in points] + [points[-1].p50_s], where="post", label="median",
            color="tab:gray", linewidth=1.2)
    ax.set_ylim(bottom=0)
    _finish(fig, ax, run, "end-to-end latency (produced to handled) by time of production", "latency (s)", path)


def plot_run(run: RunFile, figures_dir: Path) -> list[tuple[str, Path]]:
    """Lag, throughput, state timeline, partitions per instance and latency of one run; (caption, file) pairs,
    none without samples.

    The partitions plot is left out when no sample has an assignment (connectors, files written before it), the
    latency plot when the run file has no latency (sink runs, files written before it).
    """
    if not run.record.samples:
        return []
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", run.path.stem)
    figures = [
        ("Lag per color", figures_dir / f"{stem}-lag.png"),
        ("Throughput per color", figures_dir / f"{stem}-throughput.png"),
        ("Lifecycle state per instance", figures_dir / f"{stem}-states.png"),
    ]
    _plot_lines(run, ((s.t, s.color, s.instance, s.lag) for s in run.record.samples), "consumer lag per color",
                "lag (records)", figures[0][1], "post")
    _plot_lines(run, _rates(run.record.samples), "throughput per color", "records/s", figures[1][1], "pre")
    _plot_states(run, figures[2][1])
    if any(s.assigned is not None for s in run.record.samples):
        figures.append(("Partitions per instance", figures_dir / f"{stem}-partitions.png"))
        _plot_partitions(run, figures[-1][1])
    if run.record.latency:
        figures.append(("End-to-end latency", figures_dir / f"{stem}-latency.png"))
        _plot_latency(run, figures[-1][1])
    return figures
