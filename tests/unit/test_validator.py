"""Hand-made producer/consumer logs for every category the blue/green validator reports."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pyrallel_tools.bluegreen.validation.findings import (
    SAMPLE_LIMIT,
    DualActiveWindow,
    OrderViolation,
    RecordRef,
    ValidationReport,
)
from pyrallel_tools.bluegreen.validation.from_logs import validate_files
from pyrallel_tools.bluegreen.validation.judge import validate
from pyrallel_tools.bluegreen.validation.load import (
    ConsumedRecord,
    LoadStats,
    ProducedRecord,
    load_consumer_log,
    load_producer_log,
    load_sink_file,
)

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0


def prod(seq: int, key: str = "k", key_seq: int | None = None, ts: float | None = None) -> dict[str, Any]:
    return {
        "seq": seq,
        "key": key,
        "key_seq": seq if key_seq is None else key_seq,
        "partition": 0,
        "offset": seq,
        "ts": T0 + (seq if ts is None else ts),
    }


def cons(
    seq: int,
    color: str,
    instance: str,
    ts: float,
    key: str = "k",
    key_seq: int | None = None,
) -> dict[str, Any]:
    return {
        "seq": seq,
        "key": key,
        "key_seq": seq if key_seq is None else key_seq,
        "partition": 0,
        "offset": seq,
        "color": color,
        "instance": instance,
        "ts": T0 + ts,
    }


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any] | str]) -> Path:
    with path.open("w") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def run(
    tmp_path: Path,
    produced: Sequence[Mapping[str, Any] | str],
    consumers: Mapping[str, Sequence[Mapping[str, Any] | str]],
    pending: Iterable[int] = (),
    **kwargs: Any,
) -> ValidationReport:
    """Write the logs to files and validate them, so every test also exercises the loaders."""
    producer_log = write_jsonl(tmp_path / "producer.jsonl", produced)
    consumer_logs = [write_jsonl(tmp_path / f"{name}.jsonl", rows) for name, rows in consumers.items()]
    return validate_files([producer_log], consumer_logs, pending_seqs=set(pending), **kwargs)


def assert_clean_except(report: ValidationReport, **expected: Any) -> None:
    """Every category not named must be at its clean value; named ones must match exactly."""
    clean: dict[str, Any] = {
        "lost": 0,
        "pending": 0,
        "duplicates": 0,
        "cross_color_duplicates": 0,
        "unexpected": 0,
        "order_violations_instance": 0,
        "order_violations_global": 0,
        "dual_active_count": 0,
        "malformed_lines": 0,
        "producer_duplicate_seqs": 0,
    }
    clean.update(expected)
    actual = {name: getattr(report, name) for name in clean}
    assert actual == clean


# --------------------------------------------------------------------------------------------
# Categories


def test_clean_switch_is_ok(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(10)]
    blue = [cons(i, "blue", "blue-1", i) for i in range(5)]  # ts 0..4
    green = [cons(i, "green", "green-1", 10 + i) for i in range(5, 10)]  # ts 15..19
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green})

    assert report.ok
    assert_clean_except(report)
    assert (report.produced, report.consumed, report.unique_consumed) == (10, 10, 10)
    assert report.untimed_events == 0
    assert report.colors["blue"].events == 5
    assert report.colors["blue"].first == RecordRef(0, T0 + 0)
    assert report.colors["blue"].last == RecordRef(4, T0 + 4)
    assert report.colors["green"].first == RecordRef(5, T0 + 15)
    assert report.colors["green"].last == RecordRef(9, T0 + 19)
    assert report.colors["green"].instances == ["green-1"]
    assert report.to_table().splitlines()[-1].endswith("OK")


def test_one_lost_record_fails(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(10)]
    blue = [cons(i, "blue", "blue-1", i) for i in range(10) if i != 3]
    report = run(tmp_path, produced, {"blue-1": blue})

    assert not report.ok
    assert_clean_except(report, lost=1)
    assert report.lost_sample == [3]
    assert (report.consumed, report.unique_consumed) == (9, 9)
    assert "FAIL" in report.to_table()


def test_lost_sample_is_capped_but_count_is_exact(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(100)]
    report = run(tmp_path, produced, {"blue-1": [cons(0, "blue", "blue-1", 0)]})

    assert report.lost == 99
    assert report.lost_sample == list(range(1, SAMPLE_LIMIT + 1))


def test_pending_record_is_not_lost(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(10)]
    blue = [cons(i, "blue", "blue-1", i) for i in range(9)]  # seq 9 still in the topic
    report = run(tmp_path, produced, {"blue-1": blue}, pending=[9, 4])  # 4 was consumed: not pending

    assert report.ok
    assert_clean_except(report, pending=1)


def test_pending_does_not_hide_other_losses(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(10)]
    blue = [cons(i, "blue", "blue-1", i) for i in range(8)]
    report = run(tmp_path, produced, {"blue-1": blue}, pending=[9])

    assert not report.ok
    assert_clean_except(report, lost=1, pending=1)
    assert report.lost_sample == [8]


def test_duplicate_within_one_color(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(5)]
    blue1 = [cons(i, "blue", "blue-1", i) for i in range(3)]
    # Partition moved to blue-2 from an older committed offset: seq 2 handled again.
    blue2 = [cons(i, "blue", "blue-2", 3 + i) for i in range(2, 5)]
    report = run(tmp_path, produced, {"blue-1": blue1, "blue-2": blue2})

    assert report.ok
    assert_clean_except(report, duplicates=1)
    assert report.duplicates_by_color == {"blue": 1}
    assert (report.consumed, report.unique_consumed) == (6, 5)
    assert report.colors["blue"].duplicates == 1
    assert report.colors["blue"].instances == ["blue-1", "blue-2"]


def test_cross_color_duplicate_overlapping_in_time_is_dual_active(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(10)]
    blue = [cons(i, "blue", "blue-1", i) for i in range(6)]  # ts 0..5
    green = [cons(i, "green", "green-1", i - 0.5) for i in range(5, 10)]  # ts 4.5..8.5
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green})

    assert not report.ok
    assert_clean_except(report, duplicates=1, cross_color_duplicates=1, dual_active_count=1)
    # Repeats are charged in input order: blue's log is read first, so green's seq 5 is the repeat.
    assert report.duplicates_by_color == {"green": 1}
    assert report.cross_color_sample == [5]
    assert report.cross_color_by_pair == {"blue/green": 1}
    assert report.dual_active_windows == [
        DualActiveWindow(("blue", "green"), T0 + 4.5, T0 + 5.0, {"blue": 1, "green": 1})
    ]
    assert report.dual_active_seconds == pytest.approx(0.5)


def test_cross_color_duplicate_without_overlap_is_not_dual_active(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(10)]
    blue = [cons(i, "blue", "blue-1", i) for i in range(6)]  # ts 0..5
    green = [cons(i, "green", "green-1", 5 + i) for i in range(5, 10)]  # ts 10..14, re-handles 5
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green})

    assert report.ok  # a duplicate is the price of at-least-once, not a failure
    assert_clean_except(report, duplicates=1, cross_color_duplicates=1)
    assert report.duplicates_by_color == {"green": 1}


def test_out_of_order_key_within_one_instance(tmp_path: Path) -> None:
    produced = [prod(0, "a", 0), prod(1, "a", 1), prod(2, "a", 2), prod(3, "b", 0)]
    blue = [
        cons(0, "blue", "blue-1", 0, "a", 0),
        cons(2, "blue", "blue-1", 1, "a", 2),
        cons(3, "blue", "blue-1", 2, "b", 0),
        cons(1, "blue", "blue-1", 3, "a", 1),  # a:1 after a:2, never handled before
    ]
    report = run(tmp_path, produced, {"blue-1": blue})

    assert report.ok  # order is reported, the verdict is about loss and dual activity
    assert_clean_except(report, order_violations_instance=1, order_violations_global=1)
    assert report.order_violations == 2
    assert report.order_violations_by_instance == {"blue-1": 1}
    assert report.order_violation_sample == [OrderViolation("instance", "blue", "blue-1", "a", 1, 2, 1)]
    assert report.global_order_violation_sample == [OrderViolation("global", "blue", None, "a", 1, 2, 1)]


def test_out_of_order_across_colors_is_a_global_violation_only(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(4)]
    blue = [cons(0, "blue", "blue-1", 0), cons(1, "blue", "blue-1", 1), cons(2, "blue", "blue-1", 30)]
    green = [cons(3, "green", "green-1", 20)]  # k:3 handled before blue got to k:2
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green})

    assert_clean_except(report, order_violations_global=1)
    assert report.global_order_violation_sample == [OrderViolation("global", "blue", None, "k", 2, 3, 2)]


def test_replay_after_restart_is_duplicate_not_order_violation(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(5)]
    before = [cons(i, "blue", "blue-1", i) for i in range(4)]  # k:0..3
    after = [cons(i, "blue", "blue-1", 10 + i) for i in range(1, 5)]  # restart, replay from k:1
    report = run(tmp_path, produced, {"blue-1": before + after})

    assert report.ok
    assert_clean_except(report, duplicates=3)
    assert report.duplicates_by_color == {"blue": 3}
    assert (report.consumed, report.unique_consumed) == (8, 5)


def test_unexpected_seq_is_reported_not_lost(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(3)]
    blue = [cons(i, "blue", "blue-1", i) for i in range(3)] + [cons(99, "blue", "blue-1", 3)]
    report = run(tmp_path, produced, {"blue-1": blue})

    assert report.ok
    assert_clean_except(report, unexpected=1)
    assert report.unexpected_sample == [99]
    assert (report.produced, report.consumed, report.unique_consumed) == (3, 4, 4)


def test_malformed_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    good = [prod(i) for i in range(3)]
    produced: list[Mapping[str, Any] | str] = [
        good[0],
        "",  # blank: ignored, not malformed
        "   ",
        '{"seq": 1, "key": "k"',  # truncated
        good[1],
        '{"seq": "7", "key": "k", "key_seq": 0, "partition": 0, "offset": 0, "ts": 1.0}',  # str seq
        '{"seq": 8, "key": "k", "key_seq": 0, "partition": 0, "offset": 0}',  # no ts
        "[1, 2, 3]",
        json.dumps(good[2]) + " trailing",
        good[2],
    ]
    blue: list[Mapping[str, Any] | str] = [cons(i, "blue", "blue-1", i) for i in range(3)]
    blue.insert(1, "not json at all")
    blue.append(
        '  {"seq": 2, "key": "k", "key_seq": 2, "partition": 0, "offset": 2, '
        '"color": "blue", "instance": "blue-1", "ts": null}'
    )  # leading blanks, null ts: valid
    report = run(tmp_path, produced, {"blue-1": blue})

    assert report.ok
    assert_clean_except(report, malformed_lines=6, duplicates=1)
    assert (report.produced, report.consumed, report.untimed_events) == (3, 4, 1)
    producer_log = str(tmp_path / "producer.jsonl")
    assert report.malformed_sample[:2] == [
        f"{producer_log}:4: JSONDecodeError: Expecting ',' delimiter: line 1 column 22 (char 21)",
        f"{producer_log}:6: field with wrong type",
    ]
    assert report.malformed_sample[-1].startswith(f"{tmp_path / 'blue-1.jsonl'}:2: JSONDecodeError")


def test_dual_active_two_colors_overlapping(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(42)]
    blue = [cons(i, "blue", "blue-1", i * 0.5) for i in range(21)]  # ts 0..10
    green = [cons(21 + i, "green", "green-1", 5 + i * 0.5) for i in range(21)]  # ts 5..15
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green})

    assert not report.ok
    assert_clean_except(report, dual_active_count=1, order_violations_global=10)
    (window,) = report.dual_active_windows
    assert (window.start, window.end) == (T0 + 5, T0 + 10)
    assert window.events == {"blue": 11, "green": 11}
    assert report.dual_active_seconds == pytest.approx(5.0)


def test_back_to_back_colors_with_gap_have_no_window(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(42)]
    blue = [cons(i, "blue", "blue-1", i * 0.5) for i in range(21)]  # ts 0..10
    green = [cons(21 + i, "green", "green-1", 10.5 + i * 0.5) for i in range(21)]  # ts 10.5..20.5
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green})

    assert report.ok
    assert_clean_except(report)


def test_lone_event_in_the_other_colors_idle_gap_is_not_dual_active(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(7)]
    blue = [cons(i, "blue", "blue-1", t) for i, t in enumerate([0, 1, 2, 8, 9, 10])]
    green = [cons(6, "green", "green-1", 5, "g", 0)]  # blue idle for 6 s around ts 5
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green})

    assert_clean_except(report)
    # ...but a lone event inside blue's activity is dual activity, even with zero duration.
    green_inside = [cons(6, "green", "green-1", 1.5, "g", 0)]
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green_inside})
    assert_clean_except(report, dual_active_count=1)
    assert report.dual_active_windows[0].duration_s == 0.0
    assert report.dual_active_windows[0].events == {"blue": 0, "green": 1}


def test_activity_gap_and_dual_active_gap_parameters(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(7)]
    blue = [cons(i, "blue", "blue-1", t) for i, t in enumerate([0, 1, 2, 8, 9, 10])]
    green = [cons(6, "green", "green-1", 5)]
    # With a 10 s activity gap blue is active 0..10 and green's event at 5 overlaps.
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green}, activity_gap_s=10.0)
    assert report.dual_active_count == 1

    green_long = [cons(6, "green", "green-1", 1.5), cons(7, "green", "green-1", 2.5)]
    produced.append(prod(7))
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green_long})
    assert [(w.start - T0, w.end - T0) for w in report.dual_active_windows] == [(1.5, 2.0)]
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green_long}, dual_active_gap_s=0.6)
    assert report.dual_active_windows == []


def test_three_colors_report_pairs(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(9)]
    blue = [cons(i, "blue", "blue-1", i) for i in range(3)]  # 0..2
    green = [cons(3 + i, "green", "green-1", 2 + i) for i in range(3)]  # 2..4
    red = [cons(6 + i, "red", "red-1", 3 + i) for i in range(3)]  # 3..5
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green, "red-1": red}, activity_gap_s=1.0)

    assert [(w.colors, w.start - T0, w.end - T0) for w in report.dual_active_windows] == [
        (("blue", "green"), 2.0, 2.0),
        (("green", "red"), 3.0, 4.0),
    ]
    assert report.dual_active_seconds == pytest.approx(1.0)


def test_sink_files(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(6)]
    blue_sink = write_jsonl(
        tmp_path / "blue.sink.txt",
        [
            '{"seq":0,"key":"k","key_seq":0,"payload":"x"}',
            '{"seq":1,"key":"k","key_seq":1,"payload":"x"}',
            '{"seq":2,"key":"k","key_seq":2,"payload":"x"}',
            "",
            "garbage",
        ],
    )
    green_sink = write_jsonl(
        tmp_path / "green.sink.txt",
        [
            json.dumps(json.dumps({"seq": 2, "key": "k", "key_seq": 2, "payload": "x"})),  # double-encoded
            '{"seq":4,"key":"k","key_seq":4,"payload":"x"}',
            '{"seq":3,"key":"k","key_seq":3,"payload":"x"}',  # out of order in green's file
        ],
    )
    producer_log = write_jsonl(tmp_path / "producer.jsonl", produced)
    report = validate_files([producer_log], sink_files=[(blue_sink, "blue"), (green_sink, "green")])

    assert not report.ok
    assert_clean_except(
        report,
        lost=1,
        duplicates=1,
        cross_color_duplicates=1,
        order_violations_instance=1,
        malformed_lines=1,
    )
    assert report.lost_sample == [5]
    assert report.untimed_events == report.consumed == 6
    assert report.order_violation_sample == [OrderViolation("instance", "green", "green.sink.txt", "k", 3, 4, 3)]
    assert report.colors["green"].first == RecordRef(2, None)  # file order without timestamps
    assert report.colors["green"].last == RecordRef(3, None)

    records = list(load_sink_file(green_sink, "green"))
    assert records[1] == ConsumedRecord(4, "k", 4, -1, -1, "green", "green.sink.txt", None)


# --------------------------------------------------------------------------------------------
# API details


def test_loaders_yield_typed_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{**prod(0), "ts": 5}, "{broken"])
    stats = LoadStats()
    assert list(load_producer_log(path, stats)) == [ProducedRecord(0, "k", 0, 0, 0, 5.0)]
    assert (stats.lines, stats.malformed_lines) == (2, 1)

    path = write_jsonl(tmp_path / "c.jsonl", [cons(3, "green", "green-2", 1.25, "x", 7)])
    assert list(load_consumer_log(path)) == [ConsumedRecord(3, "x", 7, 0, 3, "green", "green-2", T0 + 1.25)]


def test_validate_accepts_records_directly() -> None:
    produced = [ProducedRecord(i, "k", i, 0, i, T0 + i) for i in range(3)]
    consumed = [ConsumedRecord(i, "k", i, 0, i, "blue", "b1", T0 + i) for i in (0, 2)]
    report = validate(iter(produced), iter(consumed), pending_seqs={1})
    assert report.ok
    assert (report.pending, report.lost, report.malformed_lines) == (1, 0, 0)


def test_producer_duplicate_seq_is_counted_once() -> None:
    produced = [ProducedRecord(0, "k", 0, 0, 0, T0), ProducedRecord(0, "k", 0, 0, 0, T0)]
    report = validate(produced, [])
    assert (report.produced, report.producer_duplicate_seqs, report.lost) == (1, 1, 1)


def test_producer_logs_sharing_seqs_fail_even_when_every_seq_was_handled() -> None:
    """Two producer runs both start at seq 0: one handled record must not vouch for two sends."""
    first = [ProducedRecord(i, "k", i, 0, i, T0 + i) for i in range(3)]
    second = [ProducedRecord(i, "k", i, 1, i, T0 + 10 + i) for i in range(3)]
    consumed = [ConsumedRecord(i, "k", i, 0, i, "blue", "b1", T0 + i) for i in range(3)]
    report = validate(first + second, consumed)
    assert report.lost == 0 and report.producer_duplicate_seqs == 3
    assert not report.ok


def test_negative_gaps_are_rejected() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        validate([], [], activity_gap_s=-1.0)


def test_to_dict_is_json_and_to_table_is_short(tmp_path: Path) -> None:
    produced = [prod(i) for i in range(10)]
    blue = [cons(i, "blue", "blue-1", i) for i in range(6)]
    green = [cons(i, "green", "green-1", i - 0.5) for i in range(5, 9)]
    report = run(tmp_path, produced, {"blue-1": blue, "green-1": green})

    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["lost"] == 1
    assert data["lost_sample"] == [9]
    assert data["dual_active_count"] == 1
    assert data["dual_active_windows"][0]["events"] == {"blue": 1, "green": 1}
    assert data["colors"]["green"]["first"] == {"seq": 5, "ts": T0 + 4.5}
    assert data["duplicates_by_color"] == {"green": 1}

    table = report.to_table()
    assert len(table.splitlines()) < 25
    assert "lost" in table
    assert "window blue/green" in table
    assert table.splitlines()[-1].endswith("FAIL (lost 1, dual-active windows 1)")


# --------------------------------------------------------------------------------------------
# Scale


def test_one_million_records_from_files(tmp_path: Path) -> None:
    """Correctness at 1M + 1M lines; the elapsed time is printed, never asserted."""
    n = 1_000_000
    keys = 1000
    switch = 600_000  # blue handles seqs below, green from here on
    lost = set(range(n - 10, n))  # never handled ...
    pending = set(range(n - 5, n))  # ... but half of them are still in the topic
    replayed = range(switch - 10, switch)  # green re-handles blue's last 10 after the switch

    def line(seq: int, color: str, ts: float) -> str:
        return (
            f'{{"seq": {seq}, "key": "key-{seq % keys}", "key_seq": {seq // keys}, '
            f'"partition": {seq % 12}, "offset": {seq // 12}, "color": "{color}", '
            f'"instance": "{color}-{seq % 3}", "ts": {ts!r}}}\n'
        )

    with (tmp_path / "producer.jsonl").open("w") as fh:
        fh.writelines(
            f'{{"seq": {s}, "key": "key-{s % keys}", "key_seq": {s // keys}, "partition": {s % 12}, '
            f'"offset": {s // 12}, "ts": {T0 + s * 1e-5!r}}}\n'
            for s in range(n)
        )
    files: dict[str, list[str]] = {f"{c}-{i}": [] for c in ("blue", "green") for i in range(3)}
    for s in range(switch):
        files[f"blue-{s % 3}"].append(line(s, "blue", T0 + 1 + s * 1e-5))
    green_start = T0 + 20  # blue stopped at ~T0 + 7: a clean gap
    for k, s in enumerate(replayed):
        files[f"green-{s % 3}"].append(line(s, "green", green_start + k * 1e-5))
    for s in range(switch, n - len(lost)):
        files[f"green-{s % 3}"].append(line(s, "green", green_start + 1e-3 + s * 1e-5))
    for name, rows in files.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(rows))
    consumer_logs = [tmp_path / f"{name}.jsonl" for name in files]
    del files

    started = time.perf_counter()
    report = validate_files([tmp_path / "producer.jsonl"], consumer_logs, pending_seqs=pending)
    elapsed = time.perf_counter() - started
    print(f"\nvalidate_files: {n} produced + {report.consumed} consumed lines in {elapsed:.2f} s")

    assert not report.ok  # the 5 lost records
    assert (report.produced, report.consumed, report.unique_consumed) == (n, n, n - 10)
    assert_clean_except(report, lost=5, pending=5, duplicates=10, cross_color_duplicates=10)
    assert report.lost_sample == sorted(lost - pending)
    assert report.duplicates_by_color == {"green": 10}
    assert report.colors["blue"].events == switch
    assert report.colors["green"].events == n - switch
    assert report.colors["blue"].last == RecordRef(switch - 1, T0 + 1 + (switch - 1) * 1e-5)
    assert report.colors["green"].first == RecordRef(switch - 10, green_start)
