"""What the judge of a blue/green run found: the :class:`ValidationReport` and its JSON and text forms.

These are plain data, kept apart from the judge's algorithm (:mod:`pyrallel_tools.bluegreen.validation.judge`)
so both stay small enough to audit.  ``to_dict`` is the report's JSON form: ``pyrallel validate --out`` writes
it and the scenario runner stores it as the ``validation`` section of a run file
(:class:`pyrallel_tools.bluegreen.run_record.ValidationSummary`); ``to_table`` is what ``pyrallel validate``
prints.  The definition of every count is in the judge's docstring.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["SAMPLE_LIMIT", "ColorStats", "DualActiveWindow", "OrderViolation", "RecordRef", "ValidationReport"]

SAMPLE_LIMIT = 20
"""Maximum length of every sample list in a report; counts are always exact."""


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

