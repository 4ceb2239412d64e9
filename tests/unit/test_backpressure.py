"""Backpressure owns which partitions are held and publishes what the fetch gate counts of the loop's queue."""

from __future__ import annotations

import pytest

from pyrallel_consumer import ConsumerConfig, Ordering, Record
from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.control.backpressure import Backpressure
from pyrallel_consumer.control.work_manager import WorkManager
from pyrallel_consumer.kafka.events import Assignment
from pyrallel_consumer.kafka.fetch_gate import FetchGate, QueueLevel

pytestmark = pytest.mark.unit

T0, T1 = ("t", 0), ("t", 1)


def _setup(partitions: int = 2, **config: object) -> tuple[Backpressure, WorkManager, Assignments, FetchGate]:
    cfg = ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"], **config)  # type: ignore[arg-type]
    assignments = Assignments(cfg.max_pending_offsets)
    for p in range(partitions):
        assignments.assign(Assignment("t", p, p + 1, -1, None))
    work = WorkManager(cfg.ordering)
    gate = FetchGate(cfg.queue_max_messages, cfg.queue_max_bytes)
    return Backpressure(cfg, assignments, work, gate), work, assignments, gate


def _add(work: WorkManager, assignments: Assignments, partition: int, offsets: range, value: bytes = b"v") -> None:
    tracker = assignments.of(("t", partition))
    assert tracker is not None
    for offset in offsets:
        tracker.receive(offset)
        work.add(Record("t", partition, offset, b"k%d" % offset, value), tracker)


def test_a_partition_at_one_and_a_half_shares_is_held_and_left_out_of_the_gate() -> None:
    backpressure, work, assignments, gate = _setup(queue_max_messages=10, ordering=Ordering.PARTITION)
    _add(work, assignments, 0, range(7))  # share 5: 1.5x is 7
    _add(work, assignments, 1, range(2))
    backpressure.update({T0, T1})
    assert backpressure.held == {T0}
    assert gate.level == QueueLevel(2, 2, frozenset({T0})), "only partition 1's records count for the gate"
    _add(work, assignments, 0, range(7, 8))
    backpressure.publish()
    assert gate.level.records == 2, "records of a held partition never block the others' fetch"


def test_a_held_partition_is_released_at_its_share() -> None:
    backpressure, work, assignments, gate = _setup(queue_max_messages=10, ordering=Ordering.UNORDERED)
    _add(work, assignments, 0, range(8))
    backpressure.update({T0})
    assert backpressure.held == {T0}
    for _ in range(2):
        work.next_ready()
    backpressure.recheck(T0)
    assert backpressure.held == {T0}, "6 queued is above the share of 5"
    work.next_ready()
    backpressure.recheck(T0)
    assert backpressure.held == frozenset() and gate.level == QueueLevel(5, 5, frozenset())


def test_bytes_count_like_records() -> None:
    backpressure, work, assignments, gate = _setup(queue_max_bytes=2000)
    _add(work, assignments, 0, range(2), value=b"x" * 800)  # byte share 1,000: 1.5x is 1,500
    _add(work, assignments, 1, range(1), value=b"x" * 100)
    backpressure.update({T0, T1})
    assert backpressure.held == {T0}
    assert gate.level == QueueLevel(1, 100, frozenset({T0}))


def test_a_single_partition_is_held_only_behind_a_blocking_record() -> None:
    """One partition has the whole queue: the gate bounds it; max_pending_offsets still holds it."""
    backpressure, work, assignments, _gate = _setup(partitions=1, queue_max_messages=1000, max_pending_offsets=100)
    _add(work, assignments, 0, range(100))
    backpressure.update({T0})
    assert backpressure.held == frozenset(), "100 tracked offsets are not more than max_pending_offsets"
    _add(work, assignments, 0, range(100, 101))
    backpressure.update({T0})
    assert backpressure.held == {T0}


def test_an_unchanged_held_set_is_the_same_object_and_a_gone_partition_is_forgotten() -> None:
    """The poller re-applies librdkafka's pauses only when the published held set is another object."""
    backpressure, work, assignments, gate = _setup(queue_max_messages=10)
    _add(work, assignments, 0, range(8))
    backpressure.update({T0})
    held = gate.level.held
    _add(work, assignments, 1, range(1))
    backpressure.update({T1})
    assert gate.level.held is held and gate.level.records == 1
    backpressure.forget([T0])
    backpressure.publish()
    assert gate.level.held == frozenset()


def test_nothing_is_held_or_released_once_stopping() -> None:
    backpressure, work, assignments, gate = _setup(queue_max_messages=10)
    backpressure.stop()
    _add(work, assignments, 0, range(8))
    backpressure.update({T0})
    assert backpressure.held == frozenset() and gate.level.records == 8
