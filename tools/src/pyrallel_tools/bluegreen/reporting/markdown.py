"""The report's text: the Markdown of ``test-report.md``, from the runs, their figures and the per-strategy summary.

Called by :func:`pyrallel_tools.bluegreen.reporting.build.build_report`, which writes the text and the
figures it links to.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyrallel_tools.bluegreen.criteria import LAGGING_EXTRA_GAP_S, TARGET_GAP_S, TARGET_GAP_WHY, UNJUDGED_GAP
from pyrallel_tools.bluegreen.reporting.balance import balance
from pyrallel_tools.bluegreen.reporting.handover import Handover
from pyrallel_tools.bluegreen.reporting.load import RunFile
from pyrallel_tools.bluegreen.reporting.summary import StrategySummary, rollback_seconds, summarize, switch_seconds
from pyrallel_tools.bluegreen.run_record import RunRecord, RunSwitch

__all__ = ["render_report"]


SCENARIOS: dict[int, str] = {
    1: "Normal switch blue → green, then blue scaled down",
    2: "Switch, then immediate rollback",
    3: "Switch while blue has lag > 500",
    4: "Consumer process killed and restarted during the switch",
    5: "Green with a high failure rate: automatic rollback",
    6: "Repeated switches and rollbacks at a steady load",
}
"""Section headings per scenario number; each run's own title (the runner's wording) is in its section."""

COMPLEXITY: dict[str, tuple[str, str]] = {
    "B": (
        "two consumer groups and the lifecycle API; each color stays in its own group while paused "
        "(pause_mode=hold) and takes the old group's committed offsets (with offset maps) with its resume",
        "both groups must be kept and watched; no membership change at a switch, no broker setting involved",
    ),
    "C": (
        "the lifecycle API (pause/resume over HTTP) in every consumer",
        "one consumer group, no extra infrastructure; each switch changes the group's membership, so its gap "
        "depends on the broker's group.initial.rebalance.delay.ms (100 ms: about 0.5 s; the default 3 s: about 6 s)",
    ),
    "E": (
        "sink connectors only; offsets moved through the Connect REST API",
        "a Kafka Connect cluster to run and secure; only fits sink-style workloads",
    ),
}
"""Fixed qualitative notes per strategy: (implementation complexity, operational complexity)."""


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} s"


def _times(values: Sequence[float]) -> str:
    if not values:
        return "—"
    return f"{_secs(statistics.median(values))} (max {_secs(max(values))}, n={len(values)})"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.3f}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True)
    else:
        text = "—" if value is None or value == "" else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return [*lines, ""]


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _anchor(run: RunFile) -> str:
    return re.sub(r"[^a-z0-9]+", "-", run.label.lower()).strip("-")


def _by_color(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{c} {n}" for c, n in sorted(counts.items()))


def driver(record: RunRecord) -> str:
    """Who switched the run, in words: the Kubernetes controller or the runner's own (files without a driver were
    all the runner's own)."""
    if record.environment.get("driver") == "kubernetes":
        version = record.environment.get("kube_apiserver")
        return ("driven through the Kubernetes controller (`pyrallel controller serve --kubernetes`"
                + (f", kube-apiserver {version}" if version else "") + ")")
    return "driven by the runner's in-process SwitchController"


def _drivers(records: Iterable[RunRecord]) -> str:
    return ", ".join(sorted({"Kubernetes controller" if r.environment.get("driver") == "kubernetes" else "direct"
                             for r in records}))


def _summary(runs: Sequence[RunFile], summaries: Sequence[StrategySummary], skipped: Sequence[tuple[Path, str]]
             ) -> list[str]:
    failed = [r for r in runs if not r.record.passed]
    overall = "PASS" if not failed else "FAIL"
    lines = ["## Executive summary", "",
             f"**Overall: {overall}** — {len(runs) - len(failed)} of {len(runs)} runs passed "
             "(targets per run: loss 0, dual-active 0, order kept, balance and the processing gap of each switch "
             "and rollback as listed in each run's criteria).",
             ""]
    lines += _table(["strategy", "runs", "passed", "verdict", "lost", "switched by"],
                    [(s.strategy, s.runs, s.passed, "PASS" if s.ok else "FAIL", s.lost,
                      _drivers(r.record for r in runs if r.record.strategy == s.strategy)) for s in summaries])
    if skipped:
        lines += [f"**{len(skipped)} run file(s) could not be read and are not in this report:**", ""]
        lines += [f"- `{p.name}`: {why}" for p, why in skipped] + [""]
    return lines


_ENV_KEYS = ("kafka", "python", "confluent_kafka", "librdkafka", "partitions", "replicas", "rate_per_s",
             "instances_per_color", "machine")


def _environment(runs: Sequence[RunFile]) -> list[str]:
    keys = list(_ENV_KEYS) + sorted({k for r in runs for k in r.record.environment} - set(_ENV_KEYS))
    rows = []
    for key in keys:
        values = list(dict.fromkeys(_cell(r.record.environment[key]) for r in runs if key in r.record.environment))
        if values:
            rows.append((key, ", ".join(values)))
    return ["## Environment", "", *(_table(["item", "value"], rows) if rows else ["Not recorded.", ""])]


def _run_section(run: RunFile, figures: Sequence[tuple[str, Path]], out_dir: Path) -> list[str]:
    record = run.record
    lines = [f"### {run.label}: {record.verdict}", "", f"{record.title}. File `{run.path.name}`, started "
             f"{_when(record.started_at)}, {record.ended_at - record.started_at:.3f} s; strategy {record.strategy}, "
             f"{driver(record)}; lost {record.validation.lost}.", ""]
    if record.conditions:
        lines += ["**Conditions**", "", *_table(["condition", "value"], sorted(record.conditions.items()))]
    if record.switches:
        lines += ["**Switches**", ""]
        lines += _table(
            ["action", "colors", "generation", "seconds", "result", "steps"],
            [(r.action, f"{r.from_color} → {r.to_color}", r.generation, _secs(r.seconds),
              "ok" if r.ok else ("rolled back" if r.rolled_back else "failed") + (f": {r.error}" if r.error else ""),
              "; ".join(f"{s.name} {_secs(s.seconds)}{'' if s.ok else ' FAILED'}" for s in r.steps))
             for r in record.switches])
    lines += _felt(record)
    t = record.validation
    lines += ["**Validation**", "", *_table(["produced", "consumed", "lost", "pending", "duplicates",
                                             "cross-color duplicates", "dual-active windows", "order violations",
                                             "rebalances"],
                                            [(t.produced, t.consumed, t.lost, t.pending, t.duplicates,
                                              t.cross_color_duplicates, t.dual_active_count, t.order_violations,
                                              _by_color(record.rebalances) or 0)]),
              REBALANCES, ""]
    lines += _balance(record)
    if record.criteria:
        lines += ["**Criteria**", "", *_table(["criterion", "target", "measured", "result"],
                                              [(c.name, c.target, c.measured, "pass" if c.passed else "FAIL")
                                               for c in record.criteria])]
    if record.events:
        lines += ["**Events** (seconds since the run started): " + "; ".join(
            f"{e.kind.replace('_', ' ')} +{e.t - record.started_at:.3f}" + (f" ({e.detail})" if e.detail else "")
            for e in record.events), ""]
    lines += [f"**Verdict: {record.verdict}**" + (f" — cause: {record.cause}" if record.cause else ""), ""]
    if figures:
        lines += [_plots_note(record), ""]
        for caption, path in figures:
            lines += [f"![{run.label}: {caption}]({path.relative_to(out_dir).as_posix()})", ""]
    else:
        lines += ["No samples were recorded, so there are no plots for this run.", ""]
    return lines


REBALANCES = ("*Rebalances* counts partition assignment events, not group rebalances: every partition an instance "
              "was assigned, had revoked or lost adds one (its `rebalances` in `/lifecycle/status`), summed over the "
              "color's instances as each last reported it (a stopped instance's last revocation may be missing). "
              "With 8 partitions, 8 means each partition was assigned once; a color that leaves the group on "
              "pause (strategy C) adds their revocations. Connectors report none.")
"""The definition the Validation table and the strategy comparison point to."""


def _plots_note(record: RunRecord) -> str:
    """What the plots' time axis and switch markers are, in the run's own numbers."""
    first = min((s.t - record.started_at for s in record.samples if s.t >= record.started_at), default=None)
    sampled = "" if first is None else f"; the first sample came at +{first:.1f} s"
    return (f"The plots start at the run's start (0 s: the topic, the consumers and the controller being set up"
            f"{sampled}). A switch's solid and dashed lines are its start and end as "
            "the controller measured them: the *seconds* of the Switches table, a health check's window included; "
            "the *controller step time* elsewhere leaves that window out.")


def _felt(record: RunRecord) -> list[str]:
    """Per switch, the controller's step time next to what the records felt: the processing gap and the latency."""
    rows: list[tuple[Any, ...]] = []
    for index, result in enumerate(record.switches):
        for action, i in result.felt():
            step = switch_seconds(result) if action == "switch" else rollback_seconds(result)
            ended = None if i.processing_gap_end is None else f"+{i.processing_gap_end - record.started_at:.3f}"
            rows.append((index, action, _secs(step), _secs(i.processing_gap_s), ended, _secs(i.latency_p50_s),
                         _secs(i.latency_p99_s), _secs(i.latency_max_s), i.records))
    if all(row[3] == row[5] == "—" for row in rows):
        return []  # files from before the figures were measured
    header = ["switch", "action", "controller step time", "processing gap", "gap ended", "latency p50",
              "latency p99", "latency max", "records"]
    estimated = ""
    if record.environment.get("driver") == "kubernetes":
        header.append("Kubernetes controller's gap estimate")
        rows = [(*row, _estimate(record.switches[row[0]]) if row[1] == record.switches[row[0]].action else "—")
                for row in rows]
        estimated = ("; the Kubernetes controller's gap estimate is its own, from status.lastSwitch: the old color's "
                     "pause to the new color's first handled record, polled from the outside")
    return ["**As the records felt it** (the processing gap is the longest time a record waited on its partition "
            "with no one handling it, among the records handled from the switch's start to the next switch or the "
            "run's end, and when that wait ended in seconds since the run started; latency is produced (acked) to "
            "handled, over the records produced from the switch's start to its end plus the settle time; — where "
            f"the logs do not tell, e.g. sink files{estimated})", "", *_table(header, rows)]


def _estimate(switch: RunSwitch) -> str:
    if switch.controller_gap_s is not None:
        return _secs(switch.controller_gap_s)
    return f"— ({switch.controller_gap_note})" if switch.controller_gap_note else "—"


def _balance(record: RunRecord) -> list[str]:
    """Per instance: records handled and, where the instances report them, the partitions it owned."""
    rows = balance(record.samples, record.environment)
    if not rows:
        return []
    handled = ("**Balance** per instance. *Records handled*: each process life's highest sampled counter, summed "
               "over the lives (a restart starts again from 0; \"(n lives)\" marks an instance restarted during the "
               "run).")
    if all(r.most_owned is None for r in rows):
        return [f"{handled} The instances report no partitions.", "",
                *_table(["instance", "color", "records handled"],
                        [(r.instance, r.color, _handled(r.handled, r.lives)) for r in rows])]
    return [f"{handled} *Partitions at the end*: at its last ACTIVE sample (— never ACTIVE). *Longest ACTIVE with "
            "no partition*: consecutive samples, first to last, counted as the balance criterion counts (only while "
            "its color had no more ACTIVE instances than partitions).", "",
            *_table(["instance", "color", "records handled", "most partitions at once", "partitions at the end",
                     "longest ACTIVE with no partition"],
                    [(r.instance, r.color, _handled(r.handled, r.lives), r.most_owned, r.owned_at_end,
                      None if r.longest_idle_s is None else f"{r.longest_idle_s:.1f} s") for r in rows])]


def _handled(records: int, lives: int) -> str:
    return str(records) + (f" ({lives} lives)" if lives > 1 else "")


def _scenarios(runs: Sequence[RunFile], figures: Mapping[Path, Sequence[tuple[str, Path]]], out_dir: Path) -> list[str]:
    lines: list[str] = []
    for scenario in sorted({r.record.scenario for r in runs}):
        lines += [f"## Scenario {scenario}: {SCENARIOS.get(scenario, 'not a standard scenario')}", ""]
        for run in (r for r in runs if r.record.scenario == scenario):
            lines += _run_section(run, figures[run.path], out_dir)
    return lines


def _target(strategy: str) -> str:
    return f"< {TARGET_GAP_S[strategy]:g} s" if strategy in TARGET_GAP_S else "—"


def _comparison(summaries: Sequence[StrategySummary], handover: Handover | str | None) -> list[str]:
    rows = [(s.strategy, f"{s.passed}/{s.runs}", _secs(s.median_gap), _secs(s.p99_gap), _secs(s.max_gap),
             len(s.gaps), _target(s.strategy), _times(s.switch_times), _times(s.rollback_times), s.lost,
             s.duplicates, s.rebalances, *COMPLEXITY.get(s.strategy, ("—", "—"))) for s in summaries]
    unjudged = ", ".join(str(n) for n in sorted(UNJUDGED_GAP))
    lines = ["## Strategy comparison", "",
             "The processing gap is the longest time a record waited on its partition with no one handling it "
             "across a switch or a rollback (see each run's *As the records felt it*): median, p99 (nearest rank; "
             "with fewer than 100 values the max) and max over every switch and rollback of the strategy's runs, "
             "an automatic rollback's included, with their number n; — where the logs do not tell. The target is "
             f"the run criteria's, per switch (scenario 3 allows {LAGGING_EXTRA_GAP_S:g} s more for the record in "
             f"flight; scenarios {unjudged} measure the gap without judging it). The controller step time is how "
             "long the controller's steps took, median (max, count): a switch without its health-check window, an "
             "automatic rollback from its first rollback step to its last. Lost, duplicates and rebalances are "
             "totals over the runs (rebalances: partition assignment events, defined under each run's Validation "
             "table).", "",
             "The targets differ because the hand-overs do: " + "; ".join(
                 f"{s} ({_target(s)}): {TARGET_GAP_WHY[s]}" for s in sorted(TARGET_GAP_WHY)) + ".", "",
             *_table(["strategy", "runs passed", "processing gap median", "processing gap p99",
                      "processing gap max", "n", "gap target", "controller step time: switch",
                      "controller step time: rollback", "lost", "duplicates", "rebalances",
                      "implementation complexity", "operational complexity"], rows)]
    return lines + _handover(handover)


def _handover(handover: Handover | str | None) -> list[str]:
    """The plain group's and the library's join/leave figures from the rebalance benchmark, or why there are none."""
    if handover is None:
        return []
    title = "### Plain-group hand-over: what Kafka's group protocol itself costs a same-group hand-over"
    if isinstance(handover, str):
        return [title, "", f"Not shown: {handover}.", ""]
    settings = ", ".join(f"`{k}={v}`" for k, v in sorted(handover.kafka.items())) or "none (librdkafka defaults)"
    version = f"librdkafka {handover.librdkafka}" if handover.librdkafka else "librdkafka version not recorded"
    return [title, "",
            f"From `{handover.path}` ({handover.date}; {version}; extra librdkafka properties: {settings}), "
            "measured by `pyrallel bench --suite rebalance`: the longest a partition went without an owner when a "
            "member joined or left one group, for a plain confluent-kafka group and for a group of "
            "PyrallelConsumers, median and max over the repetitions. This is the group protocol's own price for "
            "moving partitions between members of one group, whoever consumes; compare a strategy's processing "
            "gap with it, on the same librdkafka settings.", "",
            *_table(["event", "contender", "runs", "longest unowned partition: median", "max"],
                    [(r.event, r.contender, r.runs, _secs(r.unowned_median_s), _secs(r.unowned_max_s))
                     for r in handover.rows])]


def _duplicate_explanation(run: RunFile) -> str:
    record = run.record
    notes = [f"{c.name}: {c.measured}" for c in record.criteria if "duplicate" in c.name.lower()]
    if record.cause:
        notes.append(record.cause)
    return "; ".join(notes) if notes else "no explanation recorded by the runner"


def _problems(runs: Sequence[RunFile]) -> list[str]:
    items: list[str] = []
    for run in runs:
        record = run.record
        link = f"[{run.label}](#{_anchor(run)}-{record.verdict.lower()})"
        failed = [c for c in record.criteria if not c.passed]
        items += [f"- {link}: criterion **{c.name}** failed — target {c.target}, measured {c.measured}. "
                  f"Cause: {record.cause or 'not recorded'}." for c in failed]
        if not record.passed and not failed:
            items.append(f"- {link}: run FAIL. Cause: {record.cause or 'not recorded'}.")
        t = record.validation
        if t.duplicates > 0:
            split = _by_color(t.duplicates_by_color)
            items.append(f"- {link}: {t.duplicates} duplicates" + (f" ({split})" if split else "")
                         + f", {t.cross_color_duplicates} handled by both colors. "
                         f"Explanation: {_duplicate_explanation(run)}.")
    return ["## Found problems", "", *(items or ["None: every criterion passed and no run had duplicates."]), ""]


def _recommendation(summaries: Sequence[StrategySummary]) -> list[str]:
    """The strategy whose runs all passed with the lowest p99 processing gap: what the records feel, not how fast the
    controller's steps were (a quick pause/resume can still leave partitions unowned for seconds)."""
    passing = [s for s in summaries if s.ok]
    failing = [s for s in summaries if not s.ok]
    lines = ["## Recommendation", ""]
    if not passing:
        lines.append("No strategy passed all of its runs, so none is recommended until the problems above are "
                     "fixed: " + "; ".join(f"{s.strategy} {s.runs - s.passed} of {s.runs} runs failed"
                                           for s in failing) + ".")
        return [*lines, ""]
    ranked = sorted(passing, key=lambda s: (s.p99_gap is None, s.p99_gap or 0.0, s.median_gap or 0.0,
                                            s.median_switch or 0.0, s.strategy))
    best = ranked[0]
    text = f"**{best.strategy}**: all {best.runs} of its runs passed (lost {best.lost}, no dual-active window)"
    if best.p99_gap is None:
        text += (", but none of them measured a processing gap, so the choice is not backed by what the records "
                 "felt")
    else:
        text += (f", and its p99 processing gap {_secs(best.p99_gap)} (median {_secs(best.median_gap)}, max "
                 f"{_secs(best.max_gap)}, n={len(best.gaps)}) is the lowest")
        others = [f"{s.strategy} {_secs(s.p99_gap)}" for s in ranked[1:] if s.p99_gap is not None]
        text += f" among the passing strategies ({', '.join(others)})" if others else " (the only passing strategy)"
        if best.strategy in TARGET_GAP_S:
            target = TARGET_GAP_S[best.strategy]
            text += f"; {'within' if best.p99_gap < target else 'not within'} its target of {target:g} s"
    text += (f"; controller step time: median switch {_secs(best.median_switch)}, median rollback "
             f"{_secs(best.median_rollback)}; {best.duplicates} duplicates over its runs.")
    if best.strategy in COMPLEXITY:
        impl, ops = COMPLEXITY[best.strategy]
        text += f" Implementation: {impl}. Operations: {ops}."
    if failing:
        text += " Not eligible: " + "; ".join(f"{s.strategy} ({s.runs - s.passed} of {s.runs} runs failed)"
                                             for s in failing) + "."
    return [*lines, text, ""]


def render_report(runs: Sequence[RunFile], skipped: Sequence[tuple[Path, str]],
                  figures: Mapping[Path, Sequence[tuple[str, Path]]], runs_dir: Path, out_dir: Path,
                  handover: Handover | str | None = None) -> str:
    """The whole report; ``figures`` maps each run's path to its (caption, file) pairs, linked from ``out_dir``;
    ``handover`` is the rebalance benchmark's results, or why there are none (None: not looked for)."""
    summaries = summarize(runs)
    first, last = min(r.record.started_at for r in runs), max(r.record.ended_at for r in runs)
    lines = ["# Blue/green switching: test report", "",
             f"{len(runs)} run(s) from `{runs_dir}`, {_when(first)} to {_when(last)}. "
             "Generated by `pyrallel report`.", ""]
    lines += _summary(runs, summaries, skipped)
    lines += _environment(runs)
    lines += _scenarios(runs, figures, out_dir)
    lines += _comparison(summaries, handover)
    lines += _problems(runs)
    lines += _recommendation(summaries)
    return "\n".join(lines)
