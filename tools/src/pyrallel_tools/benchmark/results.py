"""Results of ``pyrallel bench``: what each contender reported, the ratios against the targets, and the tables.

Pure code (no broker, no processes), so it is unit-tested and a report can be rebuilt from a results file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from pyrallel_tools.benchmark.harness import LOG_LINE_BYTES, RESULT_PREFIX

WORKLOAD_TITLES: Final = {
    "noop": "No-op handler",
    "sleep5ms": "I/O-bound: 5 ms sleep per record",
    "cpu2ms": "CPU-bound: about 2 ms of pure Python per record",
}




class ResultError(ValueError):
    """A contender's output or a results file is not what the runner expects; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Guarantees:
    key_order: str
    """Per-key order: "yes", "per partition", or "no"."""
    completed_only: str
    """Whether only offsets of completed records are committed."""
    offset_map: str
    """Whether records completed above the committed offset are remembered across a restart (no re-run)."""


@dataclass(frozen=True, slots=True)
class ContenderInfo:
    id: str
    name: str
    family: str
    """"reference", "pyrallel" (this library) or "peer"."""
    guarantees: Guarantees
    ordering: str = ""
    """"key", "partition" or "unordered" for contenders with a choice of ordering; empty otherwise."""
    group: str = ""
    """The implementation, whatever the ordering (e.g. "pyrallel-consumer 1.0.0"): peers are compared per group."""
    available: bool = True
    reason: str = ""
    """Why it could not run (install or build failure), when not available."""
    version: str = ""


@dataclass(slots=True)
class Throughput:
    contender: str
    workload: str
    keys: int
    limit: int
    handled: int = 0
    counted: int = 0
    seconds: float = 0.0
    records_per_s: float = 0.0
    peak_rss_mb: float | None = None
    cpu_s_per_1k: float | None = None
    error: str = ""


@dataclass(slots=True)
class Latency:
    contender: str
    rate: int
    records: int
    workload: str = "sleep5ms"
    keys: int = 0
    samples: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    cdf: list[tuple[float, float]] = field(default_factory=list)
    """(latency in ms, fraction of records at or below it), at most 200 points."""
    error: str = ""


@dataclass(slots=True)
class Restart:
    contender: str
    workload: str
    keys: int
    records: int
    rate: int = 0
    handled_before_kill: int = 0
    handled_after_restart: int = 0
    duplicates: int = 0
    """Records handled more than once (counted once per extra handling)."""
    missing: int | None = None
    """Records never handled; None when the second run did not get to the end in its time."""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    measured: float | None
    goal: float
    met: bool | None
    """None when it could not be measured."""
    note: str = ""


@dataclass(slots=True)
class BenchReport:
    machine: dict[str, Any]
    config: dict[str, Any]
    contenders: list[ContenderInfo] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    restart: list[Restart] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    duration_s: float = 0.0

    def cell(self, contender_id: str, workload: str, keys: int) -> Throughput | None:
        """The successful throughput measurement of that contender on that topic, if any."""
        for m in self.throughput:
            if (m.contender, m.workload, m.keys) == (contender_id, workload, keys) and not m.error and m.counted:
                return m
        return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def report_from_json(text: str) -> BenchReport:
    """A :class:`BenchReport` back from :meth:`BenchReport.to_json` (to rebuild tables and plots)."""
    try:
        raw = json.loads(text)
        return BenchReport(
            machine=dict(raw["machine"]), config=dict(raw["config"]),
            contenders=[ContenderInfo(**{**c, "guarantees": Guarantees(**c["guarantees"])}) for c in raw["contenders"]],
            throughput=[Throughput(**t) for t in raw["throughput"]],
            latency=[Latency(**{**lat, "cdf": [tuple(p) for p in lat["cdf"]]}) for lat in raw["latency"]],
            restart=[Restart(**r) for r in raw["restart"]],
            targets=[Target(**t) for t in raw["targets"]],
            duration_s=float(raw.get("duration_s", 0.0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ResultError(f"not a pyrallel bench results file: {exc}") from exc


def parse_result_line(stdout: str) -> dict[str, Any]:
    """The JSON result a contender printed (the first line marked with the harness's prefix)."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            try:
                result = json.loads(line[len(RESULT_PREFIX):])
            except ValueError as exc:
                raise ResultError(f"the result line is not JSON: {exc}: {line[:200]!r}") from exc
            if not isinstance(result, dict):
                raise ResultError(f"the result line is not a JSON object: {line[:200]!r}")
            return result
    raise ResultError("the contender printed no result line")


def apply_result(m: Throughput, result: Mapping[str, Any]) -> None:
    """Copy a contender's result into ``m``; a result that carries an error or lacks a field sets ``m.error``."""
    if result.get("error"):
        m.error = str(result["error"])
        return
    try:
        m.handled, m.counted = int(result["handled"]), int(result["counted"])
        m.seconds, m.records_per_s = float(result["seconds"]), float(result["records_per_s"])
    except (KeyError, TypeError, ValueError) as exc:
        m.error = f"incomplete result ({exc!r}): {dict(result)}"


def parse_log(data: bytes) -> list[tuple[int, int, int]]:
    """(sequence number, produce µs, done µs) per line of a handled-records log; a torn last line is ignored."""
    rows = []
    for start in range(0, len(data) - LOG_LINE_BYTES + 1, LOG_LINE_BYTES):
        parts = data[start:start + LOG_LINE_BYTES].split()
        if len(parts) != 3:
            raise ResultError(f"malformed log line at byte {start}: {data[start:start + LOG_LINE_BYTES]!r}")
        rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return rows


def latency_stats(m: Latency, rows: Iterable[tuple[int, int, int]], warmup_s: float = 0.5,
                  cdf_points: int = 200) -> None:
    """Fill ``m`` from a latency run's log: end-to-end latency = done time - produce time.

    Only records that carry a produce time count (warm-up records do not), and of those the ones produced in the
    first ``warmup_s`` of the rate-limited production are left out.
    """
    rows = [r for r in rows if r[1] > 0]
    if not rows:
        m.error = m.error or "no record with a produce time was handled"
        return
    start = min(produced for _, produced, _ in rows) + int(warmup_s * 1e6)
    values = sorted((done - produced) / 1000 for _, produced, done in rows if produced >= start)
    if not values:
        m.error = m.error or "every handled record was produced during the warm-up"
        return
    m.samples = len(values)
    m.p50_ms, m.p99_ms, m.max_ms = percentile(values, 50), percentile(values, 99), round(values[-1], 2)
    step = max(1, len(values) // cdf_points)
    picks = list(range(0, len(values), step))
    if picks[-1] != len(values) - 1:
        picks.append(len(values) - 1)
    m.cdf = [(round(values[i], 3), round((i + 1) / len(values), 4)) for i in picks]


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ResultError("percentile of no values")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 2)


def restart_stats(m: Restart, first: Sequence[tuple[int, int, int]], second: Sequence[tuple[int, int, int]],
                  finished: bool) -> None:
    """Duplicates (every handling of a record beyond its first) and missing records over both runs."""
    seqs = [seq for seq, _, _ in (*first, *second)]
    distinct = set(seqs)
    m.handled_before_kill, m.handled_after_restart = len(first), len(second)
    m.duplicates = len(seqs) - len(distinct)
    m.missing = m.records - len(distinct & set(range(m.records))) if finished else None


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


# --- targets ---------------------------------------------------------------------------------------------------


def compute_targets(report: BenchReport) -> list[Target]:
    """The issue's targets, each as a ratio of two measurements of this run (None when one is missing)."""
    rate = _rates(report)
    targets: list[Target] = []
    ran = set(report.config.get("records", {})) or {m.workload for m in report.throughput}
    if "sleep5ms" in ran:
        targets += _io_targets(report)
    for keys in sorted({m.keys for m in report.throughput if m.workload == "noop" and m.contender == "bare"}):
        targets.append(_target(f"no-op, {keys:,} keys: async engine vs a bare confluent-kafka consume() loop",
                               ratio(rate("async-key", "noop", keys), rate("bare", "noop", keys)), 0.25))
    for keys in sorted({m.keys for m in report.throughput if m.workload == "noop" and m.contender == "aio-gather"}):
        targets.append(_target(f"no-op, {keys:,} keys: async engine (key order) vs AIOConsumer + asyncio.gather "
                               "(no order kept)", ratio(rate("async-key", "noop", keys),
                                                        rate("aio-gather", "noop", keys)), 1.5))
    if "cpu2ms" in ran:
        cpu_keys = report.config.get("cpu_keys", 1000)
        targets.append(_target("CPU 2 ms: process engine (2 workers) vs async engine", ratio(
            rate("process-key", "cpu2ms", cpu_keys), rate("async-key", "cpu2ms", cpu_keys)), 1.7))
    targets += _peer_targets(report)
    return targets


def _io_targets(report: BenchReport) -> list[Target]:
    rate = _rates(report)
    targets: list[Target] = []
    base100, base1000 = rate("baseline", "sleep5ms", 100), rate("baseline", "sleep5ms", 1000)
    ideal100 = 100 * base100 if base100 else None
    targets.append(_target("I/O 5 ms, 100 keys: async engine (key order) vs the ideal 100x the sequential baseline",
                           ratio(rate("async-key", "sleep5ms", 100), ideal100), 0.95,
                           "ideal = 100 keys in parallel, each at the baseline's rate"))
    targets.append(_target("I/O 5 ms, 1,000 keys: async engine (key order) vs the sequential baseline",
                           ratio(rate("async-key", "sleep5ms", 1000), base1000), 600.0))
    eos = _mean_rate(report, "async-key-eos", "sleep5ms", 1000)
    if eos is not None:
        targets.append(_target("I/O 5 ms, 1,000 keys: exactly-once vs at-least-once (async engine, key order)",
                               ratio(eos, _mean_rate(report, "async-key", "sleep5ms", 1000)), 0.8,
                               "means over the runs of each; exactly-once counts records whose transaction committed"))
    return targets


def _mean_rate(report: BenchReport, contender_id: str, workload: str, keys: int) -> float | None:
    """The mean rate of every run of a contender on one workload and key count (the eos suite runs each twice)."""
    rates = [m.records_per_s for m in report.throughput if (m.contender, m.workload, m.keys) == (
        contender_id, workload, keys) and m.records_per_s]
    return sum(rates) / len(rates) if rates else None


def _peer_targets(report: BenchReport) -> list[Target]:
    """One target per peer (and way of comparing): this library's lowest throughput ratio over every workload and
    key count the peer ran, in the same ordering; peers without per-key order are compared with this library in
    key order (its default) and, where measured, unordered."""
    rate = _rates(report)
    groups: dict[tuple[str, str], list[tuple[float | None, str]]] = {}
    for m in sorted(report.throughput, key=lambda t: (t.workload, t.keys)):
        info = _info(report, m.contender)
        if info is None or info.family != "peer" or m.error or not m.counted:
            continue
        engine = "process" if m.workload == "cpu2ms" else "async"
        ways = [(info.ordering, "same ordering")] if info.ordering else [("key", "this library in key order"),
                                                                           ("unordered", "both unordered")]
        for ordering, how in ways:
            ours = rate(f"{engine}-{ordering}", m.workload, m.keys)
            if ours is None and ordering == "unordered":
                continue
            cell = f"{m.workload} {m.keys:,} keys" + (f" {info.ordering}" if info.ordering else "")
            groups.setdefault((info.group or info.name, how), []).append((ratio(ours, m.records_per_s), cell))
    targets = []
    for (group, how), cells in groups.items():
        measured = [r for r, _ in cells if r is not None]
        behind = [f"{cell} ({r:.2f}x)" for r, cell in cells if r is not None and r < 1.0]
        note = f"{how}; lowest ratio over {len(cells)} runs" + (f"; behind on: {', '.join(behind)}" if behind else "")
        targets.append(_target(f"ahead of {group} on every workload", min(measured) if measured else None, 1.0,
                               note))
    return targets


def _info(report: BenchReport, contender_id: str) -> ContenderInfo | None:
    return next((c for c in report.contenders if c.id == contender_id), None)


def _display(report: BenchReport, contender_id: str) -> str:
    info = _info(report, contender_id)
    return info.name if info is not None else contender_id


def _rates(report: BenchReport) -> Any:
    def rate(contender_id: str, workload: str, keys: int) -> float | None:
        m = report.cell(contender_id, workload, keys)
        return m.records_per_s if m is not None else None
    return rate


def _target(name: str, measured: float | None, goal: float, note: str = "") -> Target:
    met = None if measured is None else measured >= goal
    return Target(name, None if measured is None else round(measured, 3), goal, met, note)


# --- markdown ----------------------------------------------------------------------------------------------------


def markdown(report: BenchReport) -> str:
    """Every table of the report: throughput per workload, latency, restart, guarantees, targets, unavailable."""
    parts = [_config_line(report)]
    for workload in WORKLOAD_TITLES:
        table = throughput_table(report, workload)
        if table:
            parts += [f"### {WORKLOAD_TITLES[workload]}", table]
    if report.latency:
        parts += ["### End-to-end latency: produce time to handler done, records produced at a fixed rate",
                  latency_table(report)]
    if report.restart:
        parts += ["### At-least-once check: SIGKILL half-way through a fixed-rate production, restart in the same "
                  "group", restart_table(report)]
    parts += ["### What each contender guarantees", guarantees_table(report)]
    if report.targets:
        parts += ["### Targets (ratios measured in this run)", targets_table(report)]
    unavailable = [c for c in report.contenders if not c.available]
    if unavailable:
        parts += ["### Peers that could not run",
                  "\n".join(f"- **{c.name}**: {c.reason}" for c in unavailable)]
    return "\n\n".join(parts) + "\n"


def _config_line(report: BenchReport) -> str:
    cfg = report.config
    records = ", ".join(f"{w} {n:,}" for w, n in cfg.get("records", {}).items())
    return (f"Topics of {cfg.get('partitions', '?')} partitions, {cfg.get('topic_records', 0):,} records each "
            f"(keys: {', '.join(f'{k:,}' for k in cfg.get('keys', []))}); records consumed per run at most: "
            f"{records}, each run also stops {cfg.get('max_seconds', '?')} s after its first record. "
            f"Concurrency: {cfg.get('concurrency', '?')} records in flight for I/O contenders, "
            f"{cfg.get('workers', '?')} processes for CPU contenders. Total bench time {report.duration_s:.0f} s.")


REFERENCE: Final = {"noop": "bare"}
"""The contender each workload's ratios are taken against (the sequential baseline where not listed): a no-op
handler's ceiling is the bare consume() loop."""


def throughput_table(report: BenchReport, workload: str) -> str:
    cells = [m for m in report.throughput if m.workload == workload]
    if not cells:
        return ""
    keys = sorted({m.keys for m in cells})
    ref_keys = 1000 if 1000 in keys else keys[0]
    reference = REFERENCE.get(workload, "baseline")
    ref_name = "bare loop" if reference == "bare" else "baseline"
    order = list(dict.fromkeys(m.contender for m in cells))
    header = ["contender", *(f"{k:,} keys: rec/s (x {ref_name})" for k in keys),
              f"peak RSS MB ({ref_keys:,} keys)", f"CPU s / 1k rec ({ref_keys:,} keys)"]
    rows = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for contender_id in order:
        row = [_display(report, contender_id)]
        for k in keys:
            row.append(_throughput_cell(report, contender_id, workload, k, reference))
        ref = next((m for m in cells if m.contender == contender_id and m.keys == ref_keys), None)
        row.append(number_cell(ref.peak_rss_mb, 0) if ref else "")
        row.append(number_cell(ref.cpu_s_per_1k, 3) if ref else "")
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)


def _throughput_cell(report: BenchReport, contender_id: str, workload: str, keys: int, reference: str) -> str:
    m = next((t for t in report.throughput if (t.contender, t.workload, t.keys) == (contender_id, workload, keys)),
             None)
    if m is None:
        return ""
    if m.error:
        return f"failed: {short_line(m.error)}"
    base = report.cell(reference, workload, keys)
    x = ratio(m.records_per_s, base.records_per_s if base else None)
    if x is None or contender_id == reference:
        return f"{m.records_per_s:,.0f}"
    return f"{m.records_per_s:,.0f} ({x:,.{3 if x < 0.1 else 2 if x < 10 else 1}f}x)"


def latency_table(report: BenchReport) -> str:
    rows = ["| workload | contender | rate (rec/s) | records measured | p50 ms | p99 ms | max ms |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for m in report.latency:
        where = f"{m.workload}, {m.keys:,} keys"
        if m.error:
            rows.append(f"| {where} | {_display(report, m.contender)} | {m.rate:,} | - | {short_line(m.error)} | | |")
        else:
            rows.append(f"| {where} | {_display(report, m.contender)} | {m.rate:,} | {m.samples:,} "
                        f"| {number_cell(m.p50_ms, 1)} | {number_cell(m.p99_ms, 1)} | {number_cell(m.max_ms, 1)} |")
    return "\n".join(rows)


def restart_table(report: BenchReport) -> str:
    rows = ["| workload | contender | records (rate/s) | handled before the kill | handled after the restart "
            "| duplicates | missing |", "|---|---|---:|---:|---:|---:|---:|"]
    for m in report.restart:
        name, where, records = _display(report, m.contender), f"{m.workload}, {m.keys:,} keys", f"{m.records:,}"
        if m.rate:
            records += f" ({m.rate:,}/s)"
        if m.error:
            rows.append(f"| {where} | {name} | {records} | {short_line(m.error)} | | | |")
            continue
        missing = "not finished in time" if m.missing is None else f"{m.missing:,}"
        rows.append(f"| {where} | {name} | {records} | {m.handled_before_kill:,} | {m.handled_after_restart:,} "
                    f"| {m.duplicates:,} | {missing} |")
    return "\n".join(rows)


def guarantees_table(report: BenchReport) -> str:
    rows = ["| contender | version | per-key order | commits only completed records | offset map (no re-run of "
            "completed records after a restart) |", "|---|---|---|---|---|"]
    for c in report.contenders:
        g = c.guarantees
        version = c.version if c.available else f"unavailable: {short_line(c.reason, 60)}"
        rows.append(f"| {c.name} | {version} | {g.key_order} | {g.completed_only} | {g.offset_map} |")
    return "\n".join(rows)


def targets_table(report: BenchReport) -> str:
    rows = ["| target | measured | goal | met |", "|---|---:|---:|---|"]
    for t in report.targets:
        met = "not measured" if t.met is None else ("yes" if t.met else "**no**")
        measured = "-" if t.measured is None else f"{t.measured:,.2f}x"
        note = f" ({t.note})" if t.note else ""
        rows.append(f"| {t.name}{note} | {measured} | {t.goal:g}x | {met} |")
    return "\n".join(rows)


def number_cell(value: float | None, digits: int) -> str:
    """A table cell: ``value`` with thousands separators and ``digits`` decimals, ``-`` for None."""
    return "-" if value is None else f"{value:,.{digits}f}"


def short_line(text: str, limit: int = 80) -> str:
    """``text`` on one line for a Markdown list or table cell (whitespace runs as one space, ``|`` as ``/``), cut
    to ``limit`` characters with an ellipsis; every bench suite's error notes."""
    one_line = " ".join(text.split()).replace("|", "/")
    return one_line if len(one_line) <= limit else one_line[:limit - 1] + "…"
