"""Scenario runs end to end: real producer and consumer processes (or connectors), a switch, the validator."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrallel_tools.bluegreen.run_spec import RunOptions
from pyrallel_tools.bluegreen.scenarios import ScenarioRun

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("strategy", "scenario"), [("C", 1), ("B", 1), ("E", 1), ("C", 2), ("C", 5)])
def test_scenario_passes_with_no_loss_and_no_dual_activity(
    kafka_bootstrap: str, kafka_connect_url: str, tmp_path: Path, strategy: str, scenario: int
) -> None:
    options = RunOptions(bootstrap=kafka_bootstrap, connect_url=kafka_connect_url, out_dir=tmp_path / "run",
                         work_dir=tmp_path / "work", instances=2, settle_s=3.0)
    result = ScenarioRun(strategy, scenario, None, options).execute()
    validation = result["validation"]
    assert validation["produced"] > 300
    assert validation["lost"] == 0
    assert validation["dual_active_count"] == 0
    # Every criterion but the switch and rollback times, which are measurements for the report (a loaded CI
    # machine is no place to judge them), not behaviour.
    failed = [c for c in result["criteria"] if not c["pass"] and not c["name"].endswith("time")]
    assert failed == [], result["cause"]
    assert (tmp_path / "run" / f"{result['run_id']}.json").exists()
    # What the records felt of each switch is measured (never judged: no timing bound), one entry per switch and
    # per rollback; a sink file (E) has no handling time to measure it from.
    impact = result["switch_impact"]
    expected = {1: [(0, "switch")], 2: [(0, "switch"), (1, "rollback")], 5: [(0, "switch"), (0, "rollback")]}
    assert [(i["index"], i["action"]) for i in impact] == expected[scenario]
    for entry in impact:
        figures = [entry["processing_gap_s"], entry["latency_p50_s"], entry["latency_p99_s"], entry["latency_max_s"]]
        if strategy == "E":
            assert figures == [None] * 4
        else:
            assert all(f is not None and f >= 0 for f in figures), entry
    actions = [(s["action"], s["to_color"], s["ok"]) for s in result["switches"]]
    if scenario == 1:
        assert actions == [("switch", "green", True)]
    elif scenario == 2:
        assert actions == [("switch", "green", True), ("rollback", "blue", True)]
    else:
        (switch,) = result["switches"]
        assert (switch["ok"], switch["rolled_back"]) == (False, True)
        assert "error rate" in switch["error"]
