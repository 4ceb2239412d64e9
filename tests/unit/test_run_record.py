"""The run file model shared by the scenario runner (writer) and the report (reader): round trip and bad files."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest

from pyrallel_consumer.bluegreen.controller import Step, SwitchResult
from pyrallel_tools.bluegreen import scenarios
from pyrallel_tools.bluegreen.processes import Instance
from pyrallel_tools.bluegreen.run_record import (
    Criterion,
    Event,
    LatencyPoint,
    RunRecord,
    RunSwitch,
    Sample,
    SwitchFigures,
    ValidationSummary,
    read_run_record,
    write_run_record,
)
from pyrallel_tools.bluegreen.run_spec import RunOptions
from pyrallel_tools.bluegreen.scenarios import ScenarioRun
from pyrallel_tools.bluegreen.validation.findings import ValidationReport
from pyrallel_tools.bluegreen.validation.judge import validate
from pyrallel_tools.bluegreen.validation.load import ConsumedRecord, ProducedRecord

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0


def judged() -> ValidationReport:
    """Four records produced, three handled by blue: one lost."""
    produced = [ProducedRecord(i, "k", i, 0, i, T0 + i) for i in range(4)]
    consumed = [ConsumedRecord(i, "k", i, 0, i, "blue", "blue-1", T0 + i) for i in range(3)]
    return validate(produced, consumed)


def record() -> RunRecord:
    """A run as the scenario runner builds it, with the judge's real JSON as its validation section."""
    result = SwitchResult("C", "switch", "blue", "green", 2, T0 + 1, 0.3, True, False, None,
                          [Step("pause blue", T0 + 1, 0.2, True), Step("resume green", T0 + 1.2, 0.1, True)])
    switch = RunSwitch.of(result, SwitchFigures(2.5, T0 + 3.5, 0.01, 2.4, 2.5, 30), None)
    return RunRecord(
        verdict="FAIL", cause="lost records: 1 (target 0)", strategy="C", scenario=1, variant=None,
        title="Normal blue -> green switch", run_id="C1-abc123", started_at=T0, ended_at=T0 + 9.5,
        environment={"kafka": "4.1.1", "partitions": 8, "rate_per_s": 100.0},
        conditions={"groups": {"blue": "g", "green": "g"}, "lag_at_switch": None},
        switches=[switch],
        latency=[LatencyPoint(T0, 0.01, 0.02, 10), LatencyPoint(T0 + 1, 0.5, 2.5, 10)],
        validation=ValidationSummary.model_validate(judged().to_dict()),
        samples=[Sample(T0 + 0.5, "blue", "blue-1", "ACTIVE", 0, 1, 0, 8),
                 Sample(T0 + 1.0, "green", "green-1", "DOWN", None, 0)],
        events=[Event(T0 + 1, "switch_start", "C -> green"), Event(T0 + 1.3, "switch_end", "ok=True 0.300s")],
        rebalances={"blue": 1, "green": 2},
        criteria=[Criterion("lost records", "0", "1", False)],
    )


@pytest.fixture
def written(tmp_path: Path) -> dict[str, Any]:
    """The JSON of :func:`record` as the runner writes it."""
    path = tmp_path / "run.json"
    write_run_record(record(), path)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return path


def test_a_written_run_reads_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    write_run_record(record(), path)
    back = read_run_record(path)
    assert back == record()
    assert back.validation.dual_active_count == 0
    assert back.validation.lost == 1
    assert back.switches[0].steps[1] == Step("resume green", T0 + 1.2, 0.1, True)


def test_the_file_keeps_the_judges_whole_json_and_the_json_names(written: dict[str, Any]) -> None:
    assert written["validation"] == judged().to_dict()
    assert written["criteria"] == [{"name": "lost records", "target": "0", "measured": "1", "pass": False}]
    assert written["switches"][0] == record().switches[0].to_dict()
    assert written["samples"][1] == {"t": T0 + 1.0, "color": "green", "instance": "green-1", "state": "DOWN",
                                     "lag": None, "handled": 0, "rebalances": None, "assigned": None}


def write_logs(work: Path) -> Path:
    """A record every 0.1 s for 6 s, handled 10 ms later, except that those sent from 1.0 to 3.0 s wait until 3.0 s.

    Returns the consumers' log (one instance, blue then green in one file: the loader does not care).
    """
    work.mkdir(parents=True)
    producer, consumer = [], []
    for seq in range(60):
        sent = T0 + seq / 10
        handled = T0 + 3.0 if 1.0 <= seq / 10 < 3.0 else sent + 0.01
        producer.append({"seq": seq, "key": "k", "key_seq": seq, "partition": 0, "offset": seq, "ts": sent})
        consumer.append({"seq": seq, "key": "k", "key_seq": seq, "partition": 0, "offset": seq,
                         "color": "blue" if handled < T0 + 1.0 else "green", "instance": "x", "ts": handled})
    (work / "producer.jsonl").write_text("".join(json.dumps(p) + "\n" for p in producer))
    (work / "consumer-blue-1.jsonl").write_text("".join(json.dumps(c) + "\n" for c in consumer))
    return work / "consumer-blue-1.jsonl"


def test_the_scenario_runners_file_reads_back_as_what_it_returned(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # No broker at 127.0.0.1:1: asking it for its version and settings would wait out their timeouts (20 s).
    monkeypatch.setattr(scenarios, "environment", lambda options: {"partitions": options.partitions})
    run = ScenarioRun("C", 2, None, RunOptions(bootstrap="127.0.0.1:1", out_dir=tmp_path / "run",
                                                work_dir=tmp_path / "work", settle_s=1.0))
    log = write_logs(run.spec.work)
    run.fleet.instances["blue"].append(Instance("blue", "blue-1", "g", 1, log, []))
    original = record()
    first = original.switches[0]
    run.switches = [SwitchResult(first.strategy, first.action, first.from_color, first.to_color, first.generation,
                                 first.started_at, first.seconds, first.ok, first.rolled_back, first.error,
                                 first.steps),
                    SwitchResult("C", "rollback", "green", "blue", 3, T0 + 4, 0.5, True)]
    for sample in original.samples:
        run.recorder.add(sample)
    run.recorder.event("switch_start", "C -> green")

    result = run._result(T0, judged(), 1, None, "blue")

    back = read_run_record(tmp_path / "run" / f"{run.spec.run_id}.json")
    assert back.model_dump(mode="json", by_alias=True) == result
    assert (back.verdict, back.cause) == ("FAIL", "lost records: 1 (target 0); switch 0 processing gap: 2.000 s "
                                                  "(target < 1 s)")
    assert back.validation.dual_active_count == result["validation"]["dual_active_count"] == 0
    assert [c.name for c in back.criteria] == ["lost records", "dual-active windows", "order violations",
                                               "longest an active instance owned no partition",
                                               "switch 0 to green succeeded", "switch 0 processing gap",
                                               "rollback 1 processing gap"]
    assert back.conditions["pending_after_drain"] == 1
    # The switch (at 1.0 s) left partition 0 without a handler for 2 s; the rollback (at 4.0 s) for 10 ms.
    gaps = [(s.action, s.processing_gap_s) for s in back.switches]
    assert gaps == [("switch", pytest.approx(2.0)), ("rollback", pytest.approx(0.01, abs=1e-5))]
    assert back.switches[0].latency_max_s == pytest.approx(2.0)
    assert back.switches[0].processing_gap_end == T0 + 3.0
    assert [c.passed for c in back.criteria if c.name.endswith("processing gap")] == [False, True]
    assert back.latency[0].t == T0 and back.latency[1].max_s == pytest.approx(2.0)


def test_files_from_before_the_switch_impact_read_without_it(tmp_path: Path, written: dict[str, Any]) -> None:
    for name in ("processing_gap_s", "processing_gap_end", "latency_p50_s", "latency_p99_s", "latency_max_s",
                 "latency_records", "automatic_rollback"):
        del written["switches"][0][name]
    del written["latency"]
    back = read_run_record(write(tmp_path, written))
    assert (back.switches[0].processing_gap_s, back.switches[0].latency_records, back.latency) == (None, 0, [])


def test_samples_and_events_are_read_in_time_order(tmp_path: Path, written: dict[str, Any]) -> None:
    written["samples"].reverse()
    written["events"].reverse()
    back = read_run_record(write(tmp_path, written))
    assert [s.t for s in back.samples] == [T0 + 0.5, T0 + 1.0]
    assert [e.kind for e in back.events] == ["switch_start", "switch_end"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["validation"].pop("dual_active_count"),
     "validation.dual_active_count: expected an integer, got None"),
    (lambda d: d["validation"].update(dual_active=d["validation"].pop("dual_active_count")),
     "validation.dual_active_count: expected an integer, got None"),
    (lambda d: d.update(outcome=d.pop("verdict")), "verdict: expected a string, got None"),
    (lambda d: d.pop("cause"), "cause: missing"),
    (lambda d: d.update(note="x"), "note: unknown field"),
    (lambda d: d["switches"][0]["steps"][1].update(ok=1), "switches[0].steps[1].ok: expected true or false, got 1"),
    (lambda d: d["samples"][0].update(lag=2.0), "samples[0].lag: expected an integer, got 2.0"),
    (lambda d: d["criteria"][0].update(passed=d["criteria"][0].pop("pass")),
     "criteria[0].pass: expected true or false, got None"),
    (lambda d: d.update(verdict="OK"), "verdict: expected PASS or FAIL, got 'OK'"),
    (lambda d: d.update(switches={}), "switches: expected a list"),
    (lambda d: d["switches"][0].update(processing_gap_s="2"),
     "switches[0].processing_gap_s: expected a number, got '2'"),
])
def test_a_bad_field_is_a_value_error_naming_it(tmp_path: Path, written: dict[str, Any], edit: Any,
                                                 message: str) -> None:
    edit(written)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        read_run_record(write(tmp_path, written))


def test_not_an_object_and_not_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^run: expected an object$"):
        read_run_record(write(tmp_path, [1]))
    path = tmp_path / "broken.json"
    path.write_text('{"verdict": ')
    with pytest.raises(json.JSONDecodeError):
        read_run_record(path)


def test_a_run_switch_is_the_controllers_result_with_what_the_records_felt() -> None:
    result = SwitchResult("B", "switch", "blue", "green", 4, T0 + 1, 0.3, True, False, None,
                          [Step("pause blue", T0 + 1, 0.1, True), Step("resume green", T0 + 1.1, 0.2, True)])
    figures = SwitchFigures(0.4, T0 + 1.5, 0.01, 0.3, 0.4, 120)
    switch = RunSwitch.of(result, figures, None)
    assert {f.name: getattr(switch, f.name) for f in fields(SwitchResult)} == asdict(result) | {
        "steps": result.steps}
    assert (switch.processing_gap_s, switch.processing_gap_end, switch.latency_p50_s, switch.latency_p99_s,
            switch.latency_max_s, switch.latency_records) == (0.4, T0 + 1.5, 0.01, 0.3, 0.4, 120)
    assert switch.automatic_rollback is None
    assert switch.felt() == [("switch", figures)]


def test_a_switch_no_record_told_of_has_null_figures() -> None:
    switch = RunSwitch.of(SwitchResult("E", "rollback", "green", "blue", 3, T0, 1.0, True), None, None)
    assert switch.felt() == [("rollback", SwitchFigures(None, None, None, None, None, 0))]
    assert switch.to_dict()["processing_gap_s"] is None


def test_an_automatic_rollback_is_felt_after_its_switch_and_survives_the_file(tmp_path: Path) -> None:
    result = SwitchResult("C", "switch", "blue", "green", 2, T0, 5.0, False, True, "error rate 0.9 > 0.2",
                          [Step("resume green", T0, 0.1, True), Step("health green", T0 + 0.1, 3.0, False),
                           Step("rollback: pause green", T0 + 3.1, 0.1, True)])
    own, back = SwitchFigures(3.2, T0 + 3.3, 0.01, 3.0, 3.2, 80), SwitchFigures(0.2, T0 + 3.4, 0.01, 0.1, 0.2, 40)
    switch = RunSwitch.of(result, own, back)
    assert switch.felt() == [("switch", own), ("rollback", back)]
    path = tmp_path / "run.json"
    write_run_record(record().model_copy(update={"switches": [switch]}), path)
    (read,) = read_run_record(path).switches
    assert read.felt() == [("switch", own), ("rollback", back)]
    assert (read.rolled_back, read.error) == (True, "error rate 0.9 > 0.2")


def test_the_switch_is_marked_where_the_controller_measured_it(tmp_path: Path) -> None:
    """The report's plots draw the switch window from these events: it must be the reported switch time, not the
    runner's call around it (which also reads the current color first)."""
    run = ScenarioRun("C", 1, None, RunOptions(bootstrap="127.0.0.1:1", out_dir=tmp_path / "run",
                                                work_dir=tmp_path / "work"))

    class Controller:
        def switch(self, strategy: str, to_color: str, health: object = None, action: str = "switch") -> SwitchResult:
            run.recorder.event("kill", "blue-1", at=T0 + 1.1)  # e.g. scenario 4's kill, during the switch
            return SwitchResult(strategy, action, "blue", to_color, 2, T0 + 1.0, 0.3, True)

    run._switch(Controller(), "green")  # type: ignore[arg-type]
    assert [(e.kind, e.t) for e in run.recorder.events] == [
        ("switch_start", T0 + 1.0), ("kill", T0 + 1.1), ("switch_end", pytest.approx(T0 + 1.3))]
