"""Scenario runs end to end: real producer and consumer processes (or connectors), a switch, the validator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyrallel_tools.bluegreen.run_spec import RunOptions
from pyrallel_tools.bluegreen.scenarios import ScenarioRun

pytestmark = pytest.mark.integration

FELT = ("processing_gap_s", "latency_p99_s", "latency_max_s")
"""What the records felt of a switch or a rollback: recorded for each, strategy E included (the sink watcher)."""

EXPECTED_SWITCHES: dict[int, list[tuple[str, str, bool]]] = {
    1: [("switch", "green", True)],
    2: [("switch", "green", True), ("rollback", "blue", True)],
    4: [("switch", "green", True)],
    5: [("switch", "green", False)],
    6: [("switch", "green", True), ("rollback", "blue", True)],
}


def _options(bootstrap: str, connect_url: str, tmp_path: Path, switches: int = 10) -> RunOptions:
    return RunOptions(bootstrap=bootstrap, connect_url=connect_url, out_dir=tmp_path / "run",
                      work_dir=tmp_path / "work", instances=2, settle_s=3.0, switches=switches)


def _failed_behaviour(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The failed criteria but the processing gaps: a gap is a measurement for the report (a loaded CI machine is no
    place to judge timings), not behaviour."""
    return [c for c in result["criteria"] if not c["pass"] and not c["name"].endswith("processing gap")]


def _assert_felt(result: dict[str, Any]) -> None:
    """Every switch and rollback, and an automatic rollback inside a switch, records non-negative figures."""
    for switch in result["switches"]:
        figures = [(switch["action"], switch)]
        if switch["rolled_back"]:
            assert switch["automatic_rollback"] is not None, switch
            figures.append(("automatic rollback", switch["automatic_rollback"]))
        else:
            assert switch["automatic_rollback"] is None, switch
        for what, entry in figures:
            for name in FELT:
                value = entry[name]
                assert value is not None and value >= 0, f"{what} to {switch['to_color']}: {name}={value!r}"


@pytest.mark.parametrize(("strategy", "scenario", "switches"),
                         [("C", 1, 10), ("B", 1, 10), ("E", 1, 10), ("C", 2, 10), ("C", 5, 10), ("C", 6, 2),
                          ("B", 6, 2)])
def test_scenario_passes_with_no_loss_and_no_dual_activity(
    kafka_bootstrap: str, kafka_connect_url: str, tmp_path: Path, strategy: str, scenario: int, switches: int
) -> None:
    result = ScenarioRun(strategy, scenario, None,
                         _options(kafka_bootstrap, kafka_connect_url, tmp_path, switches)).execute()
    validation = result["validation"]
    assert validation["produced"] > 300
    assert validation["lost"] == 0
    assert validation["dual_active_count"] == 0
    assert _failed_behaviour(result) == [], result["cause"]
    assert (tmp_path / "run" / f"{result['run_id']}.json").exists()
    assert [(s["action"], s["to_color"], s["ok"]) for s in result["switches"]] == EXPECTED_SWITCHES[scenario]
    _assert_felt(result)
    # The gaps are judged by the criteria (a name per switch), only not by this test.
    gaps = [c["name"] for c in result["criteria"] if c["name"].endswith("processing gap")]
    expected_gaps = {1: ["switch 0 processing gap"], 2: ["switch 0 processing gap", "rollback 1 processing gap"],
                     5: [], 6: ["switch 0 processing gap", "rollback 1 processing gap"]}
    assert gaps == expected_gaps[scenario]
    if scenario == 5:
        (switch,) = result["switches"]
        assert switch["rolled_back"]
        assert "error rate" in switch["error"]


def test_a_blue_member_killed_as_the_switch_starts_comes_back_paused(
    kafka_bootstrap: str, kafka_connect_url: str, tmp_path: Path
) -> None:
    """Scenario 4: the restarted blue instance reads the active color and comes up PAUSED, green alone active."""
    result = ScenarioRun("C", 4, "dynamic", _options(kafka_bootstrap, kafka_connect_url, tmp_path)).execute()
    validation = result["validation"]
    assert validation["produced"] > 300
    assert (validation["lost"], validation["dual_active_count"]) == (0, 0)
    assert [e["kind"] for e in result["events"] if e["kind"] in ("kill", "restart")] == ["kill", "restart"]
    criterion = {c["name"]: c for c in result["criteria"]}["only green active after the restart"]
    assert criterion["pass"], criterion["measured"]
    assert _failed_behaviour(result) == [], result["cause"]
    assert [(s["action"], s["to_color"], s["ok"]) for s in result["switches"]] == EXPECTED_SWITCHES[4]
    _assert_felt(result)
    # The restarted instance itself: its last sample says PAUSED, and it answered after the restart.
    killed = next(e["detail"] for e in result["events"] if e["kind"] == "kill")
    restarted_at = next(e["t"] for e in result["events"] if e["kind"] == "restart")
    after = [s for s in result["samples"] if s["instance"] == killed and s["t"] > restarted_at and s["state"] != "DOWN"]
    assert after, f"{killed} never answered after its restart"
    assert after[-1]["state"] == "PAUSED", after[-1]
    assert all(s["state"] == "ACTIVE" for s in result["samples"]
               if s["color"] == "green" and s["t"] == after[-1]["t"]), "green active at the end"
