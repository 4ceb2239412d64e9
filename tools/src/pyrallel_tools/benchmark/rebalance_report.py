"""Results of ``pyrallel bench --suite rebalance``: one measurement per event, medians and maxima, the
library/plain ratios, the markdown table and the JSON files. Pure code except :func:`write_rebalance_outputs`.

Built by the runner (:mod:`pyrallel_tools.benchmark.rebalance`) on the main thread once every contender ran.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from pyrallel_tools.benchmark.results import short_line

CONTENDERS: Final = {
    "plain": "plain confluent-kafka group (cooperative-sticky, subscribe + poll)",
    "pyrallel": "PyrallelConsumer (this library, async engine, no-op handler)",
}
"""Contender id -> its name in the tables; the ratios are pyrallel / plain."""
EVENTS: Final = {
    "join": "a member joins (3 -> 4)",
    "leave": "a member leaves cleanly (4 -> 3)",
}
TARGET_RATIO: Final = 1.2
"""The issue's target: the library's hand-over within 1.2x the plain group's. Reported, never asserted."""


@dataclass(slots=True)
class EventMeasure:
    """One event of one contender: ``start`` is the joiner's subscribe or the leaver's leave (epoch seconds)."""

    contender: str
    event: str
    repetition: int
    member: str
    start: float = 0.0
    max_unowned_s: float | None = None
    unowned_partitions: int = 0
    settle_s: float | None = None
    changes: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class Summary:
    """Median and maximum over the repetitions of one event of one contender (successful ones only)."""

    contender: str
    event: str
    runs: int
    max_unowned_median_s: float | None
    max_unowned_max_s: float | None
    settle_median_s: float | None
    settle_max_s: float | None


@dataclass(frozen=True, slots=True)
class Ratio:
    """pyrallel / plain of the medians of one event; None when either side has no measurement (or plain's is 0)."""

    event: str
    max_unowned: float | None
    settle: float | None


@dataclass(slots=True)
class RebalanceReport:
    machine: dict[str, Any]
    config: dict[str, Any]
    measures: list[EventMeasure] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """Contender id -> why its run stopped early (its measures so far are kept)."""
    duration_s: float = 0.0

    def finish(self) -> None:
        """Compute the summaries and the ratios from the measures."""
        self.summaries = [summarize(self.measures, c, e) for c in CONTENDERS for e in EVENTS]
        self.ratios = [ratios(self.summaries, e) for e in EVENTS]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def summarize(measures: list[EventMeasure], contender: str, event: str) -> Summary:
    ok = [m for m in measures if m.contender == contender and m.event == event and not m.error]
    unowned = [m.max_unowned_s for m in ok if m.max_unowned_s is not None]
    settle = [m.settle_s for m in ok if m.settle_s is not None]
    return Summary(contender, event, len(ok), _median(unowned), _max(unowned), _median(settle), _max(settle))


def ratios(summaries: list[Summary], event: str) -> Ratio:
    def of(contender: str) -> Summary | None:
        return next((s for s in summaries if s.contender == contender and s.event == event), None)

    ours, plain = of("pyrallel"), of("plain")
    if ours is None or plain is None:
        return Ratio(event, None, None)
    return Ratio(event, _ratio(ours.max_unowned_median_s, plain.max_unowned_median_s),
                 _ratio(ours.settle_median_s, plain.settle_median_s))


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _max(values: list[float]) -> float | None:
    return round(max(values), 4) if values else None


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return round(value / reference, 3)


def markdown(report: RebalanceReport) -> str:
    """The configuration line, the figures per contender and event, the ratios, and any errors."""
    cfg = report.config
    kafka = ", ".join(f"`{k}={v}`" for k, v in cfg.get("kafka", {}).items()) or "none (librdkafka defaults)"
    parts = [f"Topic of {cfg.get('partitions', '?')} partitions, {cfg.get('rate', '?')} records/s produced "
             f"throughout; {cfg.get('members', '?')} members settled, then per repetition one joins and one "
             f"leaves; {cfg.get('repetitions', '?')} repetitions. Extra librdkafka properties (both contenders): "
             f"{kafka}. Total time {report.duration_s:.0f} s.",
             _figures_table(report), _ratio_table(report)]
    failed = [m for m in report.measures if m.error]
    notes = [f"- {CONTENDERS.get(c, c)}: {short_line(e, 160)}" for c, e in report.errors.items()]
    notes += [f"- {m.contender} {m.event} #{m.repetition}: {short_line(m.error, 160)}" for m in failed]
    if notes:
        parts.append("Errors:\n\n" + "\n".join(notes))
    return "\n\n".join(parts) + "\n"


def _figures_table(report: RebalanceReport) -> str:
    rows = ["| event | contender | runs | longest unowned partition: median s | max s | settled after: median s "
            "| max s |", "|---|---|---:|---:|---:|---:|---:|"]
    for s in report.summaries:
        rows.append(f"| {EVENTS.get(s.event, s.event)} | {CONTENDERS.get(s.contender, s.contender)} | {s.runs} "
                    f"| {_num(s.max_unowned_median_s)} | {_num(s.max_unowned_max_s)} | {_num(s.settle_median_s)} "
                    f"| {_num(s.settle_max_s)} |")
    return "\n".join(rows)


def _ratio_table(report: RebalanceReport) -> str:
    rows = ["| event | longest unowned: library / plain (medians) | settled after: library / plain (medians) "
            "| issue's target |", "|---|---:|---:|---:|"]
    for r in report.ratios:
        rows.append(f"| {EVENTS.get(r.event, r.event)} | {_x(r.max_unowned)} | {_x(r.settle)} "
                    f"| within {TARGET_RATIO:g}x |")
    return "\n".join(rows)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def write_rebalance_outputs(report: RebalanceReport, out_dir: Path, name: str = "rebalance") -> Path:
    """``<name>-<time>.json``, ``<name>-latest.json`` and ``<name>-latest.md`` under ``out_dir``; the first path."""
    return write_outputs(report.to_json(), markdown(report), out_dir, name)


def write_outputs(json_text: str, markdown_text: str, out_dir: Path, name: str) -> Path:
    """A suite's result files (the rebalance, recovery and scale suites'): ``<name>-<time>.json``,
    ``<name>-latest.json`` and ``<name>-latest.md`` under ``out_dir``; the first path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json_text)
    (out_dir / f"{name}-latest.json").write_text(json_text)
    (out_dir / f"{name}-latest.md").write_text(markdown_text)
    return path
