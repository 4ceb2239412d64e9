"""The judge of a blue/green switch run: loss, duplicates, per-key order and dual-active windows.

The load producer logs every *acknowledged* send, each consumer instance logs every record it
handled.  Comparing the two after the run is the only way to prove "zero loss" independently of
the consumer's own bookkeeping, so this module is deliberately pure: :func:`validate` turns records
(from :mod:`pyrallel_tools.bluegreen.validation.load`) into a
:class:`~pyrallel_tools.bluegreen.validation.findings.ValidationReport`.  It is called by
:func:`pyrallel_tools.bluegreen.validation.from_logs.validate_files` (``pyrallel validate`` and the
scenario runner) and by tests.

Definitions used throughout (all counts are exact, samples are capped at ``SAMPLE_LIMIT``):

* **lost** - acked by the producer, handled by nobody, and not reported as *pending* by the
  caller's drain phase.  Only this (and dual activity) makes a run fail.
* **pending** - acked, not handled, but still in the topic behind the group's committed offset
  (``pending_seqs``); not lost because a consumer will still get it.
* **unique_consumed** - distinct handled seqs, unexpected ones included.
* **duplicates** - handled events beyond the first one for a seq; ``duplicates_by_color``
  charges each repeat to the color of the *repeating* event.
* **cross_color_duplicates** - seqs handled by at least two different colors.
* **unexpected** - handled seqs the producer never logged as acked (e.g. it crashed between send
  and ack).  Reported, never counted as loss.
* **instance order violation** - within one instance's log, in file order, per key: a record whose
  ``key_seq`` is lower than the highest ``key_seq`` that instance already handled for the key
  *and* that ``key_seq`` was never handled by that instance before.  Re-handling an already
  handled ``key_seq`` (redelivery / replay after a restart) is a duplicate, not a violation.
* **global order violation** - the same rule over all instances and colors, with events sorted
  by handled ``ts`` (ties keep input order) and "already handled" meaning by *anyone*.  This is
  what catches two colors interleaving one key during a switch; it is sensitive to clock skew
  between hosts.  Events without ``ts`` are skipped.
* **activity interval** - per color, timed events sorted by ``ts``; consecutive events at most
  ``activity_gap_s`` apart belong to one interval ``[first_ts, last_ts]`` (a lone event gives a
  zero-length interval).
* **dual-active window** - for each pair of colors, a maximal interval contained in an activity
  interval of both colors, i.e. one connected piece of the intersection of the two interval sets.
  A window is reported unless it is shorter than ``dual_active_gap_s``; with the default ``0.0``
  even an instantaneous overlap (one green record handled inside blue's activity) counts,
  because that is exactly the bug blue/green switching must not have.
"""

from __future__ import annotations

import heapq
import logging
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping
from itertools import combinations
from typing import Any

from pyrallel_tools.bluegreen.validation.findings import (
    SAMPLE_LIMIT,
    ColorStats,
    DualActiveWindow,
    OrderViolation,
    RecordRef,
    ValidationReport,
)
from pyrallel_tools.bluegreen.validation.load import ConsumedRecord, LoadStats, ProducedRecord

__all__ = ["validate"]

logger = logging.getLogger(__name__)


class _Source:
    """Per (color, instance) accumulator; parallel lists instead of objects keep 1M events cheap."""

    __slots__ = ("color_index", "instance", "key_states", "keys", "kseqs", "seqs", "ts")

    def __init__(self, color_index: int, instance: str) -> None:
        self.color_index = color_index
        self.instance = instance
        # key -> [max key_seq handled, set of handled key_seqs]
        self.key_states: dict[str, list[Any]] = {}
        self.ts: list[float] = []
        self.seqs: list[int] = []
        self.keys: list[str] = []
        self.kseqs: list[int] = []


def validate(
    produced: Iterable[ProducedRecord],
    consumed: Iterable[ConsumedRecord],
    pending_seqs: Collection[int] = (),
    dual_active_gap_s: float = 0.0,
    *,
    activity_gap_s: float = 1.0,
    load_stats: LoadStats | None = None,
) -> ValidationReport:
    """Judge one run; see the module docstring for the exact definition of every category.

    ``consumed`` must keep each instance's records in that instance's log order (concatenating
    per-instance logs is fine, interleaving is fine too as long as each instance's own order is
    kept).  ``load_stats`` carries malformed-line counts from the loaders into the report.
    """
    if activity_gap_s < 0 or dual_active_gap_s < 0:
        raise ValueError("activity_gap_s and dual_active_gap_s must be >= 0")
    report = ValidationReport(activity_gap_s=activity_gap_s, dual_active_gap_s=dual_active_gap_s)

    produced_seqs = [p.seq for p in produced]
    produced_set = set(produced_seqs)
    report.produced = len(produced_set)
    report.producer_duplicate_seqs = len(produced_seqs) - len(produced_set)
    del produced_seqs

    color_names: list[str] = []
    color_index: dict[str, int] = {}
    color_events: list[int] = []
    color_dups: list[int] = []
    color_first_seq: list[int] = []
    color_last_seq: list[int] = []
    sources: dict[tuple[str, str], _Source] = {}
    seen: dict[int, int] = {}  # seq -> index of the first color that handled it
    cross: dict[int, set[int]] = {}  # seq -> indexes of all colors that handled it
    violations: list[OrderViolation] = []
    viol_by_instance: dict[str, int] = {}
    n_events = 0
    n_dups = 0
    n_inst_viol = 0

    seen_get = seen.get
    cur_color: str | None = None
    cur_inst: str | None = None
    src: _Source | None = None
    ci = 0
    key_states: dict[str, list[Any]] = {}
    ts_append: Callable[[float], None] = _noop_append
    seq_append: Callable[[int], None] = _noop_append
    key_append: Callable[[str], None] = _noop_append
    kseq_append: Callable[[int], None] = _noop_append

    for rec in consumed:
        n_events += 1
        seq = rec.seq
        color = rec.color
        inst = rec.instance
        if inst != cur_inst or color != cur_color:
            cur_inst = inst
            cur_color = color
            src = sources.get((color, inst))
            if src is None:
                idx = color_index.get(color)
                if idx is None:
                    idx = len(color_names)
                    color_index[color] = idx
                    color_names.append(color)
                    color_events.append(0)
                    color_dups.append(0)
                    color_first_seq.append(seq)
                    color_last_seq.append(seq)
                src = _Source(idx, inst)
                sources[(color, inst)] = src
            ci = src.color_index
            key_states = src.key_states
            ts_append = src.ts.append
            seq_append = src.seqs.append
            key_append = src.keys.append
            kseq_append = src.kseqs.append
        color_events[ci] += 1
        color_last_seq[ci] = seq

        first_ci = seen_get(seq)
        if first_ci is None:
            seen[seq] = ci
        else:
            n_dups += 1
            color_dups[ci] += 1
            if first_ci != ci:
                handled_by = cross.get(seq)
                if handled_by is None:
                    cross[seq] = {first_ci, ci}
                else:
                    handled_by.add(ci)

        key = rec.key
        kseq = rec.key_seq
        top = _out_of_order(key_states, key, kseq)
        if top is not None:
            n_inst_viol += 1
            viol_by_instance[inst] = viol_by_instance.get(inst, 0) + 1
            if len(violations) < SAMPLE_LIMIT:
                violations.append(OrderViolation("instance", color, inst, key, kseq, top, seq))

        ts = rec.ts
        if ts is not None:
            ts_append(ts)
            seq_append(seq)
            key_append(key)
            kseq_append(kseq)

    report.consumed = n_events
    report.unique_consumed = len(seen)
    report.duplicates = n_dups
    report.duplicates_by_color = {color_names[i]: c for i, c in enumerate(color_dups) if c}
    report.order_violations_instance = n_inst_viol
    report.order_violations_by_instance = viol_by_instance

    _fill_set_categories(report, produced_set, seen, pending_seqs)
    _fill_cross(report, cross, color_names)

    source_list = list(sources.values())
    timed = sum(len(s.ts) for s in source_list)
    report.untimed_events = n_events - timed
    report.order_violation_sample = violations
    report.order_violations_global = _global_order(source_list, color_names, report.global_order_violation_sample)

    per_color_ts: list[list[float]] = []
    for i, name in enumerate(color_names):
        mine = [s for s in source_list if s.color_index == i]
        ts_all: list[float] = []
        seq_all: list[int] = []
        for s in mine:
            ts_all.extend(s.ts)
            seq_all.extend(s.seqs)
        stats = ColorStats(
            color=name,
            events=color_events[i],
            timed_events=len(ts_all),
            duplicates=color_dups[i],
            instances=sorted({s.instance for s in mine}),
        )
        if ts_all:
            lo = min(ts_all)
            hi = max(ts_all)
            first_i = ts_all.index(lo)
            last_i = len(ts_all) - 1 - ts_all[::-1].index(hi)
            stats.first = RecordRef(seq_all[first_i], lo)
            stats.last = RecordRef(seq_all[last_i], hi)
        else:
            stats.first = RecordRef(color_first_seq[i], None)
            stats.last = RecordRef(color_last_seq[i], None)
        report.colors[name] = stats
        ts_all.sort()
        per_color_ts.append(ts_all)

    report.dual_active_windows = _dual_active(color_names, per_color_ts, activity_gap_s, dual_active_gap_s)

    if load_stats is not None:
        report.malformed_lines = load_stats.malformed_lines
        report.malformed_sample = list(load_stats.malformed_sample)

    logger.info(
        "validation: produced=%d consumed=%d lost=%d pending=%d duplicates=%d unexpected=%d "
        "order_violations=%d dual_active_windows=%d ok=%s",
        report.produced,
        report.consumed,
        report.lost,
        report.pending,
        report.duplicates,
        report.unexpected,
        report.order_violations,
        report.dual_active_count,
        report.ok,
    )
    return report


def _noop_append(_: Any) -> None:
    """Placeholder so the hot loop's cached appenders always have a callable type."""


def _fill_set_categories(
    report: ValidationReport,
    produced_set: set[int],
    seen: Mapping[int, int],
    pending_seqs: Collection[int],
) -> None:
    """Lost/pending/unexpected are plain set algebra once both sides are sets of seqs."""
    missing = produced_set.difference(seen.keys())
    pending_set = set(pending_seqs)
    lost = missing.difference(pending_set)
    report.pending = len(missing) - len(lost)
    report.lost = len(lost)
    report.lost_sample = _smallest(lost)
    unexpected = seen.keys() - produced_set
    report.unexpected = len(unexpected)
    report.unexpected_sample = _smallest(unexpected)


def _smallest(values: Iterable[int]) -> list[int]:
    return heapq.nsmallest(SAMPLE_LIMIT, values)


def _fill_cross(report: ValidationReport, cross: Mapping[int, set[int]], color_names: list[str]) -> None:
    report.cross_color_duplicates = len(cross)
    report.cross_color_sample = _smallest(cross.keys())
    by_pair: dict[str, int] = {}
    for handled_by in cross.values():
        names = sorted(color_names[i] for i in handled_by)
        for a, b in combinations(names, 2):
            pair = f"{a}/{b}"
            by_pair[pair] = by_pair.get(pair, 0) + 1
    report.cross_color_by_pair = by_pair


def _global_order(sources: list[_Source], color_names: list[str], violations: list[OrderViolation]) -> int:
    """Replay all timed events in ts order with the same rule as per instance, across everyone."""
    g_ts: list[float] = []
    g_keys: list[str] = []
    g_kseqs: list[int] = []
    g_seqs: list[int] = []
    g_src: list[int] = []  # boundaries, to recover the color of a violating event
    for s in sources:
        g_ts.extend(s.ts)
        g_keys.extend(s.keys)
        g_kseqs.extend(s.kseqs)
        g_seqs.extend(s.seqs)
        g_src.append(len(g_ts))
    # Each source is usually already sorted by ts, so timsort only merges runs.
    order = sorted(range(len(g_ts)), key=g_ts.__getitem__)
    states: dict[str, list[Any]] = {}
    count = 0
    for i in order:
        key = g_keys[i]
        kseq = g_kseqs[i]
        top = _out_of_order(states, key, kseq)
        if top is not None:
            count += 1
            if len(violations) < SAMPLE_LIMIT:
                src = sources[bisect_right(g_src, i)]
                violations.append(
                    OrderViolation("global", color_names[src.color_index], None, key, kseq, top, g_seqs[i])
                )
    return count


def _out_of_order(states: dict[str, list[Any]], key: str, kseq: int) -> int | None:
    """Track the key_seqs seen per key; return the highest seen so far when ``kseq`` comes after it unseen.

    A key_seq already seen (a replay after a restart) is a duplicate, not an order violation.
    """
    state = states.get(key)
    if state is None:
        states[key] = [kseq, {kseq}]
        return None
    top: int = state[0]
    if kseq > top:
        state[0] = kseq
        state[1].add(kseq)
        return None
    if kseq != top and kseq not in state[1]:
        state[1].add(kseq)
        return top
    return None


def _activity_intervals(ts_sorted: list[float], gap: float) -> list[tuple[float, float]]:
    """Merge sorted timestamps into [first, last] runs whose consecutive gaps are <= ``gap``."""
    intervals: list[tuple[float, float]] = []
    if not ts_sorted:
        return intervals
    start = prev = ts_sorted[0]
    for t in ts_sorted:
        if t - prev > gap:
            intervals.append((start, prev))
            start = t
        prev = t
    intervals.append((start, prev))
    return intervals


def _dual_active(
    color_names: list[str],
    per_color_ts: list[list[float]],
    activity_gap_s: float,
    dual_active_gap_s: float,
) -> list[DualActiveWindow]:
    """Pairwise intersection of activity interval sets; pieces are maximal by construction."""
    intervals = [_activity_intervals(ts, activity_gap_s) for ts in per_color_ts]
    order = sorted(range(len(color_names)), key=color_names.__getitem__)
    windows: list[DualActiveWindow] = []
    for a, b in combinations(order, 2):
        ia, ib = intervals[a], intervals[b]
        i = j = 0
        while i < len(ia) and j < len(ib):
            start = max(ia[i][0], ib[j][0])
            end = min(ia[i][1], ib[j][1])
            if start <= end and end - start >= dual_active_gap_s:
                ta, tb = per_color_ts[a], per_color_ts[b]
                windows.append(
                    DualActiveWindow(
                        colors=(color_names[a], color_names[b]),
                        start=start,
                        end=end,
                        events={
                            color_names[a]: bisect_right(ta, end) - bisect_left(ta, start),
                            color_names[b]: bisect_right(tb, end) - bisect_left(tb, start),
                        },
                    )
                )
            if ia[i][1] < ib[j][1]:
                i += 1
            else:
                j += 1
    windows.sort(key=lambda w: (w.start, w.colors))
    return windows

