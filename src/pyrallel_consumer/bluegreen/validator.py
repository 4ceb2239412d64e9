"""Offline judge of a blue/green switch run: loss, duplicates, per-key order and dual-active windows.

The load producer logs every *acknowledged* send, each consumer instance logs every record it
handled.  Comparing the two after the run is the only way to prove "zero loss" independently of
the consumer's own bookkeeping, so this module is deliberately pure: loaders turn JSONL files into
records, :func:`validate` turns records into a :class:`ValidationReport`.

Definitions used throughout (all counts are exact, samples are capped at :data:`SAMPLE_LIMIT`):

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
import json
import logging
import os
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

__all__ = [
    "SAMPLE_LIMIT",
    "ColorStats",
    "ConsumedRecord",
    "DualActiveWindow",
    "LoadStats",
    "OrderViolation",
    "ProducedRecord",
    "RecordRef",
    "ValidationReport",
    "load_consumer_log",
    "load_producer_log",
    "load_sink_file",
    "validate",
    "validate_files",
]

logger = logging.getLogger(__name__)

SAMPLE_LIMIT = 20
"""Maximum length of every sample list in a report; counts are always exact."""

_MALFORMED_LOG_LIMIT = 5
_UNKNOWN = -1

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------
# Records


@dataclass(slots=True)
class ProducedRecord:
    """One acknowledged send, as logged by the load producer."""

    seq: int
    key: str
    key_seq: int
    partition: int
    offset: int
    ts: float


@dataclass(slots=True)
class ConsumedRecord:
    """One handled record; ``ts`` is None and partition/offset -1 when the source cannot know."""

    seq: int
    key: str
    key_seq: int
    partition: int
    offset: int
    color: str
    instance: str
    ts: float | None


@dataclass(slots=True)
class LoadStats:
    """Shared counter for loaders: malformed lines must be reported, not abort a multi-GB check."""

    lines: int = 0
    malformed_lines: int = 0
    malformed_sample: list[str] = field(default_factory=list)

    def _malformed(self, path: str, lineno: int, reason: str) -> None:
        self.malformed_lines += 1
        if len(self.malformed_sample) < SAMPLE_LIMIT:
            self.malformed_sample.append(f"{path}:{lineno}: {reason}")
        if self.malformed_lines <= _MALFORMED_LOG_LIMIT:
            logger.warning("malformed line %s:%d (%s)", path, lineno, reason)


# --------------------------------------------------------------------------------------------
# Loaders
#
# The parse step is inlined in each loader on purpose: json's C scanner costs ~0.9 us a line and
# every extra Python call or generator layer adds another 10-20% at a million lines.

_raw_decode = json.JSONDecoder().raw_decode
_loads = json.loads
_PARSE_ERRORS = (ValueError, KeyError, TypeError)  # ValueError covers JSON and UTF-8 errors


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    if isinstance(exc, TypeError):
        return "not a JSON object"
    return f"{type(exc).__name__}: {exc}"


def _skip(st: LoadStats, name: str, lineno: int, line: bytes, exc: Exception) -> None:
    """Blank lines are allowed anywhere; anything else that failed to parse is malformed."""
    if line.strip():
        st._malformed(name, lineno, _reason(exc))


def _rows(
    path: PathLike, st: LoadStats, fields: tuple[str, ...], unwrap: bool = False
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(line number, field values) of every JSON line of ``path``; unparsable lines are counted and skipped.

    ``unwrap`` accepts a value that is a JSON string holding the object (a double-encoded sink line).
    """
    name = os.fspath(path)
    raw_decode = _raw_decode
    loads = _loads
    lineno = 0
    try:
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    text = line.decode()
                    try:
                        d, end = raw_decode(text)
                        if end != len(text) and not text[end:].isspace():
                            d = loads(text.strip())  # raises "Extra data"
                    except ValueError:
                        d = loads(text.strip())  # leading blanks are fine, real errors re-raise
                    if unwrap and type(d) is str:
                        d = loads(d)
                    values = tuple(d[f] for f in fields)
                except _PARSE_ERRORS as exc:
                    _skip(st, name, lineno, line, exc)
                    continue
                yield lineno, values
    finally:
        st.lines += lineno


def _is_ts(value: Any, optional: bool = False) -> bool:
    return type(value) is float or type(value) is int or (optional and value is None)


_PRODUCED_FIELDS = ("seq", "key", "key_seq", "partition", "offset", "ts")
_CONSUMED_FIELDS = ("seq", "key", "key_seq", "partition", "offset", "color", "instance", "ts")


def load_producer_log(path: PathLike, stats: LoadStats | None = None) -> Iterator[ProducedRecord]:
    """Yield the producer's acked sends; malformed lines are counted in ``stats`` and skipped."""
    st = stats if stats is not None else LoadStats()
    name, intern = os.fspath(path), sys.intern
    for lineno, (seq, key, key_seq, partition, offset, ts) in _rows(path, st, _PRODUCED_FIELDS):
        if (type(seq) is not int or type(key) is not str or type(key_seq) is not int or type(partition) is not int
                or type(offset) is not int or not _is_ts(ts)):
            st._malformed(name, lineno, "field with wrong type")
            continue
        yield ProducedRecord(seq, intern(key), key_seq, partition, offset, float(ts))


def load_consumer_log(path: PathLike, stats: LoadStats | None = None) -> Iterator[ConsumedRecord]:
    """Yield one consumer instance's handled records in file order (order checks rely on it)."""
    st = stats if stats is not None else LoadStats()
    name, intern = os.fspath(path), sys.intern
    for lineno, (seq, key, key_seq, partition, offset, color, instance, ts) in _rows(path, st, _CONSUMED_FIELDS):
        if (type(seq) is not int or type(key) is not str or type(key_seq) is not int or type(partition) is not int
                or type(offset) is not int or type(color) is not str or type(instance) is not str
                or not _is_ts(ts, optional=True)):
            st._malformed(name, lineno, "field with wrong type")
            continue
        # Keys are interned because validate() keeps one reference per timed event.
        yield ConsumedRecord(seq, intern(key), key_seq, partition, offset, color, instance,
                             ts if type(ts) is not int else float(ts))


def load_sink_file(path: PathLike, color: str, stats: LoadStats | None = None) -> Iterator[ConsumedRecord]:
    """Yield records from a Kafka Connect FileStreamSink file (one raw record value per line).

    The sink knows neither handle time nor partition/offset, so ``ts`` is None (excluded from
    timing analysis) and partition/offset are -1; the instance is the file's base name.  A value
    that is a JSON *string* holding the JSON object (double-encoded) is unwrapped once.
    """
    st = stats if stats is not None else LoadStats()
    name, intern = os.fspath(path), sys.intern
    instance = os.path.basename(name)
    for lineno, (seq, key, key_seq) in _rows(path, st, ("seq", "key", "key_seq"), unwrap=True):
        if type(seq) is not int or type(key) is not str or type(key_seq) is not int:
            st._malformed(name, lineno, "field with wrong type")
            continue
        yield ConsumedRecord(seq, intern(key), key_seq, _UNKNOWN, _UNKNOWN, color, instance, None)


# --------------------------------------------------------------------------------------------
# Report


@dataclass(slots=True, frozen=True)
class RecordRef:
    """A seq and its handled time, enough to locate a record in the logs."""

    seq: int
    ts: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts}


@dataclass(slots=True, frozen=True)
class OrderViolation:
    """One out-of-order handling; ``instance`` is None for the global (ts-sorted) scope."""

    scope: Literal["instance", "global"]
    color: str
    instance: str | None
    key: str
    key_seq: int
    max_key_seq_seen: int
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "color": self.color,
            "instance": self.instance,
            "key": self.key,
            "key_seq": self.key_seq,
            "max_key_seq_seen": self.max_key_seq_seen,
            "seq": self.seq,
        }


@dataclass(slots=True, frozen=True)
class DualActiveWindow:
    """A maximal interval in which both colors of the pair were handling records."""

    colors: tuple[str, str]
    start: float
    end: float
    events: dict[str, int]
    """Events of each of the two colors with ``start <= ts <= end``."""

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "colors": list(self.colors),
            "start": self.start,
            "end": self.end,
            "duration_s": self.duration_s,
            "events": dict(self.events),
        }


@dataclass(slots=True)
class ColorStats:
    """Per-color summary; first/last are by ``ts`` when the color has timed events, else file order."""

    color: str
    events: int = 0
    timed_events: int = 0
    duplicates: int = 0
    instances: list[str] = field(default_factory=list)
    first: RecordRef | None = None
    last: RecordRef | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "color": self.color,
            "events": self.events,
            "timed_events": self.timed_events,
            "duplicates": self.duplicates,
            "instances": list(self.instances),
            "first": None if self.first is None else self.first.to_dict(),
            "last": None if self.last is None else self.last.to_dict(),
        }


@dataclass(slots=True)
class ValidationReport:
    """Everything :func:`validate` found; ``ok`` is the pass/fail verdict of the run."""

    produced: int = 0
    producer_duplicate_seqs: int = 0
    consumed: int = 0
    unique_consumed: int = 0
    lost: int = 0
    lost_sample: list[int] = field(default_factory=list)
    pending: int = 0
    duplicates: int = 0
    duplicates_by_color: dict[str, int] = field(default_factory=dict)
    cross_color_duplicates: int = 0
    cross_color_sample: list[int] = field(default_factory=list)
    cross_color_by_pair: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0
    unexpected_sample: list[int] = field(default_factory=list)
    order_violations_instance: int = 0
    order_violations_global: int = 0
    order_violations_by_instance: dict[str, int] = field(default_factory=dict)
    order_violation_sample: list[OrderViolation] = field(default_factory=list)
    global_order_violation_sample: list[OrderViolation] = field(default_factory=list)
    dual_active_windows: list[DualActiveWindow] = field(default_factory=list)
    untimed_events: int = 0
    malformed_lines: int = 0
    malformed_sample: list[str] = field(default_factory=list)
    colors: dict[str, ColorStats] = field(default_factory=dict)
    activity_gap_s: float = 1.0
    dual_active_gap_s: float = 0.0

    @property
    def order_violations(self) -> int:
        return self.order_violations_instance + self.order_violations_global

    @property
    def dual_active_count(self) -> int:
        return len(self.dual_active_windows)

    @property
    def dual_active_seconds(self) -> float:
        return sum(w.duration_s for w in self.dual_active_windows)

    @property
    def ok(self) -> bool:
        """Pass means: nothing acked was lost and colors never handled records at the same time.

        Seqs identify records, so producer logs that share seqs (two runs of ``pyrallel produce`` both start at
        0) fail too: a record handled under one of them would hide the loss of the other.
        """
        return self.lost == 0 and not self.dual_active_windows and self.producer_duplicate_seqs == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (only str/int/float/bool/None/list/dict)."""
        return {
            "ok": self.ok,
            "produced": self.produced,
            "producer_duplicate_seqs": self.producer_duplicate_seqs,
            "consumed": self.consumed,
            "unique_consumed": self.unique_consumed,
            "lost": self.lost,
            "lost_sample": list(self.lost_sample),
            "pending": self.pending,
            "duplicates": self.duplicates,
            "duplicates_by_color": dict(self.duplicates_by_color),
            "cross_color_duplicates": self.cross_color_duplicates,
            "cross_color_sample": list(self.cross_color_sample),
            "cross_color_by_pair": dict(self.cross_color_by_pair),
            "unexpected": self.unexpected,
            "unexpected_sample": list(self.unexpected_sample),
            "order_violations": self.order_violations,
            "order_violations_instance": self.order_violations_instance,
            "order_violations_global": self.order_violations_global,
            "order_violations_by_instance": dict(self.order_violations_by_instance),
            "order_violation_sample": [v.to_dict() for v in self.order_violation_sample],
            "global_order_violation_sample": [v.to_dict() for v in self.global_order_violation_sample],
            "dual_active_count": self.dual_active_count,
            "dual_active_seconds": self.dual_active_seconds,
            "dual_active_windows": [w.to_dict() for w in self.dual_active_windows],
            "untimed_events": self.untimed_events,
            "malformed_lines": self.malformed_lines,
            "malformed_sample": list(self.malformed_sample),
            "colors": {c: s.to_dict() for c, s in self.colors.items()},
            "activity_gap_s": self.activity_gap_s,
            "dual_active_gap_s": self.dual_active_gap_s,
        }

    def to_table(self) -> str:
        """Short fixed-width text for a terminal or a CI log."""
        rows: list[tuple[str, str]] = [
            ("produced (acked)", str(self.produced)),
            ("consumed (events)", str(self.consumed)),
            ("unique consumed", str(self.unique_consumed)),
            ("lost", _with_sample(self.lost, self.lost_sample)),
            ("pending", str(self.pending)),
            ("duplicates", _fmt_counts(self.duplicates, self.duplicates_by_color)),
            ("cross-color duplicates", _with_sample(self.cross_color_duplicates, self.cross_color_sample)),
            ("unexpected", _with_sample(self.unexpected, self.unexpected_sample)),
            (
                "order violations",
                f"{self.order_violations} (instance {self.order_violations_instance}, "
                f"global {self.order_violations_global})",
            ),
            ("dual-active windows", f"{self.dual_active_count} ({self.dual_active_seconds:.3f} s)"),
            ("malformed lines", str(self.malformed_lines)),
        ]
        if self.producer_duplicate_seqs:
            rows.insert(1, ("producer duplicate seqs", str(self.producer_duplicate_seqs)))
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        for stats in self.colors.values():
            lines.append(
                f"{'color ' + stats.color:<{width}}  events {stats.events}, dups {stats.duplicates}, "
                f"first {_fmt_ref(stats.first)}, last {_fmt_ref(stats.last)}, "
                f"instances {len(stats.instances)}"
            )
        for w in self.dual_active_windows[:5]:
            lines.append(
                f"{'  window ' + '/'.join(w.colors):<{width}}  {w.start:.3f}..{w.end:.3f} "
                f"({w.duration_s:.3f} s) events {w.events}"
            )
        if self.dual_active_count > 5:
            lines.append(f"{'':<{width}}  ... {self.dual_active_count - 5} more windows")
        verdict = "OK" if self.ok else f"FAIL (lost {self.lost}, dual-active windows {self.dual_active_count})"
        lines.append(f"{'result':<{width}}  {verdict}")
        return "\n".join(lines)


def _with_sample(count: int, sample: list[int]) -> str:
    if not count:
        return "0"
    more = " ..." if count > len(sample) else ""
    return f"{count} (e.g. {', '.join(map(str, sample[:5]))}{more})"


def _fmt_counts(total: int, by: Mapping[str, int]) -> str:
    if not by:
        return str(total)
    return f"{total} (" + ", ".join(f"{k} {v}" for k, v in sorted(by.items())) + ")"


def _fmt_ref(ref: RecordRef | None) -> str:
    if ref is None:
        return "-"
    return f"seq {ref.seq}" if ref.ts is None else f"seq {ref.seq} @ {ref.ts:.3f}"


# --------------------------------------------------------------------------------------------
# Validation


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


def validate_files(
    producer_logs: Iterable[PathLike],
    consumer_logs: Iterable[PathLike] = (),
    sink_files: Iterable[tuple[PathLike, str]] = (),
    pending_seqs: Collection[int] = (),
    dual_active_gap_s: float = 0.0,
    *,
    activity_gap_s: float = 1.0,
) -> ValidationReport:
    """Load and validate in one streaming pass so the CLI never holds the raw records in memory."""
    stats = LoadStats()

    def produced() -> Iterator[ProducedRecord]:
        for path in producer_logs:
            yield from load_producer_log(path, stats)

    def consumed() -> Iterator[ConsumedRecord]:
        for path in consumer_logs:
            yield from load_consumer_log(path, stats)
        for path, color in sink_files:
            yield from load_sink_file(path, color, stats)

    # validate() drains produced() before consumed(), so stats is complete when it is read.
    return validate(
        produced(),
        consumed(),
        pending_seqs,
        dual_active_gap_s,
        activity_gap_s=activity_gap_s,
        load_stats=stats,
    )
