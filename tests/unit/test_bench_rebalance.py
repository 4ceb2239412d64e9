"""pyrallel bench --suite rebalance without a broker: hand-over figures from hand-made ownership timelines, the
members' ownership log and command line, a member that outlives its SIGKILL, the summaries, ratios and table, and
the CLI's option checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner
from confluent_kafka import TopicPartition

from pyrallel_tools.benchmark.rebalance import Group, GroupPlan, Member, RebalanceError, member_argv
from pyrallel_tools.benchmark.rebalance_member import OwnershipLog, plain_conf
from pyrallel_tools.benchmark.rebalance_report import (
    EventMeasure,
    RebalanceReport,
    markdown,
    write_rebalance_outputs,
)
from pyrallel_tools.benchmark.rebalance_timeline import (
    Change,
    first_time,
    hand_over,
    is_settled,
    last_change,
    parse_changes,
)
from pyrallel_tools.benchmark.results import short_line
from pyrallel_tools.cli.bench_cmd import bench
from pyrallel_tools.kafka_pairs import parse_kafka_pairs

pytestmark = pytest.mark.unit


def c(t: float, member: str, kind: str, *owned: int) -> Change:
    return Change(t, member, kind, frozenset(owned))


SETTLED_3 = [c(0.0, "a", "assign", 0, 1, 2), c(0.0, "b", "assign", 3, 4, 5), c(0.0, "c", "assign", 6, 7)]


def test_a_cooperative_join_measures_the_gap_between_the_two_rounds() -> None:
    timeline = [*SETTLED_3,
                c(10.0, "d", "subscribe"),
                c(11.0, "a", "revoke", 0, 1), c(11.0, "b", "revoke", 3, 4),  # round 1: 2 and 5 go
                c(11.5, "d", "assign"),
                c(12.25, "d", "assign", 2, 5)]  # round 2: the newcomer gets them
    outcome = hand_over(timeline, 8, ["a", "b", "c", "d"], start=10.0, end=14.0)
    assert outcome.max_unowned_s == pytest.approx(1.25)
    assert outcome.unowned_partitions == 2
    assert outcome.settle_s == pytest.approx(2.25)
    assert outcome.changes == 4


def test_the_longest_single_partition_counts_not_the_sum() -> None:
    timeline = [*SETTLED_3,
                c(10.0, "c", "leave", 6, 7), c(10.0, "c", "revoke"),
                c(10.5, "a", "assign", 0, 1, 2, 6),
                c(12.0, "b", "assign", 3, 4, 5, 7)]
    outcome = hand_over(timeline, 8, ["a", "b"], start=10.0, end=13.0)
    assert outcome.max_unowned_s == pytest.approx(2.0)
    assert outcome.unowned_partitions == 2
    assert outcome.settle_s == pytest.approx(2.0)


def test_a_hand_over_logged_at_the_same_instant_is_no_gap() -> None:
    timeline = [*SETTLED_3, c(10.0, "c", "revoke"), c(10.0, "a", "assign", 0, 1, 2, 6, 7)]
    outcome = hand_over(timeline, 8, ["a", "b"], start=9.0, end=12.0)
    assert outcome.max_unowned_s == 0.0
    assert outcome.unowned_partitions == 0
    assert outcome.settle_s == pytest.approx(1.0)


def test_a_gap_still_open_at_the_end_counts_up_to_the_end_and_the_group_is_not_settled() -> None:
    timeline = [*SETTLED_3, c(10.0, "c", "revoke")]
    outcome = hand_over(timeline, 8, ["a", "b"], start=10.0, end=13.5)
    assert outcome.max_unowned_s == pytest.approx(3.5)
    assert outcome.settle_s is None


def test_settled_needs_every_expected_member_to_own_a_partition() -> None:
    # Every partition is owned from the start, but the newcomer owns nothing until 12.0.
    timeline = [*SETTLED_3, c(10.0, "d", "subscribe"), c(12.0, "c", "revoke", 6), c(12.0, "d", "assign", 7)]
    outcome = hand_over(timeline, 8, ["a", "b", "c", "d"], start=10.0, end=13.0)
    assert outcome.max_unowned_s == 0.0
    assert outcome.settle_s == pytest.approx(2.0)


def test_the_last_settling_counts_when_the_group_unsettles_again() -> None:
    timeline = [*SETTLED_3, c(10.0, "d", "subscribe"),
                c(10.5, "c", "revoke", 6), c(10.5, "d", "assign", 7),  # settled at 10.5
                c(11.0, "d", "revoke"), c(11.8, "c", "assign", 6, 7),  # unsettled again (d owns nothing)
                c(12.0, "c", "revoke", 6), c(12.0, "d", "assign", 7)]  # settled at 12.0
    outcome = hand_over(timeline, 8, ["a", "b", "c", "d"], start=10.0, end=13.0)
    assert outcome.settle_s == pytest.approx(2.0)
    assert outcome.max_unowned_s == pytest.approx(0.8)


def test_changes_outside_the_window_are_ignored_and_a_reversed_window_is_refused() -> None:
    timeline = [*SETTLED_3, c(5.0, "c", "revoke"), c(6.0, "a", "assign", 0, 1, 2, 6, 7), c(20.0, "a", "revoke")]
    outcome = hand_over(timeline, 8, ["a", "b"], start=10.0, end=12.0)
    assert (outcome.max_unowned_s, outcome.settle_s, outcome.changes) == (0.0, 0.0, 0)
    with pytest.raises(ValueError, match="before it starts"):
        hand_over(timeline, 8, ["a"], start=2.0, end=1.0)


def test_more_members_than_partitions_settle_once_every_partition_is_owned() -> None:
    owned = {"a": frozenset({0}), "b": frozenset({1}), "c": frozenset()}
    assert is_settled(owned, 2, ["a", "b", "c"])
    assert not is_settled(owned, 3, ["a", "b"])
    assert not is_settled({"a": frozenset({0, 1}), "b": frozenset()}, 2, ["a", "b"])


def test_log_lines_parse_and_a_torn_line_is_skipped() -> None:
    text = ('{"t": 1.5, "member": "m1", "kind": "subscribe", "owned": []}\n'
            '{"t": 2.5, "member": "m1", "kind": "assign", "owned": [3, 1]}\n'
            '{"t": 3.0, "member": "m1", "kind": "lea')
    changes = parse_changes(text)
    assert changes == [c(1.5, "m1", "subscribe"), c(2.5, "m1", "assign", 1, 3)]
    assert first_time(changes, "m1", "subscribe") == 1.5
    assert first_time(changes, "m1", "leave") is None
    assert last_change(changes) == 2.5


def test_the_ownership_log_follows_incremental_callbacks(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    ownership = OwnershipLog(str(path), "m1")
    seen: list[tuple[str, list[int]]] = []

    def inner(kind: str) -> Any:
        return lambda consumer, parts: seen.append((kind, [tp.partition for tp in parts]))

    callbacks = ownership.wrap(inner("assign"), inner("revoke"), None)
    ownership.event("subscribe")
    callbacks["on_assign"](None, [TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2)])
    callbacks["on_revoke"](None, [TopicPartition("t", 1)])
    callbacks["on_lost"](None, [TopicPartition("t", 2)])
    ownership.event("closed", everything=True)
    ownership.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["kind"], x["owned"]) for x in lines] == [("subscribe", []), ("assign", [0, 1, 2]), ("revoke", [0, 2]),
                                                         ("lost", [0]), ("closed", [])]
    assert seen == [("assign", [0, 1, 2]), ("revoke", [1])]


def test_kafka_properties_parse_and_reach_the_plain_members_conf() -> None:
    kafka = parse_kafka_pairs(["heartbeat.interval.ms=500", "session.timeout.ms = 6000"])
    assert kafka == {"heartbeat.interval.ms": "500", "session.timeout.ms": "6000"}
    conf = plain_conf("b:9092", "g", kafka)
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    assert conf["heartbeat.interval.ms"] == "500"
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_kafka_pairs(["heartbeat.interval.ms"])


def measure(contender: str, event: str, rep: int, unowned: float, settle: float | None,
            error: str = "") -> EventMeasure:
    return EventMeasure(contender, event, rep, "m", 0.0, unowned, 1, settle, 2, error)


def test_the_member_command_line() -> None:
    argv = member_argv("plain", "b:9092", "t", "g", "m1", Path("m1.jsonl"), 60.0, Path("m1.handled.jsonl"),
                       (("session.timeout.ms", "30000"),), ["--group-instance-id", "g-m1"])
    assert argv == [sys.executable, "-m", "pyrallel_tools.benchmark.rebalance_member", "plain", "--bootstrap",
                    "b:9092", "--topic", "t", "--group", "g", "--member", "m1", "--log", "m1.jsonl",
                    "--max-seconds", "60.0", "--handled-log", "m1.handled.jsonl", "--kafka", "session.timeout.ms=30000",
                    "--group-instance-id", "g-m1"]
    assert "--handled-log" not in member_argv("pyrallel", "b", "t", "g", "m", Path("m.jsonl"), 1.0)


class _Unkillable:
    pid = 4_000_000  # above any pid_max: os.killpg is replaced in the test anyway

    def wait(self, timeout: float | None = None) -> int:
        raise subprocess.TimeoutExpired("member", timeout or 0)


def test_a_member_still_running_after_its_sigkill_is_a_rebalance_error(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pid, sig: signals.append((pid, sig)))
    group = Group("b:9092", "plain", GroupPlan(), tmp_path)
    member = Member("plain-m1", cast(Any, _Unkillable()), tmp_path / "m1.jsonl", (tmp_path / "m1.out").open("wb"))
    group.live.append(member)
    with pytest.raises(RebalanceError, match=r"plain-m1 .*had not exited 10 s after its SIGKILL"):
        group.kill(member)
    assert signals and member.output.closed
    assert group.live == [] and group.gone == [member], "counted as gone: stop_all does not wait for it again"


def test_error_notes_are_one_short_line() -> None:
    assert short_line("a |  b\n c") == "a / b c"
    assert short_line("x" * 300, 200) == "x" * 199 + "…"


def test_summaries_ratios_table_and_files(tmp_path: Path) -> None:
    report = RebalanceReport({}, {"partitions": 8, "members": 3, "repetitions": 3, "rate": 100,
                                  "kafka": {"heartbeat.interval.ms": "500"}})
    report.measures = [measure("plain", "join", i, u, s) for i, (u, s) in enumerate([(1.0, 2.0), (3.0, 4.0),
                                                                                      (2.0, 3.0)], 1)]
    report.measures += [measure("pyrallel", "join", i, u, s) for i, (u, s) in enumerate([(2.0, 3.0), (2.5, 3.3)], 1)]
    report.measures.append(measure("pyrallel", "join", 3, 99.0, 99.0, error="timed out"))
    report.measures += [measure("plain", "leave", 1, 0.5, 0.5), measure("pyrallel", "leave", 1, 0.0, 0.6)]
    report.finish()
    plain_join = next(s for s in report.summaries if (s.contender, s.event) == ("plain", "join"))
    assert (plain_join.runs, plain_join.max_unowned_median_s, plain_join.max_unowned_max_s) == (3, 2.0, 3.0)
    ours_join = next(s for s in report.summaries if (s.contender, s.event) == ("pyrallel", "join"))
    assert (ours_join.runs, ours_join.settle_median_s, ours_join.settle_max_s) == (2, 3.15, 3.3)
    join, leave = report.ratios
    assert join.max_unowned == pytest.approx(1.125)
    assert join.settle == pytest.approx(1.05)
    assert leave.max_unowned == 0.0
    assert leave.settle == pytest.approx(1.2)
    table = markdown(report)
    assert "`heartbeat.interval.ms=500`" in table
    assert "1.12x" in table and "timed out" in table
    write_rebalance_outputs(report, tmp_path)
    assert json.loads((tmp_path / "rebalance-latest.json").read_text())["config"]["kafka"] == {
        "heartbeat.interval.ms": "500"}
    assert (tmp_path / "rebalance-latest.md").read_text() == table


def test_a_missing_side_gives_no_ratio() -> None:
    report = RebalanceReport({}, {})
    report.measures = [measure("plain", "join", 1, 0.0, 1.0)]
    report.finish()
    assert all(r.max_unowned is None and r.settle is None for r in report.ratios)


def test_the_cli_takes_kafka_properties_only_for_the_rebalance_suite() -> None:
    runner = CliRunner()
    other = runner.invoke(bench, ["--suite", "core", "--no-peers", "--bootstrap-servers", "x:1", "--kafka", "a=b"])
    assert other.exit_code == 2 and "--kafka is only taken by --suite rebalance" in other.output
    malformed = runner.invoke(bench, ["--suite", "rebalance", "--bootstrap-servers", "x:1", "--kafka", "nope"])
    assert malformed.exit_code == 2 and "NAME=VALUE" in malformed.output
    rebuild = runner.invoke(bench, ["--suite", "rebalance", "--profile", "async-key", "--bootstrap-servers", "x:1"])
    assert rebuild.exit_code == 2 and "do not apply" in rebuild.output
