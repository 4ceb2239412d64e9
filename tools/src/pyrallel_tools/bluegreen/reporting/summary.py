"""The report's measurements: how long a switch or a rollback took, and the per-strategy totals, among them the
processing gap over every switch and rollback, by which the recommendation ranks the strategies.

Kept apart from the Markdown so the numbers can be tested on their own; called by
:mod:`pyrallel_tools.bluegreen.reporting.markdown` and :mod:`~pyrallel_tools.bluegreen.reporting.build`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pyrallel_consumer.bluegreen.controller import SwitchResult
from pyrallel_tools.bluegreen.reporting.load import RunFile
from pyrallel_tools.bluegreen.validation.switch_impact import automatic_rollback_steps
from pyrallel_tools.quantiles import nearest_rank

__all__ = ["StrategySummary", "nearest_rank", "rollback_seconds", "summarize", "switch_seconds"]


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
    after = automatic_rollback_steps(result)
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
    gaps: list[float]
    """The processing gap of every switch and rollback of the strategy's runs (an automatic rollback's too), where
    measured."""
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

    @property
    def median_gap(self) -> float | None:
        return statistics.median(self.gaps) if self.gaps else None

    @property
    def p99_gap(self) -> float | None:
        return nearest_rank(self.gaps, 0.99)

    @property
    def max_gap(self) -> float | None:
        return max(self.gaps) if self.gaps else None


def summarize(runs: Sequence[RunFile]) -> list[StrategySummary]:
    """One summary per strategy, sorted by strategy; the markdown's summary, comparison and recommendation use it."""
    out: list[StrategySummary] = []
    for strategy in sorted({r.record.strategy for r in runs}):
        mine = [r.record for r in runs if r.record.strategy == strategy]
        switches = [s for r in mine for s in r.switches]
        out.append(StrategySummary(
            strategy=strategy,
            runs=len(mine),
            passed=sum(r.passed for r in mine),
            switch_times=[t for s in switches if (t := switch_seconds(s)) is not None],
            rollback_times=[t for s in switches if (t := rollback_seconds(s)) is not None],
            gaps=[g for s in switches for _, figures in s.felt() if (g := figures.processing_gap_s) is not None],
            lost=sum(r.validation.lost for r in mine),
            duplicates=sum(r.validation.duplicates for r in mine),
            rebalances=sum(sum(r.rebalances.values()) for r in mine),
        ))
    return out
