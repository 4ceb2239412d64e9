"""The sink watcher's tailing and its join with the producer log, driven one poll at a time (no thread, no sleep)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyrallel_tools.bluegreen.sink_watch import SinkWatcher
from pyrallel_tools.bluegreen.validation.load import load_consumer_log
from pyrallel_tools.bluegreen.validation.switch_impact import SwitchWindow, measure_switch_impact_files

pytestmark = pytest.mark.unit


def value(seq: int, key: str = "k1", key_seq: int | None = None) -> str:
    return json.dumps({"seq": seq, "key": key, "key_seq": seq if key_seq is None else key_seq, "payload": "x"})


def write_producer(work: Path, seqs: range | list[int], t0: float = 1000.0) -> None:
    with (work / "producer.jsonl").open("w") as fh:
        for seq in seqs:
            fh.write(json.dumps({"seq": seq, "key": "k1", "key_seq": seq, "partition": seq % 3,
                                 "offset": 100 + seq, "ts": t0 + seq}) + "\n")


def append(path: Path, text: str) -> None:
    with path.open("a") as fh:
        fh.write(text)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The watcher's wall clock, set by the test: ``clock[0]``."""
    now = [2000.0]
    monkeypatch.setattr("pyrallel_tools.bluegreen.sink_watch.time.time", lambda: now[0])
    return now


def test_missing_files_are_fine_and_lines_are_stamped_when_first_seen(tmp_path: Path, clock: list[float]) -> None:
    write_producer(tmp_path, range(4))
    watcher = SinkWatcher(tmp_path, {"blue": "conn-blue", "green": "conn-green"})
    assert watcher.poll_once() == 0  # no sink file yet
    sink = tmp_path / "sink-blue.txt"
    append(sink, value(0) + "\n" + value(1) + "\n")
    assert watcher.poll_once() == 2
    clock[0] = 2001.0
    assert watcher.poll_once() == 0  # nothing new: nothing read twice
    append(sink, value(2) + "\n")
    assert watcher.poll_once() == 1

    stats = watcher.stop()

    blue = list(load_consumer_log(tmp_path / "observed-blue.jsonl"))
    assert [(r.seq, r.ts) for r in blue] == [(0, 2000.0), (1, 2000.0), (2, 2001.0)]
    assert {(r.partition, r.offset, r.color, r.instance) for r in blue if r.seq == 2} == {(2, 102, "blue", "conn-blue")}
    assert (tmp_path / "observed-green.jsonl").read_text() == ""
    assert watcher.observed_logs == [tmp_path / "observed-blue.jsonl", tmp_path / "observed-green.jsonl"]
    assert (stats.lines, stats.written, stats.malformed, stats.not_produced, stats.unterminated) == (3, 3, 0, 0, 0)
    first = json.loads((tmp_path / "observed-blue.jsonl").read_text().splitlines()[0])
    assert first == {"seq": 0, "key": "k1", "key_seq": 0, "partition": 0, "offset": 100, "color": "blue",
                     "instance": "conn-blue", "ts": 2000.0, "ok": True}


def test_a_line_appended_across_two_polls_is_stamped_when_complete(tmp_path: Path, clock: list[float]) -> None:
    write_producer(tmp_path, range(3))
    watcher = SinkWatcher(tmp_path)
    line = value(1, key="k7", key_seq=5)
    append(tmp_path / "sink-green.txt", value(0) + "\n" + line[:10])
    assert watcher.poll_once() == 1
    clock[0] = 2000.05
    append(tmp_path / "sink-green.txt", line[10:])
    assert watcher.poll_once() == 0  # still no newline
    clock[0] = 2000.1
    append(tmp_path / "sink-green.txt", "\n")
    assert watcher.poll_once() == 1

    watcher.stop()

    green = list(load_consumer_log(tmp_path / "observed-green.jsonl"))
    assert [(r.seq, r.key, r.key_seq, r.ts, r.instance) for r in green] == [
        (0, "k1", 0, 2000.0, "sink-green"), (1, "k7", 5, 2000.1, "sink-green")]


def test_a_seq_missing_from_the_producer_log_is_skipped_and_counted(tmp_path: Path, clock: list[float]) -> None:
    write_producer(tmp_path, [0, 2])
    watcher = SinkWatcher(tmp_path)
    append(tmp_path / "sink-blue.txt", "\n".join([value(0), value(1), value(2)]) + "\n")
    watcher.poll_once()

    stats = watcher.stop()

    assert [r.seq for r in load_consumer_log(tmp_path / "observed-blue.jsonl")] == [0, 2]
    assert (stats.lines, stats.written, stats.not_produced) == (3, 2, 1)


def test_malformed_blank_double_encoded_and_unterminated_lines(tmp_path: Path, clock: list[float]) -> None:
    write_producer(tmp_path, range(3))
    watcher = SinkWatcher(tmp_path)
    append(tmp_path / "sink-blue.txt",
           "not json\n\n" + json.dumps(value(0)) + "\n" + json.dumps({"seq": "1"}) + "\n" + value(2)[:-1])

    stats = watcher.stop()  # stop reads what the thread did not: here everything

    assert [r.seq for r in load_consumer_log(tmp_path / "observed-blue.jsonl")] == [0]
    assert (stats.lines, stats.written, stats.malformed, stats.unterminated) == (4, 1, 2, 1)
    assert watcher.stop() is stats  # a second stop does nothing


def test_without_a_producer_log_nothing_is_joined(tmp_path: Path, clock: list[float]) -> None:
    watcher = SinkWatcher(tmp_path)
    append(tmp_path / "sink-blue.txt", value(0) + "\n")

    stats = watcher.stop()

    assert (stats.written, stats.not_produced) == (0, 1)
    assert (tmp_path / "observed-blue.jsonl").read_text() == ""


def test_the_thread_starts_and_stops(tmp_path: Path) -> None:
    watcher = SinkWatcher(tmp_path, poll_s=0.01)
    watcher.start()
    watcher.stop()
    assert not watcher._thread.is_alive()


def test_switch_impact_reads_the_observed_logs(tmp_path: Path, clock: list[float]) -> None:
    t0 = 1000.0
    write_producer(tmp_path, range(4), t0)
    watcher = SinkWatcher(tmp_path)
    for seq in range(4):  # seq n produced at t0+n, seen at t0+n+0.25, except seq 2: seen 3 s late
        clock[0] = t0 + seq + (3.0 if seq == 2 else 0.25)
        append(tmp_path / "sink-blue.txt", value(seq) + "\n")
        watcher.poll_once()
    watcher.stop()

    window = SwitchWindow(0, "switch", "E", t0, t0 + 0.5)
    figures, _ = measure_switch_impact_files([tmp_path / "producer.jsonl"], watcher.observed_logs, [window])

    assert figures[0].processing_gap_s == pytest.approx(3.0)
    assert figures[0].latency_max_s == pytest.approx(3.0)
    assert figures[0].records == 4
