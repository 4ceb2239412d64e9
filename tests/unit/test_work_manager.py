"""Ordering slots: one record in flight per key (or partition), oldest first, revoked work dropped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrallel_consumer.control.offset_tracker import PartitionOffsets
from pyrallel_consumer.control.work_manager import WorkManager
from pyrallel_consumer.record import Ordering, Record

pytestmark = pytest.mark.unit

TRACKERS = {p: PartitionOffsets(("t", p), 1, None, max_window=1000) for p in range(3)}
"""The assignment each record belongs to (the work manager only carries it)."""


def rec(partition: int, offset: int, key: bytes | None) -> Record:
    return Record("t", partition, offset, key, b"")


def drain_ready(wm: WorkManager) -> list[Record]:
    out = []
    while (item := wm.next_ready()) is not None:
        out.append(item)
    return [i.record for i in out]


def test_key_ordering_runs_one_record_per_key_and_keyless_per_partition() -> None:
    wm = WorkManager(Ordering.KEY)
    for offset, key in enumerate([b"a", b"a", b"b", None, None, b"b"]):
        wm.add(rec(0, offset, key), TRACKERS[0])
    first = drain_ready(wm)
    assert [r.offset for r in first] == [0, 2, 3]
    assert (wm.in_flight, wm.queued) == (3, 3)


def test_partition_and_unordered_modes() -> None:
    wm = WorkManager(Ordering.PARTITION)
    for offset in range(3):
        wm.add(rec(0, offset, b"k%d" % offset), TRACKERS[0])
    wm.add(rec(1, 0, b"x"), TRACKERS[1])
    assert [(r.partition, r.offset) for r in drain_ready(wm)] == [(0, 0), (1, 0)]
    wm = WorkManager(Ordering.UNORDERED)
    for offset in range(3):
        wm.add(rec(0, offset, b"same"), TRACKERS[0])
    assert len(drain_ready(wm)) == 3


@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([b"a", b"b", b"c", None])), min_size=1, max_size=120),
       st.randoms())
def test_every_record_runs_once_in_key_order(records: list[tuple[int, bytes | None]], rnd: object) -> None:
    wm = WorkManager(Ordering.KEY)
    offsets = [0, 0, 0]
    for partition, key in records:
        wm.add(rec(partition, offsets[partition], key), TRACKERS[partition])
        offsets[partition] += 1
    in_flight = []
    ran: list[Record] = []
    while True:
        while (item := wm.next_ready()) is not None:
            in_flight.append(item)
        if not in_flight:
            break
        item = in_flight.pop(rnd.randrange(len(in_flight)))  # type: ignore[attr-defined]
        ran.append(item.record)
        wm.finish(item)
    assert len(ran) == len(records)
    for key in (b"a", b"b", b"c", None):
        for partition in range(3):
            seq = [r.offset for r in ran if r.key == key and r.partition == partition]
            assert seq == sorted(seq)
    assert (wm.queued, wm.in_flight) == (0, 0)


def test_dropping_a_partition_forgets_its_queue_only() -> None:
    wm = WorkManager(Ordering.KEY)
    for offset in range(4):
        wm.add(rec(0, offset, b"a"), TRACKERS[0])
        wm.add(rec(1, offset, b"a"), TRACKERS[1])
    running = drain_ready(wm)
    assert wm.drop_partitions([("t", 0)]) == 3
    assert wm.queued_of(("t", 0)) == 0 and wm.queued_of(("t", 1)) == 3
    assert len(running) == 2


def test_a_record_is_in_flight_from_dispatch_until_finished_or_requeued() -> None:
    wm = WorkManager(Ordering.KEY)
    wm.add(rec(0, 0, b"a"), TRACKERS[0])
    wm.add(rec(1, 0, b"b"), TRACKERS[1])
    first, second = wm.next_ready(), wm.next_ready()
    assert first is not None and second is not None
    assert first.offsets is TRACKERS[0], "a record carries its assignment's tracker"
    assert wm.running(first.item_id) is first and wm.in_flight_items() == [first, second]
    assert (wm.in_flight, wm.in_flight_of(("t", 0)), wm.queued) == (2, 1, 0)
    wm.finish(first)
    wm.requeue(second)
    assert wm.running(first.item_id) is None and wm.running(second.item_id) is None
    assert (wm.in_flight, wm.queued) == (0, 1)
    assert wm.next_ready() is second, "a requeued record runs again first"


def test_unordered_runs_in_arrival_order_and_drops_only_the_revoked_partition() -> None:
    wm = WorkManager(Ordering.UNORDERED)
    for offset in range(3):
        wm.add(rec(0, offset, b"a"), TRACKERS[0])
        wm.add(rec(1, offset, b"a"), TRACKERS[1])
    first = wm.next_ready()
    assert first is not None and (first.record.partition, first.record.offset) == (0, 0)
    assert wm.drop_partitions([("t", 1)]) == 3
    assert [(r.partition, r.offset) for r in drain_ready(wm)] == [(0, 1), (0, 2)]
    wm.finish(first)
    assert (wm.queued, wm.in_flight) == (0, 2)


def test_queued_bytes_follow_the_values_through_dispatch_and_drop() -> None:
    wm = WorkManager(Ordering.KEY)
    wm.add(Record("t", 0, 0, b"a", b"x" * 100), TRACKERS[0])
    wm.add(Record("t", 0, 1, b"a", b"x" * 50), TRACKERS[0])
    wm.add(Record("t", 1, 0, b"b", None), TRACKERS[1])
    assert (wm.queued_bytes, wm.queued_bytes_of(("t", 0))) == (150, 150)
    assert len(drain_ready(wm)) == 2  # t0@0 and t1@0; t0@1 waits behind its key
    assert (wm.queued_bytes, wm.queued_bytes_of(("t", 0))) == (50, 50)
    wm.drop_partitions([("t", 0)])
    assert (wm.queued_bytes, wm.queued_bytes_of(("t", 0))) == (0, 0)


@given(st.lists(st.tuples(st.sampled_from(["add", "take", "finish", "hold", "drop"]), st.integers(0, 2)),
                max_size=60))
def test_totals_apart_equal_the_held_partitions_queued_records(steps: list[tuple[str, int]]) -> None:
    """What Backpressure publishes to the fetch gate (the queue without its held partitions) stays exact whatever
    is added, dispatched, finished, held or dropped: a wrong level would fetch too much or stall the fetch."""
    wm = WorkManager(Ordering.UNORDERED)
    running = []
    offsets = dict.fromkeys(range(3), 0)
    held: frozenset[tuple[str, int]] = frozenset()
    for action, p in steps:
        if action == "add":
            wm.add(Record("t", p, offsets[p], None, b"x" * (p + 1)), TRACKERS[p])
            offsets[p] += 1
        elif action == "take" and (item := wm.next_ready()) is not None:
            running.append(item)
        elif action == "finish" and running:
            wm.finish(running.pop(0))
        elif action == "hold":
            held = frozenset({("t", p), ("t", (p + 1) % 3)})
            wm.count_apart(held)
        elif action == "drop":
            wm.drop_partitions([("t", p)])
        assert wm.queued_apart == sum(wm.queued_of(tp) for tp in held)
        assert wm.queued_bytes_apart == sum(wm.queued_bytes_of(tp) for tp in held)
