"""What a switch costs the records, as a user feels it: the processing gap and the end-to-end latency around it.

The controller times its own steps (``SwitchResult.seconds``); partitions can stay without a processing owner
for much longer than that, e.g. while a new group joins.  This module measures it from the run's logs, after
the fact, and judges nothing: the scenario runner (:mod:`pyrallel_tools.bluegreen.scenarios`) writes its
figures into the run file and the report shows them next to the controller's step time.

Definitions (also in ``docs/bluegreen-tools.md``): a record counts once, at its first handling (the earliest
``ts`` of its ``seq`` in the consumers' logs) and at its earliest acknowledged send (the producer's ``ts``).
On each partition, in order of handling, record ``r`` waited without anyone handling it for
``h(r) - max(produced(r), h(previous record handled on the partition))`` (at least 0).  The **processing gap**
of a switch is the longest such wait of a record handled from the switch's start until the next switch starts
(or the run ends).  The **latency** of a record is ``h(r) - produced(r)``; a switch's latency figures are over
the records produced in the same window (from its start until the next switch starts, or the run ends): a
group that spreads its partitions after the switch (a rebalance seconds later) is part of what the switch costs.
Sink files (strategy E) have handling times only through the sink watcher (:mod:`..sink_watch`), which stamps
their lines as it sees them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyrallel_consumer.bluegreen.controller import Step, SwitchResult
from pyrallel_tools.bluegreen.validation.load import ConsumedRecord, PathLike, ProducedRecord, records_of_files

__all__ = [
    "LatencyBucket",
    "SwitchImpactFigures",
    "SwitchWindow",
    "automatic_rollback_steps",
    "measure_switch_impact",
    "measure_switch_impact_files",
    "switch_windows",
]


@dataclass(frozen=True, slots=True)
class SwitchWindow:
    """One switch or rollback of the run, as the runner recorded it (absolute times, seconds since the epoch)."""

    index: int
    action: str
    strategy: str
    started_at: float
    ended_at: float


@dataclass(frozen=True, slots=True)
class SwitchImpactFigures:
    """The figures of one switch; None when no record with a known handling time falls in its windows."""

    window: SwitchWindow
    processing_gap_s: float | None
    processing_gap_end: float | None
    """When the record that waited longest was handled (the end of the gap), to place it among the run's events."""
    latency_p50_s: float | None
    latency_p99_s: float | None
    latency_max_s: float | None
    records: int
    """Records produced in the latency window and handled, over which the latency figures are taken."""


@dataclass(frozen=True, slots=True)
class LatencyBucket:
    """End-to-end latency of the records produced in ``[t, t + width)``, for the report's latency plot."""

    t: float
    p50_s: float
    max_s: float
    records: int


def automatic_rollback_steps(result: SwitchResult) -> list[Step]:
    """The steps of a switch's automatic rollback: those after its failed step; none for anything else."""
    if result.action != "switch" or not result.rolled_back:
        return []
    failed = next((i for i, s in enumerate(result.steps) if not s.ok), None)
    return result.steps[failed + 1:] if failed is not None else []


def switch_windows(switches: Sequence[SwitchResult]) -> list[SwitchWindow]:
    """The windows of the controller's results; a switch rolled back automatically is a switch and a rollback."""
    windows: list[SwitchWindow] = []
    for index, result in enumerate(switches):
        end = result.started_at + result.seconds
        rollback = automatic_rollback_steps(result)
        if rollback:
            windows.append(SwitchWindow(index, result.action, result.strategy, result.started_at,
                                        rollback[0].started_at))
            windows.append(SwitchWindow(index, "rollback", result.strategy, rollback[0].started_at,
                                        rollback[-1].started_at + rollback[-1].seconds))
        else:
            windows.append(SwitchWindow(index, result.action, result.strategy, result.started_at, end))
    return windows


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def measure_switch_impact(
    produced: Iterable[ProducedRecord],
    consumed: Iterable[ConsumedRecord],
    windows: Sequence[SwitchWindow],
    bucket_s: float = 1.0,
) -> tuple[list[SwitchImpactFigures], list[LatencyBucket]]:
    """Per switch (in ``windows`` order) its figures, and the run's latency per ``bucket_s`` of production time."""
    produced_at: dict[int, float] = {}
    for p in produced:
        known = produced_at.get(p.seq)
        if known is None or p.ts < known:
            produced_at[p.seq] = p.ts
    first: dict[int, tuple[float, int]] = {}
    for c in consumed:
        if c.ts is None or c.partition < 0:
            continue
        seen = first.get(c.seq)
        if seen is None or c.ts < seen[0]:
            first[c.seq] = (c.ts, c.partition)

    per_partition: dict[int, list[tuple[float, int]]] = {}
    for seq, (handled, partition) in first.items():
        per_partition.setdefault(partition, []).append((handled, seq))
    waits: list[tuple[float, float]] = []  # (handled, wait) of every record with a known send
    for handlings in per_partition.values():
        handlings.sort()
        previous = -math.inf
        for handled, seq in handlings:
            sent = produced_at.get(seq)
            if sent is not None:
                waits.append((handled, max(0.0, handled - max(sent, previous))))
            previous = handled
    latencies = sorted((produced_at[seq], max(0.0, handled - produced_at[seq]))
                       for seq, (handled, _) in first.items() if seq in produced_at)

    figures: list[SwitchImpactFigures] = []
    starts = sorted(w.started_at for w in windows)
    for window in windows:
        following = min((s for s in starts if s > window.started_at), default=math.inf)
        gap = max(((wait, handled) for handled, wait in waits if window.started_at <= handled < following),
                  default=None)
        mine = sorted(lat for sent, lat in latencies if window.started_at <= sent < following)
        figures.append(SwitchImpactFigures(
            window, None if gap is None else gap[0], None if gap is None else gap[1],
            _percentile(mine, 0.5) if mine else None, _percentile(mine, 0.99) if mine else None,
            mine[-1] if mine else None, len(mine)))
    return figures, _buckets(latencies, bucket_s)


def _buckets(latencies: Sequence[tuple[float, float]], width: float) -> list[LatencyBucket]:
    """``latencies`` are (produced, latency) in produced order; empty buckets are left out."""
    out: list[LatencyBucket] = []
    i = 0
    while i < len(latencies):
        start = latencies[0][0] + width * math.floor((latencies[i][0] - latencies[0][0]) / width)
        j = i + 1
        while j < len(latencies) and latencies[j][0] < start + width:
            j += 1
        values = sorted(lat for _, lat in latencies[i:j])
        out.append(LatencyBucket(start, _percentile(values, 0.5), values[-1], len(values)))
        i = j
    return out


def measure_switch_impact_files(
    producer_logs: Iterable[PathLike],
    consumer_logs: Iterable[PathLike],
    windows: Sequence[SwitchWindow],
) -> tuple[list[SwitchImpactFigures], list[LatencyBucket]]:
    """:func:`measure_switch_impact` over log files; malformed lines are skipped (the judge counts them)."""
    produced, consumed = records_of_files(producer_logs, consumer_logs)
    return measure_switch_impact(produced, consumed, windows)
