"""The results of ``pyrallel bench --suite share``: a share group vs a consumer group of the same instances, and the
duplicates after a SIGKILL. Pure code except :func:`write_share_outputs`.

Filled by :mod:`~pyrallel_tools.benchmark.share` on the CLI's main thread. The throughput points are
:class:`~pyrallel_tools.benchmark.scale_report.ScaleMeasure` (the scale suite's instances curve, measured the same
way), the kills :class:`~pyrallel_tools.benchmark.results.Restart` (the killed instance's handlings as
``handled_before_kill``, the survivor's as ``handled_after_restart``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyrallel_tools.benchmark.rebalance_report import write_outputs
from pyrallel_tools.benchmark.results import Restart, number_cell, ratio, short_line
from pyrallel_tools.benchmark.scale_report import ScaleMeasure


@dataclass(slots=True)
class ShareReport:
    machine: dict[str, Any]
    plan: dict[str, Any]
    throughput: list[ScaleMeasure] = field(default_factory=list)
    """One per (contender, instances); ``point`` is ``<contender>-<instances>``."""
    kills: list[Restart] = field(default_factory=list)
    """``kill_runs`` per kind of group, alternating."""
    kill_longest_wait_s: list[float | None] = field(default_factory=list)
    """Per kill: the longest a record waited from its production to its first handling (seconds)."""
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def measure(self, contender: str, members: int) -> ScaleMeasure | None:
        return next((m for m in self.throughput if m.point == point_id(contender, members)), None)

    def rate(self, contender: str, members: int) -> float | None:
        m = self.measure(contender, members)
        return m.records_per_s if m is not None and not m.error and m.counted else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def point_id(contender: str, members: int) -> str:
    return f"{contender}-{members}"


def markdown(report: ShareReport) -> str:
    """The method line, the throughput table (one row per instance count) and the kill table."""
    plan = report.plan
    share, group = plan["contenders"]
    lines = [
        f"{plan['partitions']} partitions, {plan['records']:,} records pre-produced, 5 ms asyncio.sleep per record, "
        f"{plan['concurrency']} records in flight per instance, one process per instance; every instance logs each "
        f"record it handles. The instances start together; once every one of them handled a record (share group) "
        f"or the group is stable with both partitions assigned (consumer group) each counts the next "
        f"{plan['window_s']:g} s; an instance owning no partition (consumer group, more instances than partitions) "
        f"counts 0. Total time {report.duration_s:.0f} s.",
        "",
        f"| instances | {share} records/s (per instance) | {group} records/s (per instance) | share / consumer | "
        f"CPU µs / record {share} / {group} | load (1 min) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in plan["instances"]:
        measures = [report.measure(c, n) for c in (share, group)]
        cpu = " / ".join(number_cell(m.cpu_us_per_record if m is not None and not m.error else None, 0)
                         for m in measures)
        loads = " / ".join(number_cell(m.load_1m if m is not None else None, 1) for m in measures)
        lines.append(f"| {n} | {_rate_cell(measures[0])} | {_rate_cell(measures[1])} | "
                     f"{number_cell(ratio(report.rate(share, n), report.rate(group, n)), 2)} | {cpu} | {loads} |")
    lines += [
        "",
        f"2 instances of a new group on an empty topic, settled (warm-up records until each handled one; consumer "
        f"group: also stable with both partitions assigned), then {plan['kill_records']:,} records produced at "
        f"{plan['kill_rate']:,}/s; SIGKILL of one instance once {plan['kill_fraction']:.0%} of them were handled; the "
        f"survivor runs until every record was handled (or {plan['kill_drain_s']:g} s). Share group: "
        f"record lock {plan['kill_lock_ms']:,} ms, session {plan['kill_session_ms']:,} ms (group settings); "
        f"consumer group: session {plan['kill_session_ms']:,} ms.",
        "",
        "| contender | records | handled by the killed | handled by the survivor | duplicates | missing | "
        "longest wait of a record (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k, wait in zip(report.kills, report.kill_longest_wait_s, strict=True):
        if k.error:
            lines.append(f"| {k.contender} | {k.records:,} | {short_line(k.error, 120)} | | | | |")
            continue
        missing = "not finished" if k.missing is None else f"{k.missing:,}"
        lines.append(f"| {k.contender} | {k.records:,} | {k.handled_before_kill:,} | {k.handled_after_restart:,} | "
                     f"{k.duplicates:,} | {missing} | {number_cell(wait, 1)} |")
    notes = [f"- {short_line(n, 300)}" for n in report.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def _rate_cell(m: ScaleMeasure | None) -> str:
    if m is None:
        return "not run"
    if m.error:
        return short_line(m.error, 120)
    cell = f"{m.records_per_s:,.0f}"
    if m.member_rates:
        cell += " (" + " + ".join(f"{r:,.0f}" for r in m.member_rates) + ")"
    if m.idle_members:
        cell += f", {m.idle_members} idle"
    return cell


def write_share_outputs(report: ShareReport, out_dir: Path) -> Path:
    """``share-<time>.json`` and ``share-latest.{json,md}`` under ``out_dir``."""
    return write_outputs(report.to_json(), markdown(report), out_dir, "share")
