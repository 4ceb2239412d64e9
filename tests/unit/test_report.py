"""The blue/green test report built from hand-made run files: verdicts, numbers, problems, plots, bad input."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pyrallel_consumer.bluegreen.controller import Step, SwitchResult
from pyrallel_tools.bluegreen.reporting import plots
from pyrallel_tools.bluegreen.reporting.build import REPORT_NAME, build_report
from pyrallel_tools.bluegreen.reporting.load import ReportError, load_runs
from pyrallel_tools.bluegreen.reporting.markdown import render_report
from pyrallel_tools.bluegreen.reporting.plots import _rates, _series_per_color
from pyrallel_tools.bluegreen.reporting.summary import nearest_rank, rollback_seconds, switch_seconds
from pyrallel_tools.bluegreen.run_record import Sample
from pyrallel_tools.cli.report_cmd import report

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENVIRONMENT = {"kafka": "4.1.1", "python": "3.11.2", "confluent_kafka": "2.16.0", "librdkafka": "2.16.0",
               "partitions": 8, "replicas": 1, "rate_per_s": 100, "instances_per_color": 3, "machine": "test-box"}


def steps(*spec: tuple[str, float, bool], start: float) -> list[dict[str, Any]]:
    """Back-to-back steps from (name, seconds, ok)."""
    out = []
    t = start
    for name, seconds, ok in spec:
        out.append({"name": name, "started_at": t, "seconds": seconds, "ok": ok, "detail": "" if ok else "boom"})
        t += seconds
    return out


def switch(strategy: str, action: str, start: float, seconds: float, step_list: list[dict[str, Any]], *,
           ok: bool = True, rolled_back: bool = False, from_color: str = "blue") -> dict[str, Any]:
    to_color = "green" if from_color == "blue" else "blue"
    return {"strategy": strategy, "action": action, "from_color": from_color, "to_color": to_color,
            "generation": 2, "started_at": start, "seconds": seconds, "ok": ok, "rolled_back": rolled_back,
            "error": None if ok else "health check green: error rate 90%", "steps": step_list}


def samples(switch_at: float, until: float = 20.0, step: float = 0.5) -> list[dict[str, Any]]:
    """Three instances per color: blue active until ``switch_at`` (seconds after T0), green after."""
    out: list[dict[str, Any]] = []
    handled = {f"{c}-{i}": 0 for c in ("blue", "green") for i in range(3)}
    t = 0.0
    while t <= until:
        for color in ("blue", "green"):
            active = (t < switch_at) == (color == "blue")
            for i in range(3):
                name = f"{color}-{i}"
                if active:
                    handled[name] += int(100 / 3 * step)
                out.append({"t": T0 + t, "color": color, "instance": name,
                            "state": "ACTIVE" if active else "PAUSED", "lag": 20 + i if active else None,
                            "handled": handled[name]})
        t += step
    return out


def run(strategy: str, scenario: int, verdict: str, switches: list[dict[str, Any]], *, lost: int = 0,
        duplicates: int = 0, dup_by_color: dict[str, int] | None = None, rebalances: tuple[int, int] = (0, 0),
        criteria: list[dict[str, Any]] | None = None, cause: str | None = None, variant: str | None = None,
        events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "strategy": strategy, "scenario": scenario, "variant": variant, "title": f"{strategy} scenario {scenario}",
        "started_at": T0, "ended_at": T0 + 20.0, "environment": ENVIRONMENT,
        "conditions": {"rate_per_s": 100, "health_window_s": 5.0},
        "switches": switches,
        "validation": {"ok": lost == 0, "produced": 2000, "consumed": 2000 - lost + duplicates, "lost": lost,
                       "pending": 0, "duplicates": duplicates, "duplicates_by_color": dup_by_color or {},
                       "cross_color_duplicates": 0, "dual_active_count": 0, "order_violations": 0},
        "samples": samples(8.0),
        "events": events if events is not None else [
            {"t": T0 + 8.0, "kind": "switch_start", "detail": "blue -> green"},
            {"t": T0 + 8.4, "kind": "switch_end", "detail": "ok"}],
        "rebalances": {"blue": rebalances[0], "green": rebalances[1]},
        "criteria": criteria or [{"name": "lost", "target": "0", "measured": str(lost), "pass": lost == 0}],
        "verdict": verdict, "cause": cause,
    }


C_NORMAL = run("C", 1, "PASS", [switch("C", "switch", T0 + 8, 0.412, steps(
    ("pause blue", 0.2, True), ("record active color green", 0.05, True), ("resume green", 0.162, True),
    start=T0 + 8))], rebalances=(1, 2))
B_ROLLBACK = run("B", 2, "PASS", [
    switch("B", "switch", T0 + 8, 12.5, steps(("pause blue", 2.0, True), ("copy offsets blue -> green", 8.0, True),
                                              ("record active color green", 0.5, True), ("resume green", 2.0, True),
                                              start=T0 + 8)),
    switch("B", "rollback", T0 + 21, 10.25, steps(("pause green", 2.0, True), ("copy offsets", 6.25, True),
                                                  ("record active color blue", 0.5, True),
                                                  ("resume blue", 1.5, True), start=T0 + 21),
           from_color="green")],
    duplicates=7, dup_by_color={"blue": 7}, rebalances=(3, 3),
    criteria=[{"name": "lost", "target": "0", "measured": "0", "pass": True},
              {"name": "duplicates explained", "target": "all explained",
               "measured": "7 records in flight at the rollback pause", "pass": True}],
    events=[{"t": T0 + 8.0, "kind": "switch_start", "detail": ""}, {"t": T0 + 20.5, "kind": "switch_end", "detail": ""},
            {"t": T0 + 21.0, "kind": "rollback_start", "detail": ""},
            {"t": T0 + 31.25, "kind": "rollback_end", "detail": ""}])
E_LOSS = run("E", 1, "FAIL", [switch("E", "switch", T0 + 8, 20.0, steps(("stop connector blue", 20.0, True),
                                                                        start=T0 + 8))],
             lost=12, cause="the sink committed offsets past records it had not flushed")
C_AUTO_ROLLBACK = run("C", 5, "PASS", [switch("C", "switch", T0 + 8, 5.65, steps(
    ("pause blue", 0.1, True), ("record active color green", 0.05, True), ("resume green", 0.2, True),
    ("health check green", 5.0, False), ("rollback: pause green", 0.15, True),
    ("rollback: record active color blue", 0.05, True), ("rollback: resume blue", 0.1, True),
    start=T0 + 8), ok=False, rolled_back=True)], rebalances=(2, 2),
    events=[{"t": T0 + 8.0, "kind": "switch_start", "detail": ""}, {"t": T0 + 9.0, "kind": "fault", "detail": ""},
            {"t": T0 + 13.35, "kind": "rollback_start", "detail": ""},
            {"t": T0 + 13.65, "kind": "rollback_end", "detail": ""}])


C_FELT = {**C_NORMAL,
          "switches": [{**C_NORMAL["switches"][0], "processing_gap_s": 3.011, "processing_gap_end": T0 + 11.08,
                        "latency_p50_s": 0.0, "latency_p99_s": 0.141, "latency_max_s": 0.172,
                        "latency_records": 321}],
          "latency": [{"t": T0 + t, "p50_s": 0.01, "max_s": 3.0 if t == 8 else 0.1, "records": 100}
                      for t in range(20)]}


def with_gaps(data: dict[str, Any], *gaps: float, rollback_gap: float | None = None) -> dict[str, Any]:
    """``data`` with a processing gap per switch (and an automatic rollback's gap on the last one)."""
    switches = [{**s, "processing_gap_s": g} for s, g in zip(data["switches"], gaps, strict=True)]
    if rollback_gap is not None:
        switches[-1]["automatic_rollback"] = {"processing_gap_s": rollback_gap, "processing_gap_end": None,
                                              "latency_p50_s": None, "latency_p99_s": None, "latency_max_s": None,
                                              "records": 0}
    return {**data, "switches": switches}


# C is the quicker by the controller's step time, B by the processing gap; C's worst gap is its automatic rollback's.
C_NORMAL_GAP = with_gaps(C_NORMAL, 0.9)
B_ROLLBACK_GAP = with_gaps(B_ROLLBACK, 0.3, 0.4)
C_AUTO_ROLLBACK_GAP = with_gaps(C_AUTO_ROLLBACK, 0.5, rollback_gap=1.5)
REBALANCE_RESULTS = {
    "machine": {"date": "2026-12-06T10:36:17+0000", "librdkafka": "2.16.0", "kafka": "4.1.1"},
    "config": {"partitions": 8, "members": 3, "repetitions": 3, "kafka": {"heartbeat.interval.ms": "500"}},
    "measures": [],
    "summaries": [{"contender": c, "event": e, "runs": 3, "max_unowned_median_s": m, "max_unowned_max_s": x,
                   "settle_median_s": None, "settle_max_s": None}
                  for c, e, m, x in [("plain", "join", 1.011, 1.013), ("plain", "leave", 0.477, 0.484),
                                     ("pyrallel", "join", 0.582, 1.02), ("pyrallel", "leave", 0.319, 0.347)]],
    "ratios": [], "errors": {}, "duration_s": 70.3,
}


def write_runs(tmp_path: Path, runs: dict[str, dict[str, Any]], extra: dict[str, str] | None = None) -> Path:
    runs_dir = tmp_path / "run"
    runs_dir.mkdir()
    for name, data in runs.items():
        (runs_dir / name).write_text(json.dumps(data))
    for name, text in (extra or {}).items():
        (runs_dir / name).write_text(text)
    return runs_dir


def table_row(markdown: str, first_cell: str) -> list[str]:
    rows = [line for line in markdown.splitlines() if line.startswith(f"| {first_cell} |")]
    assert rows, f"no row starting with {first_cell!r}"
    return [c.strip() for c in rows[0].strip("|").split(" | ")]


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, str]:
    runs_dir = write_runs(tmp_path, {"c-1.json": C_NORMAL_GAP, "b-2.json": B_ROLLBACK_GAP, "e-1.json": E_LOSS,
                                     "c-5.json": C_AUTO_ROLLBACK_GAP},
                          {"broken.json": '{"strategy": "C", "scenario": ', "no-verdict.json": '{"strategy": "B"}'})
    out = tmp_path / "report"
    path = build_report(runs_dir, out, rebalance_results=None)
    return out, path.read_text()


def test_report_has_verdicts_per_strategy_and_overall(built: tuple[Path, str]) -> None:
    out, md = built
    assert (out / REPORT_NAME).is_file()
    summary = section(md, "Executive summary")
    assert "**Overall: FAIL** — 3 of 4 runs passed" in summary
    assert table_row(summary, "B") == ["B", "1", "1", "PASS", "0", "direct"]
    assert table_row(summary, "C") == ["C", "2", "2", "PASS", "0", "direct"]
    assert table_row(summary, "E") == ["E", "1", "0", "FAIL", "12", "direct"]
    assert "### E scenario 1: FAIL" in md
    assert "**Verdict: FAIL** — cause: the sink committed offsets past records it had not flushed" in md
    assert "### C scenario 5: PASS" in md


def test_environment_lists_versions_and_sizes(built: tuple[Path, str]) -> None:
    env = section(built[1], "Environment")
    assert table_row(env, "kafka") == ["kafka", "4.1.1"]
    assert table_row(env, "partitions") == ["partitions", "8"]
    assert table_row(env, "replicas") == ["replicas", "1"]
    assert table_row(env, "rate_per_s") == ["rate_per_s", "100"]


def test_comparison_table_numbers(built: tuple[Path, str]) -> None:
    comparison = section(built[1], "Strategy comparison")
    assert ("| strategy | runs passed | processing gap median | processing gap p99 | processing gap max | n "
            "| gap target | controller step time: switch | controller step time: rollback | lost | duplicates "
            "| rebalances |") in comparison
    b = table_row(comparison, "B")
    assert b[:12] == ["B", "1/1", "0.350 s", "0.400 s", "0.400 s", "2", "< 1 s", "12.500 s (max 12.500 s, n=1)",
                      "10.250 s (max 10.250 s, n=1)", "0", "7", "6"]
    assert "no membership change" in b[13]
    c = table_row(comparison, "C")
    # The automatic rollback's gap (1.5 s) is among C's gaps; its steps (0.15 + 0.05 + 0.1 s) are a rollback time,
    # and the auto-rolled-back switch is no switch time.
    assert c[:12] == ["C", "2/2", "0.900 s", "1.500 s", "1.500 s", "3", "< 1 s", "0.412 s (max 0.412 s, n=1)",
                      "0.300 s (max 0.300 s, n=1)", "0", "0", "7"]
    assert "lifecycle API" in c[12]
    e = table_row(comparison, "E")
    assert e[:12] == ["E", "0/1", "—", "—", "—", "0", "< 2 s", "20.000 s (max 20.000 s, n=1)", "—", "12", "0", "0"]
    assert "sink-style" in e[13]
    assert "Plain-group hand-over" not in comparison  # build_report(..., rebalance_results=None)


def test_found_problems_list_failed_criteria_and_duplicates(built: tuple[Path, str]) -> None:
    problems = section(built[1], "Found problems")
    assert "[E scenario 1](#e-scenario-1-fail): criterion **lost** failed — target 0, measured 12." in problems
    assert "the sink committed offsets past records it had not flushed" in problems
    assert "[B scenario 2](#b-scenario-2-pass): 7 duplicates (blue 7)" in problems
    assert "7 records in flight at the rollback pause" in problems
    assert "C scenario" not in problems


def test_recommendation_is_the_passing_strategy_with_the_lowest_p99_gap(built: tuple[Path, str]) -> None:
    # C's controller step time is far lower (0.412 s against 12.5 s), but the records waited longer across its
    # switches: B is recommended.
    text = section(built[1], "Recommendation")
    assert text.strip().startswith("**B**: all 1 of its runs passed")
    assert ("its p99 processing gap 0.400 s (median 0.350 s, max 0.400 s, n=2) is the lowest among the passing "
            "strategies (C 1.500 s); within its target of 1 s") in text
    assert "controller step time: median switch 12.500 s, median rollback 10.250 s" in text
    assert "Not eligible: E (1 of 1 runs failed)" in text


def test_without_any_gap_the_recommendation_says_it_is_not_backed_by_one(tmp_path: Path) -> None:
    md = build_report(write_runs(tmp_path, {"c.json": C_NORMAL}), tmp_path / "out", None).read_text()
    assert "none of them measured a processing gap, so the choice is not backed by what the records felt" in md


def test_nearest_rank_p99() -> None:
    assert nearest_rank([], 0.99) is None
    assert nearest_rank([0.3, 2.0, 0.1], 0.99) == 2.0  # fewer than 100 values: the max
    assert nearest_rank([float(v) for v in range(1, 201)], 0.99) == 198.0


def test_unreadable_files_are_reported_not_fatal(built: tuple[Path, str]) -> None:
    summary = section(built[1], "Executive summary")
    assert "**2 run file(s) could not be read" in summary
    assert "- `broken.json`: JSONDecodeError" in summary
    assert "- `no-verdict.json`: _SchemaError: verdict: expected a string, got None" in summary


def test_figures_are_png_and_linked_relatively(built: tuple[Path, str]) -> None:
    out, md = built
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(links) == 4 * 3
    for link in links:
        assert link.startswith("figures/")
        data = (out / link).read_bytes()
        assert data[:8] == PNG_SIGNATURE
        assert len(data) > 10_000


def test_no_passing_strategy_means_no_recommendation(tmp_path: Path) -> None:
    runs_dir = write_runs(tmp_path, {"e.json": E_LOSS})
    md = build_report(runs_dir, tmp_path / "out").read_text()
    assert "No strategy passed all of its runs, so none is recommended" in md
    assert "E 1 of 1 runs failed" in md


def test_run_without_samples_has_no_plots(tmp_path: Path) -> None:
    runs_dir = write_runs(tmp_path, {"c.json": {**C_NORMAL, "samples": []}})
    md = build_report(runs_dir, tmp_path / "out").read_text()
    assert "No samples were recorded" in md
    assert not list((tmp_path / "out" / "figures").iterdir())


def test_missing_empty_or_all_unreadable_runs_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        build_report(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no run files"):
        build_report(tmp_path / "empty", tmp_path / "out")
    runs_dir = write_runs(tmp_path, {}, {"bad.json": "[]"})
    with pytest.raises(ReportError, match=re.escape("bad.json: _SchemaError: run: expected an object")):
        build_report(runs_dir, tmp_path / "out")


def test_cli_errors_and_success(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(report, ["--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert missing.exit_code == 1
    assert "does not exist" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(report, ["--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert empty.exit_code == 1
    assert "no run files" in empty.output
    runs_dir = write_runs(tmp_path, {"c.json": C_NORMAL})
    ok = runner.invoke(report, ["--runs", str(runs_dir), "--out", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "out" / REPORT_NAME).is_file()


def result(action: str, spec: Sequence[tuple[str, float, bool]], *, ok: bool) -> SwitchResult:
    started = [T0 + sum(s[1] for s in spec[:i]) for i in range(len(spec))]
    return SwitchResult("C", action, "blue", "green", 2, T0, sum(s[1] for s in spec), ok, False, None,
                        [Step(n, t, s, k) for (n, s, k), t in zip(spec, started, strict=True)])


def test_switch_and_rollback_times_leave_out_the_health_window() -> None:
    healthy = result("switch", [("pause blue", 0.25, True), ("resume green", 0.25, True),
                                ("health check green", 5.0, True)], ok=True)
    assert switch_seconds(healthy) == pytest.approx(0.5)
    assert rollback_seconds(healthy) is None
    back = result("rollback", [("pause green", 0.25, True), ("resume blue", 0.5, True)], ok=True)
    assert switch_seconds(back) is None
    assert rollback_seconds(back) == pytest.approx(0.75)
    broken = result("switch", [("pause blue", 0.25, False)], ok=False)
    assert switch_seconds(broken) is None
    assert rollback_seconds(broken) is None


def test_throughput_sums_instance_rates_and_survives_a_counter_reset() -> None:
    def s(t: float, instance: str, handled: int) -> Sample:
        return Sample(T0 + t, "blue", instance, "ACTIVE", 0, handled)

    # b-1 is restarted between t=1 and t=2: its counter starts again from 0.
    data = [s(0, "b-0", 0), s(0, "b-1", 100), s(1, "b-0", 50), s(1, "b-1", 130), s(2, "b-0", 100), s(2, "b-1", 20)]
    times, values = _series_per_color(_rates(data))["blue"]
    assert times == [T0, T0 + 1, T0 + 2]
    assert values[1:] == [80.0, 70.0]


def test_the_controllers_step_time_stands_next_to_what_the_records_felt(tmp_path: Path) -> None:
    runs_dir = write_runs(tmp_path, {"c.json": C_FELT})
    out = tmp_path / "out"
    md = build_report(runs_dir, out).read_text()
    assert ("| switch | action | controller step time | processing gap | gap ended | latency p50 | latency p99 "
            "| latency max | records |") in md
    assert table_row(md, "0") == ["0", "switch", "0.412 s", "3.011 s", "+11.080", "0.000 s", "0.141 s", "0.172 s",
                                  "321"]
    latency_plot = out / "figures" / "c-latency.png"
    assert "](figures/c-latency.png)" in md
    assert latency_plot.read_bytes()[:8] == PNG_SIGNATURE


def test_a_run_through_the_kubernetes_controller_names_it_with_its_gap_estimates(tmp_path: Path) -> None:
    """The driver in the summary and the run's section; the controller's estimate beside the measured gap. A file
    without a driver (written before there were drivers) reads as the runner's own controller."""
    kube = {**C_FELT, "environment": {**ENVIRONMENT, "driver": "kubernetes", "kube_apiserver": "v1.37.2"},
            "switches": [{**C_FELT["switches"][0], "controller_gap_s": 0.25, "controller_gap_note": None}]}
    runs_dir = write_runs(tmp_path, {"c-kube.json": kube, "b-2.json": B_ROLLBACK_GAP})
    md = build_report(runs_dir, tmp_path / "out").read_text()
    summary = section(md, "Executive summary")
    assert table_row(summary, "C") == ["C", "1", "1", "PASS", "0", "Kubernetes controller"]
    assert table_row(summary, "B") == ["B", "1", "1", "PASS", "0", "direct"]
    c_section = md.split("### C scenario 1: PASS", 1)[1].split("\n### ", 1)[0]
    assert ("strategy C, driven through the Kubernetes controller (`pyrallel controller serve --kubernetes`, "
            "kube-apiserver v1.37.2); lost 0.") in c_section
    assert table_row(c_section, "0") == ["0", "switch", "0.412 s", "3.011 s", "+11.080", "0.000 s", "0.141 s",
                                         "0.172 s", "321", "0.250 s"]
    b_section = md.split("### B scenario 2: PASS", 1)[1].split("\n### ", 1)[0]
    assert "driven by the runner's in-process SwitchController" in b_section
    assert "gap estimate" not in b_section


def test_a_run_without_switch_impact_has_neither_the_table_nor_the_latency_plot(tmp_path: Path) -> None:
    runs_dir = write_runs(tmp_path, {"c.json": C_NORMAL})
    md = build_report(runs_dir, tmp_path / "out").read_text()
    assert "**As the records felt it**" not in md
    assert not (tmp_path / "out" / "figures" / "c-latency.png").exists()


def test_balance_table_per_instance_and_partitions_plot(tmp_path: Path) -> None:
    def s(t: float, instance: str, state: str, handled: int, assigned: int | None) -> dict[str, Any]:
        return {"t": T0 + t, "color": instance.split("-")[0], "instance": instance, "state": state, "lag": 0,
                "handled": handled, "assigned": assigned}

    # blue-0 owns all 8 partitions at first, goes DOWN (the sampler keeps its count) and restarts from 0;
    # blue-1 is ACTIVE with no partition for its first 0.5 s; green takes over at +3.
    data = [s(0, "blue-0", "ACTIVE", 0, 8), s(0, "blue-1", "ACTIVE", 0, 0), s(0, "green-0", "PAUSED", 0, 0),
            s(0.5, "blue-0", "ACTIVE", 100, 8), s(0.5, "blue-1", "ACTIVE", 0, 0), s(0.5, "green-0", "PAUSED", 0, 0),
            s(1, "blue-0", "ACTIVE", 150, 4), s(1, "blue-1", "ACTIVE", 30, 4), s(1, "green-0", "PAUSED", 0, 0),
            s(1.5, "blue-0", "DOWN", 150, None), s(1.5, "blue-1", "ACTIVE", 60, 8), s(1.5, "green-0", "PAUSED", 0, 0),
            s(2, "blue-0", "STARTING", 0, 0), s(2, "blue-1", "ACTIVE", 90, 8), s(2, "green-0", "PAUSED", 0, 0),
            s(2.5, "blue-0", "ACTIVE", 20, 4), s(2.5, "blue-1", "ACTIVE", 100, 4), s(2.5, "green-0", "PAUSED", 0, 0),
            s(3, "blue-0", "PAUSED", 25, 4), s(3, "blue-1", "PAUSED", 100, 4), s(3, "green-0", "ACTIVE", 10, 8)]
    runs_dir = write_runs(tmp_path, {"c.json": {**C_NORMAL, "samples": data}})
    out = tmp_path / "out"
    md = build_report(runs_dir, out, None).read_text()
    assert ("| instance | color | records handled | most partitions at once | partitions at the end "
            "| longest ACTIVE with no partition |") in md
    assert table_row(md, "blue-0") == ["blue-0", "blue", "175 (2 lives)", "8", "4", "0.0 s"]
    assert table_row(md, "blue-1") == ["blue-1", "blue", "100", "8", "4", "0.5 s"]
    assert table_row(md, "green-0") == ["green-0", "green", "10", "8", "8", "0.0 s"]
    assert "](figures/c-partitions.png)" in md
    assert (out / "figures" / "c-partitions.png").read_bytes()[:8] == PNG_SIGNATURE


def test_connectors_without_partitions_have_only_records_handled(tmp_path: Path) -> None:
    runs_dir = write_runs(tmp_path, {"e.json": E_LOSS})
    out = tmp_path / "out"
    md = build_report(runs_dir, out, None).read_text()
    assert "| instance | color | records handled |\n" in md
    assert "The instances report no partitions." in md
    assert table_row(md, "blue-0")[:2] == ["blue-0", "blue"]
    assert "most partitions at once" not in md
    assert not (out / "figures" / "e-partitions.png").exists()


def test_plain_group_handover_beside_the_strategies(tmp_path: Path) -> None:
    results = tmp_path / "rebalance-latest.json"
    results.write_text(json.dumps(REBALANCE_RESULTS))
    md = build_report(write_runs(tmp_path, {"c.json": C_NORMAL_GAP}), tmp_path / "out", results).read_text()
    comparison = section(md, "Strategy comparison")
    assert "### Plain-group hand-over: what Kafka's group protocol itself costs a same-group hand-over" in comparison
    assert ("2026-12-06T10:36:17+0000; librdkafka 2.16.0; extra librdkafka properties: `heartbeat.interval.ms=500`"
            in comparison)
    rows = [line for line in comparison.splitlines() if line.startswith("| a member")]
    assert [[c.strip() for c in row.strip("|").split(" | ")] for row in rows] == [
        ["a member joins (3 -> 4)", "plain confluent-kafka group (cooperative-sticky, subscribe + poll)", "3",
         "1.011 s", "1.013 s"],
        ["a member joins (3 -> 4)", "PyrallelConsumer (this library, async engine, no-op handler)", "3", "0.582 s",
         "1.020 s"],
        ["a member leaves cleanly (4 -> 3)", "plain confluent-kafka group (cooperative-sticky, subscribe + poll)",
         "3", "0.477 s", "0.484 s"],
        ["a member leaves cleanly (4 -> 3)", "PyrallelConsumer (this library, async engine, no-op handler)", "3",
         "0.319 s", "0.347 s"]]


@pytest.mark.parametrize(("content", "why"), [
    (None, "no rebalance benchmark results at"),
    ("<a directory>", "could not be read (IsADirectoryError"),
    ("{not json", "are not usable (file: Invalid JSON"),
    (json.dumps({**REBALANCE_RESULTS, "summaries": "x"}), "are not usable (summaries: Input should be a valid array)"),
    (json.dumps({**REBALANCE_RESULTS, "summaries": []}), "hold no measurements"),
])
def test_a_missing_or_unreadable_rebalance_file_is_one_line(tmp_path: Path, content: str | None, why: str) -> None:
    results = tmp_path / "rebalance-latest.json"
    if content == "<a directory>":
        results.mkdir()
    elif content is not None:
        results.write_text(content)
    md = build_report(write_runs(tmp_path, {"c.json": C_NORMAL_GAP}), tmp_path / "out", results).read_text()
    handover = md.split("### Plain-group hand-over", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in handover.splitlines()[1:] if line]
    assert len(lines) == 1
    assert lines[0].startswith("Not shown: ")
    assert why in lines[0]


def test_cli_takes_the_rebalance_results(tmp_path: Path) -> None:
    results = tmp_path / "r.json"
    results.write_text(json.dumps(REBALANCE_RESULTS))
    runs_dir = write_runs(tmp_path, {"c.json": C_NORMAL_GAP})
    ok = CliRunner().invoke(report, ["--runs", str(runs_dir), "--out", str(tmp_path / "out"),
                                     "--rebalance-results", str(results)])
    assert ok.exit_code == 0, ok.output
    assert "| a member joins (3 -> 4) |" in (tmp_path / "out" / REPORT_NAME).read_text()


def test_the_report_defines_rebalances_and_says_why_the_targets_differ(built: tuple[Path, str]) -> None:
    _, md = built
    run_section = md.split("### C scenario 1: PASS\n", 1)[1].split("\n### ", 1)[0]
    assert "*Rebalances* counts partition assignment events, not group rebalances" in run_section
    comparison = section(md, "Strategy comparison")
    assert "rebalances: partition assignment events" in comparison
    why = next(line for line in comparison.splitlines() if line.startswith("The targets differ because"))
    assert re.search(r"B \(< 1 s\): .*; C \(< 1 s\): .*; E \(< 2 s\): the new connector is started by Kafka Connect",
                     why)


def test_plots_start_at_the_runs_start_and_mark_the_switch_as_measured(tmp_path: Path) -> None:
    """0 s on every plot is the run's start, as in the text; a sample taken before it (clock skew) is left out."""
    early = {**C_NORMAL, "samples": [{**C_NORMAL["samples"][0], "t": T0 - 1.0}, *C_NORMAL["samples"][1:]]}
    runs, _ = load_runs(write_runs(tmp_path, {"c.json": early}))
    _fig, ax = plots._new_figure(3.0)
    plots._frame(ax, runs[0], "lag")
    assert ax.get_xlim()[0] == 0.0
    md = render_report(runs, [], {runs[0].path: [("Lag per color", tmp_path / "lag.png")]}, tmp_path, tmp_path)
    assert ("The plots start at the run's start (0 s: the topic, the consumers and the controller being set up; the "
            "first sample came at +0.0 s). A switch's solid and dashed lines are its start and end as the controller "
            "measured them") in md
