"""The contender side of pyrallel bench without a broker: record values, the log format, the tracker's counting,
the command line, the result line. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyrallel_tools.benchmark import harness
from pyrallel_tools.benchmark.results import parse_log, parse_result_line

pytestmark = pytest.mark.unit

ARGS = ["--name", "x", "--bootstrap", "127.0.0.1:9092", "--topic", "t", "--group", "g", "--workload", "noop",
        "--limit", "3", "--max-seconds", "100"]


@pytest.mark.parametrize(("value", "expected"), [
    (b"000000000042|xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", (42, 0)),
    (b"000000000042|1700000000123456|xxxx", (42, 1_700_000_000_123_456)),
    (b"000000000007|", (7, 0)),
    (None, (-1, 0)),
    (b"short", (-1, 0)),
])
def test_parse_value(value: bytes | None, expected: tuple[int, int]) -> None:
    assert harness.parse_value(value) == expected


def test_tracker_counts_from_the_first_record_and_finishes_at_the_limit(tmp_path: Path) -> None:
    log = tmp_path / "handled.log"
    tracker = harness.Tracker(limit=3, max_seconds=100, log_path=str(log))
    for seq in range(3):
        assert not tracker.finished.is_set()
        tracker.done(f"{seq:012d}|1700000000000000|x".encode())
    tracker.done(b"000000000099|x")  # after the finish: neither counted nor a problem
    tracker.close()
    assert tracker.finished.is_set()
    result = tracker.result("x")
    assert (result["handled"], result["counted"]) == (3, 2)
    assert result["first_ts"] <= result["last_ts"] and result["cpu_self_s"] is not None
    rows = parse_log(log.read_bytes())
    assert [(seq, produced) for seq, produced, _ in rows] == [(0, 1_700_000_000_000_000), (1, 1_700_000_000_000_000),
                                                              (2, 1_700_000_000_000_000), (99, 0)]


def test_tracker_observe_ignores_counters_going_backwards() -> None:
    tracker = harness.Tracker(limit=100, max_seconds=100)
    for completed in (10, 5, 40, 40):
        tracker.observe(completed)
    result = tracker.result("x")
    assert (result["handled"], result["counted"]) == (40, 30)
    assert not tracker.finished.is_set()
    tracker.observe(100)
    assert tracker.finished.is_set()


def test_tracker_made_not_counting_counts_only_what_follows_start_counting() -> None:
    tracker = harness.Tracker(limit=1000, max_seconds=100, counting=False)
    for _ in range(50):
        tracker.done(None)  # members of a group before it settled: handled, not counted
    assert tracker.result("x")["counted"] == 0 and not tracker.finished.is_set()
    tracker.start_counting()
    for _ in range(11):
        tracker.done(None)
    result = tracker.result("x")
    assert (result["handled"], result["counted"]) == (61, 10)
    assert harness.parse_args([*ARGS, "--count-on-signal"]).count_on_signal
    assert not harness.parse_args(ARGS).count_on_signal


def test_ending_the_window_finishes_an_idle_member_with_nothing_counted_and_a_busy_one_with_its_count() -> None:
    idle = harness.Tracker(limit=1000, max_seconds=100, counting=False)
    for _ in range(5):
        idle.done(None)  # before the group settled
    idle.start_counting()
    idle.end_window()
    assert idle.finished.is_set()
    result = idle.result("x")
    assert (result["handled"], result["counted"], result["records_per_s"]) == (5, 0, 0.0)
    assert result["first_ts"] == 0 and result["cpu_self_s"] is None  # no span: the runner measures its CPU
    busy = harness.Tracker(limit=1000, max_seconds=100, counting=False)
    busy.start_counting()
    for _ in range(3):
        busy.done(None)
    busy.end_window()
    result = busy.result("x")
    assert busy.finished.is_set() and result["counted"] == 2 and result["cpu_self_s"] is not None


def test_tracker_without_any_record_times_out_with_a_clear_error() -> None:
    tracker = harness.Tracker(limit=10, max_seconds=1, join_timeout_s=0)
    with pytest.raises(TimeoutError, match="no record handled within 0 s"):
        tracker.check()


def test_parse_args_and_its_defaults() -> None:
    args = harness.parse_args(ARGS)
    assert (args.name, args.workload, args.limit, args.ordering, args.concurrency, args.log) == (
        "x", "noop", 3, "key", 1000, None)
    with pytest.raises(SystemExit):
        harness.parse_args([*ARGS[:-6], "--workload", "nope", "--limit", "3", "--max-seconds", "1"])


def test_run_contender_prints_one_result_or_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert harness.run_contender(lambda args: {"contender": args.name, "handled": 1}, ARGS) == 0
    assert parse_result_line(capsys.readouterr().out) == {"contender": "x", "handled": 1}

    def broken(args: harness.ContenderArgs) -> dict[str, object]:
        raise ConnectionError("broker down")

    assert harness.run_contender(broken, ARGS) == 1
    out = capsys.readouterr().out
    assert out.count(harness.RESULT_PREFIX) == 1
    assert json.loads(out.split(harness.RESULT_PREFIX, 1)[1]) == {"contender": "x", "error": "broker down"}


def test_consumer_conf_commits_manually() -> None:
    conf = harness.consumer_conf(harness.parse_args([*ARGS, "--session-timeout-ms", "6000"]))
    assert conf["enable.auto.commit"] is False and conf["session.timeout.ms"] == 6000
    assert conf["auto.offset.reset"] == "earliest" and conf["group.id"] == "g"


def test_unknown_workload_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown workload 'x'"):
        harness.check_workload("x")
