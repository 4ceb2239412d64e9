"""The pass/fail criteria of a scenario run: nothing lost, no dual activity, balanced instances, and switches judged
by what the records felt of them (the processing gap), not by the controller's step time.

The scenario runner (:mod:`pyrallel_tools.bluegreen.scenarios`) calls :func:`judge` from its thread once the
run is over, its logs are validated and each switch's figures are measured; the criteria go into the run file,
and any failed one fails the run.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyrallel_tools.bluegreen.run_record import Criterion, RunSwitch, Sample
from pyrallel_tools.bluegreen.run_spec import RunSpec
from pyrallel_tools.bluegreen.validation.findings import ValidationReport

TARGET_GAP_S = {"C": 1.0, "B": 1.0, "E": 2.0}
"""The longest a record may wait with no one handling it across a switch or a rollback (the issue's targets)."""
TARGET_GAP_WHY = {
    "B": "the new color's members are already in their own group with the partitions assigned, held paused: the "
         "hand-over is a drain, a commit, an offset hand-over and a resume, with no group membership change",
    "C": "one group: the old color drains and leaves, the new color's running members join, and the group "
         "assigns their partitions in one rebalance, quick when the broker's group.initial.rebalance.delay.ms is "
         "short (100 ms here)",
    "E": "the new connector is started by Kafka Connect: the worker records the resume in its config topic, the "
         "Connect workers rebalance to start the connector's task, and the task's consumer joins its own group "
         "before it fetches - a longer chain than B's or C's, none of it in the library",
}
"""Why each strategy's target is what it is: the report states it next to the targets."""
LAGGING_EXTRA_GAP_S = 1.0
"""Scenario 3 switches while blue's handlers take 1 s per record: the pause drains (or cuts off) a record in
flight, which adds up to that second to the gap."""
UNJUDGED_GAP = {4: "the killed instance's partitions wait for the session timeout",
                5: "green fails its health check for its whole window before the automatic rollback"}
"""Scenarios whose gap is measured but not judged, and why: the scenario itself stops processing for a while."""
BALANCE_SETTLING_S = 10.0
"""How long an active instance may own no partition (while there are at least as many partitions as active
instances of its color) before the run fails: the group protocol spreads partitions over new members in a few
rebalance rounds of up to heartbeat.interval.ms each."""


def judge(spec: RunSpec, switches: Sequence[RunSwitch], samples: list[Sample], validation: ValidationReport,
          cause: str | None, active_color: str) -> tuple[list[Criterion], dict[str, float]]:
    """The run's checks, and what goes into its conditions instead (the controller step times)."""
    conditions: dict[str, float] = {}
    criteria = [
        Criterion("lost records", "0", str(validation.lost), validation.lost == 0),
        Criterion("dual-active windows", "0", str(validation.dual_active_count),
                  validation.dual_active_count == 0),
        Criterion("order violations", "0", str(validation.order_violations), validation.order_violations == 0),
    ]
    if spec.strategy == "E":
        dual = _sampled_dual_active(samples)
        criteria.append(Criterion("samples with both connectors running", "0", str(dual), dual == 0))
    else:
        idle, who = longest_idle_active(samples, spec.options.partitions)
        criteria.append(Criterion("longest an active instance owned no partition", f"<= {BALANCE_SETTLING_S:g} s",
                                  f"{idle:.1f} s" + (f" ({who})" if who else ""), idle <= BALANCE_SETTLING_S))
    expect_ok = spec.scenario != 5
    for index, s in enumerate(switches):
        if s.action == "switch" and expect_ok:
            criteria.append(Criterion(f"switch {index} to {s.to_color} succeeded", "ok",
                                      "ok" if s.ok else str(s.error), s.ok))
        for action, figures in s.felt():
            gap = figures.processing_gap_s
            name = f"{action} {index} processing gap"
            if spec.scenario in UNJUDGED_GAP or gap is None:
                if gap is not None:
                    conditions[f"{name} (not judged: {UNJUDGED_GAP[spec.scenario]})"] = round(gap, 3)
                continue
            target = TARGET_GAP_S[spec.strategy] + (LAGGING_EXTRA_GAP_S if spec.scenario == 3 else 0.0)
            criteria.append(Criterion(name, f"< {target:g} s", f"{gap:.3f} s", gap < target))
    if spec.scenario == 4:
        final = {s.instance: s.state for s in samples if s.state != "DOWN"}
        wrong = sorted(name for name, state in final.items()
                       if (state == "ACTIVE") != name.startswith(f"{active_color}-"))
        criteria.append(Criterion(f"only {active_color} active after the restart", "yes",
                                  "yes" if not wrong else f"wrong state: {', '.join(wrong)}", not wrong))
    if spec.scenario == 5:
        rolled = any(s.rolled_back for s in switches)
        criteria.append(Criterion("automatic rollback", "rolled back",
                                  "rolled back" if rolled else "not rolled back", rolled))
    if cause is not None:
        criteria.append(Criterion("run completed", "yes", cause, False))
    return criteria, conditions


def longest_idle_active(samples: Sequence[Sample], partitions: int) -> tuple[float, str | None]:
    """The longest stretch (seconds, and whose) an ACTIVE instance owned no partition while its color had no more
    ACTIVE instances than partitions; runs of consecutive samples, measured from the first to the last."""
    active_by_round: dict[tuple[float, str], int] = {}
    for s in samples:
        if s.state == "ACTIVE":
            active_by_round[(s.t, s.color)] = active_by_round.get((s.t, s.color), 0) + 1
    longest, who = 0.0, None
    since: dict[str, float] = {}
    for s in sorted(samples, key=lambda x: x.t):
        idle = (s.state == "ACTIVE" and s.assigned == 0
                and active_by_round.get((s.t, s.color), 0) <= partitions)
        if not idle:
            since.pop(s.instance, None)
            continue
        start = since.setdefault(s.instance, s.t)
        if s.t - start > longest:
            longest, who = s.t - start, s.instance
    return longest, who


def _sampled_dual_active(samples: list[Sample]) -> int:
    """Samples in which instances of both colors were ACTIVE at once (the only measure for sink files)."""
    by_time: dict[float, set[str]] = {}
    for sample in samples:
        if sample.state == "ACTIVE":
            by_time.setdefault(sample.t, set()).add(sample.color)
    return sum(1 for colors in by_time.values() if len(colors) > 1)
