"""The results of ``pyrallel bench --suite scale``: one measure per point, the curves through them, the JSON, the
markdown table and the result files. Pure code except :func:`write_scale_outputs`; the plots are
:mod:`~pyrallel_tools.benchmark.scale_plots`'s.

Filled by the runner (:mod:`pyrallel_tools.benchmark.scale`) on the CLI's main thread, or read back from JSON
(``pyrallel bench --suite scale --rebuild``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from pyrallel_tools.benchmark import harness
from pyrallel_tools.benchmark.rebalance_report import write_outputs
from pyrallel_tools.benchmark.results import ResultError, number_cell, short_line

log = logging.getLogger(__name__)

CURVES: Final = {
    "partitions": "partitions",
    "keys": "distinct keys",
    "value_bytes": "value size",
    "instances": "instances of one group",
    "backlog": "backlog",
}
"""Curve -> what its x axis counts."""
SLEEP_S: Final = harness.WORKLOADS["sleep5ms"][0]


@dataclass(slots=True)
class ScaleMeasure:
    """One point's figures. Rates count from the first handled record to the last (per instance, within the
    window); CPU is the process's user + system time over the same span (all threads, librdkafka's included)."""

    point: str
    partitions: int
    keys: int
    value_bytes: int
    topic_records: int
    workload: str
    members: int
    concurrency: int
    handled: int = 0
    counted: int = 0
    seconds: float = 0.0
    records_per_s: float = 0.0
    cpu_us_per_record: float | None = None
    peak_rss_mb: float | None = None
    """The largest of the instances' peaks for a group."""
    member_rates: list[float] = field(default_factory=list)
    idle_members: int = 0
    """Instances that owned no partition when the group settled (more instances than partitions): each counted
    nothing, so its rate in ``member_rates`` is 0, and its CPU over the others' span is in ``cpu_us_per_record``."""
    settle_s: float | None = None
    """Instances: from the start of the first until the group was stable (the window started then)."""
    produce_s: float | None = None
    """How long producing the point's topic took (on the first point of a topic)."""
    load_1m: float | None = None
    """The machine's 1-minute load average when the point started."""
    rss_series: list[list[float]] = field(default_factory=list)
    """(seconds since the contender started, RSS in MB), the backlog only."""
    window: list[float] = field(default_factory=list)
    """(first, last) handled record in the same seconds, the backlog only."""
    error: str = ""

    @property
    def ideal_per_s(self) -> float | None:
        """Instances on the sleeping handler: what their records in flight allow (each record takes 5 ms)."""
        return self.members * self.concurrency / SLEEP_S if self.members and self.workload == "sleep5ms" else None


@dataclass(slots=True)
class ScaleReport:
    machine: dict[str, Any]
    plan: dict[str, Any]
    curves: dict[str, list[tuple[int, str]]]
    measures: list[ScaleMeasure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def measure(self, point: str) -> ScaleMeasure | None:
        return next((m for m in self.measures if m.point == point), None)

    def curve(self, name: str) -> list[tuple[int, ScaleMeasure]]:
        """The measured points of a curve, in order (points not measured are left out)."""
        return [(x, m) for x, point in self.curves.get(name, []) if (m := self.measure(point)) is not None]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ScaleReport:
        """A report from :meth:`to_json` (``--rebuild``); ResultError when it is not one."""
        try:
            data = json.loads(text)
            names = {f.name for f in fields(ScaleMeasure)}
            measures = [ScaleMeasure(**{k: v for k, v in m.items() if k in names}) for m in data["measures"]]
            curves = {name: [(int(x), str(point)) for x, point in points] for name, points in data["curves"].items()}
            return cls(data["machine"], data["plan"], curves, measures, list(data.get("notes", [])),
                       float(data.get("duration_s", 0.0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultError(f"not a scale results file: {exc}") from exc


def write_scale_outputs(report: ScaleReport, out_dir: Path) -> list[Path]:
    """``scale-<time>.json``, ``scale-latest.{json,md}`` and the plots (when matplotlib is there) under ``out_dir``."""
    written = [write_outputs(report.to_json(), markdown(report), out_dir, "scale")]
    try:
        from pyrallel_tools.benchmark.scale_plots import write_scale_plots
    except ImportError as exc:
        log.warning("No plots: %s (pip install 'pyrallel-consumer-tools[report]')", exc)
        return written
    return written + write_scale_plots(report, out_dir)


def rebuild_scale_outputs(results: Path, out_dir: Path) -> ScaleReport:
    """Table and plots again from a results file (no broker)."""
    try:
        report = ScaleReport.from_json(results.read_text())
    except OSError as exc:
        raise ResultError(f"cannot read {results}: {exc}") from exc
    write_scale_outputs(report, out_dir)
    return report


def markdown(report: ScaleReport) -> str:
    """The method line and one table: every curve's points, the base point in each of its curves."""
    plan = report.plan
    lines = [
        f"Async engine, key order, one process per consumer. No-op handler, {plan['concurrency']:,} records in "
        f"flight, one consumer reading its whole topic: partitions, keys and value size around the base point "
        f"({plan['base_partitions']} partitions, {plan['base_keys']:,} keys, {plan['base_value_bytes']} B values; "
        f"{plan['records']:,} records per topic, every key at least once, at most "
        f"{plan['value_budget_bytes'] // 2**20} MiB of values). Instances: {plan['group_partitions']} partitions, "
        f"{plan['group_keys']:,} keys, 5 ms asyncio.sleep per record, {plan['group_concurrency']} in flight per "
        f"instance, counted for {plan['window_s']:g} s once the group settled. Backlog: "
        f"{plan['backlog_records']:,} records on that topic, no-op. Total time {report.duration_s:.0f} s.",
        "",
        "| curve | point | records | records/s | CPU µs / record | peak RSS MB | load |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    base = (plan["base_partitions"], plan["base_keys"], plan["base_value_bytes"])
    for curve in CURVES:
        for x, m in report.curve(curve):
            label = _point_label(curve, x, m, base)
            if m.error:
                lines.append(f"| {CURVES[curve]} | {label} | {m.topic_records:,} | {short_line(m.error, 120)} | | | |")
                continue
            rate = f"{m.records_per_s:,.0f}"
            if m.member_rates:
                rate += " (" + " + ".join(f"{r:,.0f}" for r in m.member_rates) + ")"
            lines.append(f"| {CURVES[curve]} | {label} | {m.counted:,} | {rate} | "
                         f"{number_cell(m.cpu_us_per_record, 1)} | {number_cell(m.peak_rss_mb, 0)} | "
                         f"{number_cell(m.load_1m, 1)} |")
    notes = [f"- {short_line(n, 300)}" for n in report.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def _point_label(curve: str, x: int, m: ScaleMeasure, base: tuple[int, int, int]) -> str:
    if curve == "instances":
        ideal = m.ideal_per_s
        settle = f", settled after {m.settle_s:.1f} s" if m.settle_s is not None else ""
        return f"{x}{f' (ideal {ideal:,.0f}/s)' if ideal else ''}{settle}"
    if curve == "backlog":
        return f"{x:,} records"
    text = size_text(x) if curve == "value_bytes" else f"{x:,}"
    return f"{text} (base)" if (m.partitions, m.keys, m.value_bytes) == base else text


def size_text(value_bytes: int) -> str:
    """64 B, 4 KiB, 64 KiB."""
    return f"{value_bytes // 1024} KiB" if value_bytes >= 1024 and value_bytes % 1024 == 0 else f"{value_bytes} B"

