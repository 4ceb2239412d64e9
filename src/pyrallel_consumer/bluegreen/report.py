"""The blue/green test report: every scenario run's JSON file in, ``test-report.md`` and PNG plots out.

The scenario runner writes one JSON file per run; this module only reads them, so a report can be
rebuilt (or built on another machine) without a broker.  A file that does not parse or does not
follow the schema is listed in the report and skipped: one bad file must not hide the other runs.
Plots use matplotlib's Agg canvas directly (no pyplot, no display), and matplotlib is imported only
when plotting, so the ``pyrallel`` command works without the ``report`` extra.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pyrallel_consumer.bluegreen.controller import Step, SwitchResult

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["REPORT_NAME", "ReportError", "Run", "build_report", "load_runs"]

log = logging.getLogger(__name__)

REPORT_NAME = "test-report.md"
FIGURES_DIR = "figures"

SCENARIOS: dict[int, str] = {
    1: "Normal switch blue → green, then blue scaled down",
    2: "Switch, then immediate rollback",
    3: "Switch while blue has lag > 500",
    4: "Consumer process killed and restarted during the switch",
    5: "Green with a high failure rate: automatic rollback",
}

COMPLEXITY: dict[str, tuple[str, str]] = {
    "B": (
        "two consumer groups; the controller copies committed offsets (with offset maps) with the admin API",
        "consumers leave and re-join their group on every switch; both groups must be kept and watched",
    ),
    "C": (
        "the lifecycle API (pause/resume over HTTP) in every consumer",
        "low; one consumer group, no extra infrastructure, the controller only calls the instances",
    ),
    "E": (
        "sink connectors only; offsets moved through the Connect REST API",
        "a Kafka Connect cluster to run and secure; only fits sink-style workloads",
    ),
}
"""Fixed qualitative notes per strategy: (implementation complexity, operational complexity)."""

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


class ReportError(ValueError):
    """The report cannot be built at all (no runs directory, no readable run, matplotlib missing)."""


class _SchemaError(ValueError):
    """A run file is valid JSON but not a run; the message names the offending field."""


# --------------------------------------------------------------------------------------------
# Run model and parsing


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    color: str
    instance: str
    state: str
    lag: int | None
    handled: int


@dataclass(frozen=True, slots=True)
class Event:
    t: float
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    target: str
    measured: str
    passed: bool


@dataclass(frozen=True, slots=True)
class Totals:
    """The validator's counts the report uses; the full validation dict stays in the run file."""

    produced: int = 0
    consumed: int = 0
    lost: int = 0
    pending: int = 0
    duplicates: int = 0
    duplicates_by_color: dict[str, int] = field(default_factory=dict)
    cross_color_duplicates: int = 0
    dual_active: int = 0
    order_violations: int = 0


@dataclass(slots=True)
class Run:
    """One scenario run as written by the runner."""

    path: Path
    strategy: str
    scenario: int
    variant: str | None
    title: str
    started_at: float
    ended_at: float
    verdict: str
    cause: str | None
    environment: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    switches: list[SwitchResult] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    rebalances: dict[str, int] = field(default_factory=dict)
    criteria: list[Criterion] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    @property
    def label(self) -> str:
        variant = f" ({self.variant})" if self.variant else ""
        return f"{self.strategy} scenario {self.scenario}{variant}"

    @property
    def rebalance_count(self) -> int:
        return sum(self.rebalances.values())

    def switch_times(self) -> list[float]:
        return [s for r in self.switches if (s := switch_seconds(r)) is not None]

    def rollback_times(self) -> list[float]:
        return [s for r in self.switches if (s := rollback_seconds(r)) is not None]


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _SchemaError(f"{where}: expected an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _SchemaError(f"{where}: expected a list")
    return value


def _num(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _SchemaError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _SchemaError(f"{where}: expected an integer, got {value!r}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _SchemaError(f"{where}: expected a string, got {value!r}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _SchemaError(f"{where}: expected true or false, got {value!r}")
    return value


def _counts(value: Any, where: str) -> dict[str, int]:
    return {str(k): _int(v, f"{where}.{k}") for k, v in _obj(value, where).items()}


def _items(d: Mapping[str, Any], key: str, parse: Callable[[Any, str], Any], where: str = "") -> list[Any]:
    name = f"{where}.{key}" if where else key
    return [parse(x, f"{name}[{i}]") for i, x in enumerate(_list(d.get(key, []), name))]


def _parse_step(raw: Any, where: str) -> Step:
    d = _obj(raw, where)
    return Step(_str(d.get("name"), f"{where}.name"), _num(d.get("started_at"), f"{where}.started_at"),
                _num(d.get("seconds"), f"{where}.seconds"), _bool(d.get("ok"), f"{where}.ok"),
                _opt_str(d.get("detail"), f"{where}.detail") or "")


def _parse_switch(raw: Any, where: str) -> SwitchResult:
    d = _obj(raw, where)
    return SwitchResult(
        strategy=_str(d.get("strategy"), f"{where}.strategy"),
        action=_str(d.get("action"), f"{where}.action"),
        from_color=_str(d.get("from_color"), f"{where}.from_color"),
        to_color=_str(d.get("to_color"), f"{where}.to_color"),
        generation=_int(d.get("generation"), f"{where}.generation"),
        started_at=_num(d.get("started_at"), f"{where}.started_at"),
        seconds=_num(d.get("seconds"), f"{where}.seconds"),
        ok=_bool(d.get("ok"), f"{where}.ok"),
        rolled_back=_bool(d.get("rolled_back", False), f"{where}.rolled_back"),
        error=_opt_str(d.get("error"), f"{where}.error"),
        steps=_items(d, "steps", _parse_step, where),
    )


def _parse_totals(raw: Any) -> Totals:
    v = _obj(raw, "validation")

    def count(key: str) -> int:
        return _int(v.get(key, 0), f"validation.{key}")

    return Totals(
        produced=count("produced"),
        consumed=count("consumed"),
        lost=count("lost"),
        pending=count("pending"),
        duplicates=count("duplicates"),
        duplicates_by_color=_counts(v.get("duplicates_by_color", {}), "validation.duplicates_by_color"),
        cross_color_duplicates=count("cross_color_duplicates"),
        dual_active=count("dual_active_count"),
        order_violations=count("order_violations"),
    )


def _parse_sample(raw: Any, where: str) -> Sample:
    d = _obj(raw, where)
    lag = d.get("lag")
    return Sample(
        t=_num(d.get("t"), f"{where}.t"),
        color=_str(d.get("color"), f"{where}.color"),
        instance=_str(d.get("instance"), f"{where}.instance"),
        state=_str(d.get("state"), f"{where}.state"),
        lag=None if lag is None else _int(lag, f"{where}.lag"),
        handled=_int(d.get("handled", 0), f"{where}.handled"),
    )


def _parse_event(raw: Any, where: str) -> Event:
    d = _obj(raw, where)
    return Event(_num(d.get("t"), f"{where}.t"), _str(d.get("kind"), f"{where}.kind"),
                 _opt_str(d.get("detail"), f"{where}.detail") or "")


def _parse_criterion(raw: Any, where: str) -> Criterion:
    d = _obj(raw, where)
    return Criterion(_str(d.get("name"), f"{where}.name"), str(d.get("target", "")), str(d.get("measured", "")),
                     _bool(d.get("pass"), f"{where}.pass"))


def parse_run(path: Path) -> Run:
    """Read one run file; raises ``ValueError`` (bad JSON or schema) or ``OSError``."""
    d = _obj(json.loads(path.read_text(encoding="utf-8")), "run")
    verdict = _str(d.get("verdict"), "verdict")
    if verdict not in ("PASS", "FAIL"):
        raise _SchemaError(f"verdict: expected PASS or FAIL, got {verdict!r}")
    strategy = _str(d.get("strategy"), "strategy")
    scenario = _int(d.get("scenario"), "scenario")
    return Run(
        path=path,
        strategy=strategy,
        scenario=scenario,
        variant=_opt_str(d.get("variant"), "variant"),
        title=_opt_str(d.get("title"), "title") or SCENARIOS.get(scenario, f"Scenario {scenario}"),
        started_at=_num(d.get("started_at"), "started_at"),
        ended_at=_num(d.get("ended_at"), "ended_at"),
        verdict=verdict,
        cause=_opt_str(d.get("cause"), "cause"),
        environment=_obj(d.get("environment", {}), "environment"),
        conditions=_obj(d.get("conditions", {}), "conditions"),
        switches=_items(d, "switches", _parse_switch),
        totals=_parse_totals(d.get("validation", {})),
        samples=sorted(_items(d, "samples", _parse_sample), key=lambda s: s.t),
        events=sorted(_items(d, "events", _parse_event), key=lambda e: e.t),
        rebalances=_counts(d.get("rebalances", {}), "rebalances"),
        criteria=_items(d, "criteria", _parse_criterion),
    )


def load_runs(runs_dir: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """All readable runs in ``runs_dir`` (sorted by scenario, strategy, variant) and the skipped files with why."""
    if not runs_dir.is_dir():
        raise ReportError(f"runs directory {runs_dir} does not exist; run `pyrallel scenario run` first")
    files = sorted(runs_dir.glob("*.json"))
    if not files:
        raise ReportError(f"no run files (*.json) in {runs_dir}; run `pyrallel scenario run` first")
    runs: list[Run] = []
    skipped: list[tuple[Path, str]] = []
    for path in files:
        try:
            runs.append(parse_run(path))
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("Skipping run file %s: %s", path, exc)
            skipped.append((path, f"{type(exc).__name__}: {exc}"))
    runs.sort(key=lambda r: (r.scenario, r.strategy, r.variant or "", r.started_at))
    return runs, skipped


# --------------------------------------------------------------------------------------------
# Measurements


def _handover_seconds(result: SwitchResult) -> float:
    """The controller's time without the health-check observation window, which is waiting, not switching."""
    watched = sum(s.seconds for s in result.steps if s.name.startswith("health check"))
    return max(result.seconds - watched, 0.0)


def switch_seconds(result: SwitchResult) -> float | None:
    """Duration of a successful switch; None for rollbacks and failed switches."""
    if result.action != "switch" or not result.ok:
        return None
    return _handover_seconds(result)


def rollback_seconds(result: SwitchResult) -> float | None:
    """Duration of a rollback: a requested one, or the steps after the failed step of an automatic one."""
    if result.action == "rollback":
        return _handover_seconds(result) if result.ok else None
    if not result.rolled_back:
        return None
    failed = next((i for i, s in enumerate(result.steps) if not s.ok), None)
    after = result.steps[failed + 1:] if failed is not None else []
    if not after:
        return None
    return after[-1].started_at + after[-1].seconds - after[0].started_at


@dataclass(frozen=True, slots=True)
class StrategySummary:
    strategy: str
    runs: int
    passed: int
    switch_times: list[float]
    rollback_times: list[float]
    lost: int
    duplicates: int
    rebalances: int

    @property
    def ok(self) -> bool:
        return self.passed == self.runs

    @property
    def median_switch(self) -> float | None:
        return statistics.median(self.switch_times) if self.switch_times else None

    @property
    def median_rollback(self) -> float | None:
        return statistics.median(self.rollback_times) if self.rollback_times else None


def summarize(runs: Sequence[Run]) -> list[StrategySummary]:
    out: list[StrategySummary] = []
    for strategy in sorted({r.strategy for r in runs}):
        mine = [r for r in runs if r.strategy == strategy]
        out.append(StrategySummary(
            strategy=strategy,
            runs=len(mine),
            passed=sum(r.passed for r in mine),
            switch_times=[t for r in mine for t in r.switch_times()],
            rollback_times=[t for r in mine for t in r.rollback_times()],
            lost=sum(r.totals.lost for r in mine),
            duplicates=sum(r.totals.duplicates for r in mine),
            rebalances=sum(r.rebalance_count for r in mine),
        ))
    return out


# --------------------------------------------------------------------------------------------
# Formatting


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} s"


def _times(values: Sequence[float]) -> str:
    if not values:
        return "—"
    return f"{_secs(statistics.median(values))} (max {_secs(max(values))}, n={len(values)})"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.3f}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True)
    else:
        text = "—" if value is None or value == "" else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return [*lines, ""]


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _anchor(run: Run) -> str:
    return re.sub(r"[^a-z0-9]+", "-", run.label.lower()).strip("-")


def _slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem)


def _by_color(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{c} {n}" for c, n in sorted(counts.items()))


# --------------------------------------------------------------------------------------------
# Plots


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


def _finish(fig: Figure, ax: Axes, run: Run, what: str, ylabel: str, path: Path,
            extra_handles: Sequence[Artist] = ()) -> None:
    """Event markers, labels and a legend outside the plot area (it never hides data), then save."""
    _mark_events(ax, run.events, run.started_at)
    times = [run.ended_at] + [x.t for x in run.samples[-1:]] + [e.t for e in run.events[-1:]]
    lo, hi = min(0.0, run.samples[0].t - run.started_at), max(times) - run.started_at
    ax.set_xlim(lo, hi + 0.02 * max(hi - lo, 1.0))  # a margin, so a marker at the very end stays visible
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{run.label}: {what}")
    ax.grid(True, alpha=0.3)
    handles = [*extra_handles, *ax.get_legend_handles_labels()[0]]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    fig.savefig(path, bbox_inches="tight")


def _plot_lines(run: Run, points: Iterable[_Point], what: str, ylabel: str, path: Path,
                where: Literal["pre", "post"]) -> None:
    """``where``: a lag holds from its sample on (post), a rate covers the interval up to its sample (pre)."""
    fig, ax = _new_figure(3.6)
    series = _series_per_color(points)
    for color, (times, values) in series.items():
        ax.step([t - run.started_at for t in times], values, where=where, label=color,
                color=_LINE_COLORS.get(color), linewidth=1.6)
    if all(math.isnan(v) for _, values in series.values() for v in values):
        ax.text(0.5, 0.5, "not reported by any instance", transform=ax.transAxes, ha="center", va="center")
    ax.set_ylim(bottom=0)
    _finish(fig, ax, run, what, ylabel, path)


def _plot_states(run: Run, path: Path) -> None:
    per = _instances(run.samples)
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
            ax.broken_barh([(mine[start].t - run.started_at, ends[i] - mine[start].t)], (row - 0.4, 0.8),
                           facecolors=_STATE_COLORS.get(state, _UNKNOWN_STATE_COLOR))
            start = i + 1
    ax.set_yticks(range(len(per)), [i if c in i else f"{c} {i}" for c, i in per])
    for tick, (color, _) in zip(ax.get_yticklabels(), per, strict=True):
        tick.set_color(_LINE_COLORS.get(color, "black"))
    ax.set_ylim(-0.6, len(per) - 0.4)
    ax.invert_yaxis()
    states = [Patch(facecolor=_STATE_COLORS.get(state, _UNKNOWN_STATE_COLOR), label=state) for state in seen_states]
    _finish(fig, ax, run, "lifecycle state per instance", "instance", path, states)


def plot_run(run: Run, figures_dir: Path) -> list[tuple[str, Path]]:
    """Lag, throughput and state timeline of one run; returns (caption, file) pairs, none without samples."""
    if not run.samples:
        return []
    stem = _slug(run.path)
    figures = [
        ("Lag per color", figures_dir / f"{stem}-lag.png"),
        ("Throughput per color", figures_dir / f"{stem}-throughput.png"),
        ("Lifecycle state per instance", figures_dir / f"{stem}-states.png"),
    ]
    _plot_lines(run, ((s.t, s.color, s.instance, s.lag) for s in run.samples), "consumer lag per color",
                "lag (records)", figures[0][1], "post")
    _plot_lines(run, _rates(run.samples), "throughput per color", "records/s", figures[1][1], "pre")
    _plot_states(run, figures[2][1])
    return figures


# --------------------------------------------------------------------------------------------
# Markdown sections


def _summary(runs: Sequence[Run], summaries: Sequence[StrategySummary], skipped: Sequence[tuple[Path, str]]
             ) -> list[str]:
    failed = [r for r in runs if not r.passed]
    overall = "PASS" if not failed else "FAIL"
    lines = ["## Executive summary", "",
             f"**Overall: {overall}** — {len(runs) - len(failed)} of {len(runs)} runs passed "
             "(targets per run: loss 0, dual-active 0, switch and rollback times as listed in each run's criteria).",
             ""]
    lines += _table(["strategy", "runs", "passed", "verdict"],
                    [(s.strategy, s.runs, s.passed, "PASS" if s.ok else "FAIL") for s in summaries])
    if skipped:
        lines += [f"**{len(skipped)} run file(s) could not be read and are not in this report:**", ""]
        lines += [f"- `{p.name}`: {why}" for p, why in skipped] + [""]
    return lines


_ENV_KEYS = ("kafka", "python", "confluent_kafka", "librdkafka", "partitions", "replicas", "rate_per_s",
             "instances_per_color", "machine")


def _environment(runs: Sequence[Run]) -> list[str]:
    keys = list(_ENV_KEYS) + sorted({k for r in runs for k in r.environment} - set(_ENV_KEYS))
    rows = []
    for key in keys:
        values = list(dict.fromkeys(_cell(r.environment[key]) for r in runs if key in r.environment))
        if values:
            rows.append((key, ", ".join(values)))
    return ["## Environment", "", *(_table(["item", "value"], rows) if rows else ["Not recorded.", ""])]


def _run_section(run: Run, figures: Sequence[tuple[str, Path]], out_dir: Path) -> list[str]:
    lines = [f"### {run.label}: {run.verdict}", "", f"{run.title}. File `{run.path.name}`, started "
             f"{_when(run.started_at)}, {run.ended_at - run.started_at:.3f} s.", ""]
    if run.conditions:
        lines += ["**Conditions**", "", *_table(["condition", "value"], sorted(run.conditions.items()))]
    if run.switches:
        lines += ["**Switches**", ""]
        lines += _table(
            ["action", "colors", "generation", "seconds", "result", "steps"],
            [(r.action, f"{r.from_color} → {r.to_color}", r.generation, _secs(r.seconds),
              "ok" if r.ok else ("rolled back" if r.rolled_back else "failed") + (f": {r.error}" if r.error else ""),
              "; ".join(f"{s.name} {_secs(s.seconds)}{'' if s.ok else ' FAILED'}" for s in r.steps))
             for r in run.switches])
    t = run.totals
    lines += ["**Validation**", "", *_table(["produced", "consumed", "lost", "pending", "duplicates",
                                             "cross-color duplicates", "dual-active windows", "order violations",
                                             "rebalances"],
                                            [(t.produced, t.consumed, t.lost, t.pending, t.duplicates,
                                              t.cross_color_duplicates, t.dual_active, t.order_violations,
                                              _by_color(run.rebalances) or 0)])]
    if run.criteria:
        lines += ["**Criteria**", "", *_table(["criterion", "target", "measured", "result"],
                                              [(c.name, c.target, c.measured, "pass" if c.passed else "FAIL")
                                               for c in run.criteria])]
    if run.events:
        lines += ["**Events** (seconds since the run started): " + "; ".join(
            f"{e.kind.replace('_', ' ')} +{e.t - run.started_at:.3f}" + (f" ({e.detail})" if e.detail else "")
            for e in run.events), ""]
    lines += [f"**Verdict: {run.verdict}**" + (f" — cause: {run.cause}" if run.cause else ""), ""]
    if figures:
        for caption, path in figures:
            lines += [f"![{run.label}: {caption}]({path.relative_to(out_dir).as_posix()})", ""]
    else:
        lines += ["No samples were recorded, so there are no plots for this run.", ""]
    return lines


def _scenarios(runs: Sequence[Run], figures: Mapping[Path, Sequence[tuple[str, Path]]], out_dir: Path) -> list[str]:
    lines: list[str] = []
    for scenario in sorted({r.scenario for r in runs}):
        lines += [f"## Scenario {scenario}: {SCENARIOS.get(scenario, 'not a standard scenario')}", ""]
        for run in (r for r in runs if r.scenario == scenario):
            lines += _run_section(run, figures[run.path], out_dir)
    return lines


def _comparison(summaries: Sequence[StrategySummary]) -> list[str]:
    rows = [(s.strategy, f"{s.passed}/{s.runs}", _times(s.switch_times), _times(s.rollback_times), s.lost,
             s.duplicates, s.rebalances, *COMPLEXITY.get(s.strategy, ("—", "—"))) for s in summaries]
    return ["## Strategy comparison", "",
            "Times are medians over all runs of the strategy (max, count). A switch or rollback is timed by the "
            "controller without its health-check window; an automatic rollback is timed from its first rollback "
            "step to its last. Lost, duplicates and rebalances are totals over the runs.", "",
            *_table(["strategy", "runs passed", "switch time", "rollback time", "lost", "duplicates", "rebalances",
                     "implementation complexity", "operational complexity"], rows)]


def _duplicate_explanation(run: Run) -> str:
    notes = [f"{c.name}: {c.measured}" for c in run.criteria if "duplicate" in c.name.lower()]
    if run.cause:
        notes.append(run.cause)
    return "; ".join(notes) if notes else "no explanation recorded by the runner"


def _problems(runs: Sequence[Run]) -> list[str]:
    items: list[str] = []
    for run in runs:
        link = f"[{run.label}](#{_anchor(run)}-{run.verdict.lower()})"
        failed = [c for c in run.criteria if not c.passed]
        items += [f"- {link}: criterion **{c.name}** failed — target {c.target}, measured {c.measured}. "
                  f"Cause: {run.cause or 'not recorded'}." for c in failed]
        if not run.passed and not failed:
            items.append(f"- {link}: run FAIL. Cause: {run.cause or 'not recorded'}.")
        t = run.totals
        if t.duplicates > 0:
            split = _by_color(t.duplicates_by_color)
            items.append(f"- {link}: {t.duplicates} duplicates" + (f" ({split})" if split else "")
                         + f", {t.cross_color_duplicates} handled by both colors. "
                         f"Explanation: {_duplicate_explanation(run)}.")
    return ["## Found problems", "", *(items or ["None: every criterion passed and no run had duplicates."]), ""]


def _recommendation(summaries: Sequence[StrategySummary]) -> list[str]:
    passing = [s for s in summaries if s.ok]
    failing = [s for s in summaries if not s.ok]
    lines = ["## Recommendation", ""]
    if not passing:
        lines.append("No strategy passed all of its runs, so none is recommended until the problems above are "
                     "fixed: " + "; ".join(f"{s.strategy} {s.runs - s.passed} of {s.runs} runs failed"
                                           for s in failing) + ".")
        return [*lines, ""]
    ranked = sorted(passing, key=lambda s: (s.median_switch is None, s.median_switch or 0.0,
                                            s.median_rollback or 0.0, s.strategy))
    best = ranked[0]
    text = f"**{best.strategy}**: all {best.runs} of its runs passed (lost {best.lost}, no dual-active window)"
    if best.median_switch is None:
        text += ", but none of them measured a switch, so the choice is not backed by a switch time"
    else:
        text += f", and its median switch time {_secs(best.median_switch)} is the lowest"
        others = [f"{s.strategy} {_secs(s.median_switch)}" for s in ranked[1:] if s.median_switch is not None]
        text += f" among the passing strategies ({', '.join(others)})" if others else " (the only passing strategy)"
    text += f"; median rollback {_secs(best.median_rollback)}, {best.duplicates} duplicates over its runs."
    if best.strategy in COMPLEXITY:
        impl, ops = COMPLEXITY[best.strategy]
        text += f" Implementation: {impl}. Operations: {ops}."
    if failing:
        text += " Not eligible: " + "; ".join(f"{s.strategy} ({s.runs - s.passed} of {s.runs} runs failed)"
                                             for s in failing) + "."
    return [*lines, text, ""]


# --------------------------------------------------------------------------------------------
# Entry point


def build_report(runs_dir: Path, out_dir: Path) -> Path:
    """Write ``out_dir/test-report.md`` and ``out_dir/figures/*.png`` from the run files; returns the markdown path."""
    runs, skipped = load_runs(runs_dir)
    if not runs:
        raise ReportError(f"none of the {len(skipped)} run file(s) in {runs_dir} could be read: "
                          + "; ".join(f"{p.name}: {why}" for p, why in skipped))
    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures = {run.path: plot_run(run, figures_dir) for run in runs}
    summaries = summarize(runs)
    first, last = min(r.started_at for r in runs), max(r.ended_at for r in runs)
    lines = ["# Blue/green switching: test report", "",
             f"{len(runs)} run(s) from `{runs_dir}`, {_when(first)} to {_when(last)}. "
             "Generated by `pyrallel report`.", ""]
    lines += _summary(runs, summaries, skipped)
    lines += _environment(runs)
    lines += _scenarios(runs, figures, out_dir)
    lines += _comparison(summaries)
    lines += _problems(runs)
    lines += _recommendation(summaries)
    path = out_dir / REPORT_NAME
    path.write_text("\n".join(lines), encoding="utf-8")
    log.info("Report written to %s (%d runs, %d skipped)", path, len(runs), len(skipped))
    return path
