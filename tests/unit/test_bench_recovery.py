"""pyrallel bench --suite recovery without a broker: the handled log, when partitions were handled again, a kill of
a member that owned nothing, the nearest-rank summaries and ratios, the table, and the CLI's option checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyrallel_tools.benchmark.rebalance import Group, GroupPlan
from pyrallel_tools.benchmark.rebalance_member import HandledLog
from pyrallel_tools.benchmark.recovery import (
    KillMeasure,
    RecoveryError,
    RecoveryReport,
    _wait_recovered,
    first_handled,
    markdown,
    parse_handled,
)
from pyrallel_tools.cli.bench_cmd import bench

pytestmark = pytest.mark.unit


def test_the_handled_log_keeps_the_first_record_after_a_gap_and_thins_a_steady_stream(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    log = HandledLog(str(path), "m1", every_s=3600)
    log.handled(0, 10)
    log.handled(0, 11)  # within every_s of the previous line of partition 0: not written
    log.handled(1, 5)
    log.close()
    text = path.read_text() + '{"t": 1.0, "member": "m1", "parti'  # a line torn by a SIGKILL
    lines = parse_handled(text)
    assert [(line["partition"], line["offset"]) for line in lines] == [(0, 10), (1, 5)]


def test_first_handled_per_partition_after_the_kill() -> None:
    lines = [{"t": 1.0, "member": "a", "partition": 0, "offset": 1},
             {"t": 5.0, "member": "b", "partition": 0, "offset": 7},
             {"t": 4.0, "member": "b", "partition": 0, "offset": 6},
             {"t": 6.0, "member": "b", "partition": 1, "offset": 3},
             {"t": 7.0, "member": "b", "partition": 2, "offset": 3}]
    found = first_handled(lines, [0, 1], after=2.0)
    assert {p: line["offset"] for p, line in found.items()} == {0: 6, 1: 3}
    assert first_handled(lines, [3], after=0.0) == {}


def test_a_killed_member_that_owned_no_partition_is_a_recovery_error(tmp_path: Path) -> None:
    group = Group("b:9092", "plain", GroupPlan(), tmp_path)
    measure = KillMeasure("plain-default", 2, False, "plain-m1", [])
    with pytest.raises(RecoveryError, match="kill #2: plain-m1 owned no partition"):
        _wait_recovered(group, measure, killed_at=0.0, timeout_s=1.0)


def _kill(contender: str, n: int, seconds: float, restart: bool = False) -> KillMeasure:
    return KillMeasure(contender, n, restart, "m1", [0, 1], recovery_s=seconds)


def test_summaries_split_by_broker_restart_with_ratios_to_the_plain_default_group() -> None:
    report = RecoveryReport({}, {"partitions": 8, "rate": 500, "members": 2, "kills": 3, "default_kills": 2,
                                 "broker_restart_every": 3})
    report.measures = [_kill("plain-default", 1, 44.0), _kill("plain-default", 2, 90.0, restart=True),
                       _kill("pyrallel-recommended", 1, 0.5), _kill("pyrallel-recommended", 2, 0.7),
                       _kill("pyrallel-recommended", 3, 4.5, restart=True),
                       KillMeasure("pyrallel-recommended", 4, False, "m1", [0], error="timed out")]
    report.finish()
    by = {(s.contender, s.which): s for s in report.summaries}
    ours = by[("pyrallel-recommended", "all")]
    assert (ours.kills, ours.p50_s, ours.p99_s, ours.max_s) == (3, 0.7, 4.5, 4.5)
    assert ours.ratio == pytest.approx(0.7 / 44.0, abs=1e-3), "p50 of all kills over plain default's (nearest rank)"
    assert by[("pyrallel-recommended", "no restart")].ratio == pytest.approx(0.5 / 44.0, abs=1e-3)
    assert ("pyrallel-default", "all") not in by, "a contender without kills has no row"
    table = markdown(report)
    assert "| PyrallelConsumer, recommended" in table and "3 (all)" in table
    assert json.loads(report.to_json())["summaries"]


def test_cli_refuses_other_suites_options_and_needs_a_bootstrap() -> None:
    runner = CliRunner(env={"PYRALLEL_BOOTSTRAP_SERVERS": ""})
    result = runner.invoke(bench, ["--suite", "recovery", "--kafka", "a=b"])
    assert result.exit_code == 2 and "do not apply to --suite recovery" in result.output
    result = runner.invoke(bench, ["--suite", "recovery"])
    assert result.exit_code == 2 and "--bootstrap-servers" in result.output
