"""The processing gap and latency of a switch, from hand-made producer and consumer logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyrallel_tools.bluegreen.validation.load import ConsumedRecord, ProducedRecord
from pyrallel_tools.bluegreen.validation.switch_impact import (
    SwitchWindow,
    measure_switch_impact,
    measure_switch_impact_files,
)

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0
SWITCH = SwitchWindow(0, "switch", "B", T0 + 10.0, T0 + 10.2)


def sent(seq: int, at: float, partition: int = 0) -> ProducedRecord:
    return ProducedRecord(seq, f"k{partition}", seq, partition, seq, T0 + at)


def handled(seq: int, at: float, color: str = "blue", partition: int = 0) -> ConsumedRecord:
    return ConsumedRecord(seq, f"k{partition}", seq, partition, seq, color, f"{color}-1", T0 + at)


def steady(until: float, spacing: float = 0.1, latency: float = 0.01, start: int = 0
           ) -> tuple[list[ProducedRecord], list[ConsumedRecord]]:
    """One record every ``spacing`` seconds from 0 to ``until``, each handled ``latency`` after its send."""
    n = round(until / spacing)
    produced = [sent(start + i, i * spacing) for i in range(n)]
    consumed = [handled(p.seq, p.ts - T0 + latency) for p in produced]
    return produced, consumed


def test_a_hand_over_with_a_3_s_hole_reads_3_s() -> None:
    # Blue handles up to the switch; the records sent during the next 3 s wait for green, which starts at 13 s.
    produced = [sent(i, i * 0.1) for i in range(200)]
    consumed = [handled(p.seq, p.ts - T0 + 0.01) for p in produced if p.ts - T0 < 10.0]
    consumed += [handled(p.seq, max(13.0 + (p.ts - T0 - 10.0) * 0.01, p.ts - T0 + 0.01), "green")
                 for p in produced if p.ts - T0 >= 10.0]
    (figures,), _ = measure_switch_impact(produced, consumed, [SWITCH])
    assert figures.processing_gap_s == pytest.approx(3.0, abs=1e-6)  # the record sent at 10.0, handled at 13.0
    assert figures.processing_gap_end == T0 + 13.0
    assert figures.latency_max_s == pytest.approx(3.0, abs=0.02)
    assert figures.latency_p50_s is not None and figures.latency_p50_s < figures.latency_max_s


def test_a_steady_stream_handled_at_once_reads_its_latency() -> None:
    # Each record is handled 10 ms after its send, before the next is sent: it never waits longer than that.
    produced, consumed = steady(20.0)
    (figures,), buckets = measure_switch_impact(produced, consumed, [SWITCH])
    assert figures.processing_gap_s == pytest.approx(0.01, abs=1e-6)
    assert figures.latency_p50_s == figures.latency_p99_s == figures.latency_max_s == pytest.approx(0.01)
    assert figures.records == 100  # sent from 10.0 (the start) to the end of the run (no next switch)
    assert len(buckets) == 20 and all(b.max_s == pytest.approx(0.01) and b.records == 10 for b in buckets)


def test_a_steady_stream_handled_in_batches_reads_about_its_spacing() -> None:
    # One record every 0.1 s, handled in batches every 0.5 s: the first record of a batch waits about 0.5 s.
    produced, _ = steady(20.0)
    consumed = [handled(p.seq, 0.5 * (int((p.ts - T0) / 0.5 + 1e-9) + 1)) for p in produced]
    (figures,), _ = measure_switch_impact(produced, consumed, [SWITCH])
    assert figures.processing_gap_s == pytest.approx(0.5, abs=1e-6)
    assert figures.latency_max_s == pytest.approx(0.5, abs=1e-6)


def test_a_record_handled_twice_counts_its_first_handling() -> None:
    produced, consumed = steady(20.0)
    # Record 105 (sent at 10.5) is handled again by green 4 s later: no hole, no extra latency.
    consumed.append(handled(105, 14.5, "green"))
    consumed.insert(0, handled(106, 10.58, "green"))  # and 106 twice, the later one first in the logs
    (figures,), _ = measure_switch_impact(produced, consumed, [SWITCH])
    assert figures.processing_gap_s == pytest.approx(0.01, abs=1e-6)
    assert figures.latency_max_s == pytest.approx(0.01)


def test_a_duplicate_send_counts_its_first_acknowledgement() -> None:
    produced, consumed = steady(20.0)
    produced.append(sent(105, 12.0))
    (figures,), _ = measure_switch_impact(produced, consumed, [SWITCH])
    assert figures.latency_max_s == pytest.approx(0.01)


def test_partitions_are_measured_apart() -> None:
    # Partition 1 has records every 0.1 s; partition 0 has a 2 s hole after the switch.
    produced = [sent(i, i * 0.1, partition=1) for i in range(200)]
    consumed = [handled(p.seq, p.ts - T0 + 0.01, partition=1) for p in produced]
    produced += [sent(1000, 10.5), sent(1001, 14.0)]
    consumed += [handled(1000, 12.5), handled(1001, 14.01)]
    (figures,), _ = measure_switch_impact(produced, consumed, [SWITCH])
    assert figures.processing_gap_s == pytest.approx(2.0)


def test_each_switch_is_measured_until_the_next_one_starts() -> None:
    produced, consumed = steady(30.0)
    rollback = SwitchWindow(1, "rollback", "C", T0 + 20.0, T0 + 20.3)
    # A 1 s hole after the switch, a 2 s hole after the rollback.
    for hole_start, hole in ((10.0, 1.0), (20.0, 2.0)):
        consumed = [c if not (hole_start <= (c.ts or 0) - T0 < hole_start + hole)
                    else handled(c.seq, hole_start + hole) for c in consumed]
    switch_figures, rollback_figures = measure_switch_impact(produced, consumed, [SWITCH, rollback])[0]
    assert switch_figures.processing_gap_s == pytest.approx(1.0, abs=0.02)
    assert rollback_figures.processing_gap_s == pytest.approx(2.0, abs=0.02)
    assert (switch_figures.window, rollback_figures.window) == (SWITCH, rollback)


def test_nothing_handled_with_a_time_gives_no_figures() -> None:
    produced, _ = steady(20.0)
    sink = [ConsumedRecord(p.seq, p.key, p.key_seq, -1, -1, "green", "sink", None) for p in produced]
    (figures,), buckets = measure_switch_impact(produced, sink, [SWITCH])
    assert (figures.processing_gap_s, figures.processing_gap_end, figures.latency_p99_s, figures.records) == (
        None, None, None, 0)
    assert buckets == []


def test_from_files(tmp_path: Path) -> None:
    produced, consumed = steady(20.0)
    (tmp_path / "producer.jsonl").write_text("".join(
        json.dumps({"seq": p.seq, "key": p.key, "key_seq": p.key_seq, "partition": p.partition,
                    "offset": p.offset, "ts": p.ts}) + "\n" for p in produced))
    (tmp_path / "blue.jsonl").write_text("not json\n" + "".join(
        json.dumps({"seq": c.seq, "key": c.key, "key_seq": c.key_seq, "partition": c.partition,
                    "offset": c.offset, "color": c.color, "instance": c.instance, "ts": c.ts}) + "\n"
        for c in consumed))
    (figures,), _ = measure_switch_impact_files([tmp_path / "producer.jsonl"], [tmp_path / "blue.jsonl"],
                                                [SWITCH])
    assert figures.processing_gap_s == pytest.approx(0.01, abs=1e-5)
