"""The plain-group hand-over beside the strategies: what Kafka's group protocol itself costs a same-group hand-over.

``pyrallel bench --suite rebalance`` (:mod:`pyrallel_tools.benchmark.rebalance`) measures how long a partition
goes unowned when a member joins or leaves a plain confluent-kafka group and a group of ``PyrallelConsumer``s.
A same-group switch (strategy C) cannot hand its partitions over faster than that, so the report shows those
figures next to the strategies' processing gaps. The results file is optional: :func:`read_handover` says why
it is missing or unreadable instead of failing, and the report prints that in one line. Called by
:func:`pyrallel_tools.bluegreen.reporting.build.build_report`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pyrallel_tools.benchmark.rebalance_report import CONTENDERS, EVENTS

__all__ = ["DEFAULT_REBALANCE_RESULTS", "Handover", "HandoverRow", "read_handover"]

log = logging.getLogger(__name__)

DEFAULT_REBALANCE_RESULTS = Path("benchmarks/results/rebalance-latest.json")
"""Where ``pyrallel bench --suite rebalance`` writes its latest results, relative to the repository's root."""

_LENIENT = ConfigDict(extra="ignore", frozen=True)


class _Machine(BaseModel):
    model_config = _LENIENT
    date: str
    librdkafka: str | None = None


class _Config(BaseModel):
    model_config = _LENIENT
    kafka: dict[str, Any]


class _Summary(BaseModel):
    model_config = _LENIENT
    contender: str
    event: str
    runs: int
    max_unowned_median_s: float | None
    max_unowned_max_s: float | None


class _Results(BaseModel):
    """The part of the rebalance results file the report reads; the rest of the file is ignored."""

    model_config = _LENIENT
    machine: _Machine
    config: _Config
    summaries: list[_Summary]


@dataclass(frozen=True, slots=True)
class HandoverRow:
    """One event of one contender: the longest unowned partition's median and max over the repetitions."""

    event: str
    contender: str
    runs: int
    unowned_median_s: float | None
    unowned_max_s: float | None


@dataclass(frozen=True, slots=True)
class Handover:
    """The rebalance results the report shows: when, with which librdkafka, with which extra properties."""

    path: Path
    date: str
    librdkafka: str | None
    kafka: dict[str, Any]
    """The extra librdkafka properties both contenders ran with; empty for librdkafka's defaults."""
    rows: list[HandoverRow]


def read_handover(path: Path) -> Handover | str:
    """The results of ``path``, or one sentence saying why there are none (missing, unreadable, not results)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"no rebalance benchmark results at `{path}` (run `pyrallel bench --suite rebalance`)"
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        log.warning("Cannot read rebalance results %s: %s", path, exc)
        return f"the rebalance benchmark results `{path}` could not be read ({type(exc).__name__}: {exc})"
    try:
        results = _Results.model_validate_json(text)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in problem["loc"]) or "file"
        log.warning("Rebalance results %s are not usable: %s: %s", path, where, problem["msg"])
        return f"the rebalance benchmark results `{path}` are not usable ({where}: {problem['msg']})"
    rows = [HandoverRow(EVENTS.get(s.event, s.event), CONTENDERS.get(s.contender, s.contender), s.runs,
                        s.max_unowned_median_s, s.max_unowned_max_s)
            for s in sorted(results.summaries, key=lambda s: (list(EVENTS).index(s.event) if s.event in EVENTS
                                                             else len(EVENTS), s.event, s.contender))]
    if not rows:
        return f"the rebalance benchmark results `{path}` hold no measurements"
    return Handover(path, results.machine.date, results.machine.librdkafka, dict(results.config.kafka), rows)
