"""CommitSender: a commit's latency from the first time its point was sent; one asynchronous commit in flight."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from pyrallel_consumer.control.offset_tracker import CommitPoint, PartitionOffsets
from pyrallel_consumer.kafka import commits
from pyrallel_consumer.kafka.commits import CommitSender
from pyrallel_consumer.kafka.events import CommitResult

pytestmark = pytest.mark.unit


class RecordingBroker:
    """Records every commit request: (offsets by partition, asynchronous)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[int, int], bool]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        self.requests.append(({tp.partition: tp.offset for tp in offsets}, asynchronous))
        return None if asynchronous else offsets


def _tracker() -> PartitionOffsets:
    return PartitionOffsets(("t", 0), 1, 0, max_window=1000)


def _done(tracker: PartitionOffsets, start: int, end: int) -> CommitPoint:
    """Offsets ``start`` to ``end - 1`` received and completed: the commit point at ``end``."""
    for offset in range(start, end):
        tracker.receive(offset)
        tracker.complete(offset)
    point = tracker.commit_point()
    assert point is not None
    return point


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sender's monotonic clock, set by the test: ``clock[0] = 1.5``."""
    now = [0.0]
    monkeypatch.setattr(commits.time, "monotonic", lambda: now[0])
    return now


def test_a_newer_commit_waits_for_the_one_in_flight_and_only_the_newest_goes_out(clock: list[float]) -> None:
    """librdkafka retries a commit by itself when the coordinator moves: a second commit in flight could be written
    first and then overwritten by the first one's retry, moving the committed offset backwards."""
    broker, results = RecordingBroker(), list[CommitResult]()
    sender = CommitSender({("t", 0): 1}, results.extend)
    tracker = _tracker()
    for start in (0, 10, 20):
        sender.send(broker, [_done(tracker, start, start + 10)], sync=False)
    assert broker.requests == [({0: 10}, True)]  # 20 and 30 wait; 30 replaced 20
    clock[0] = 1.0
    sender.on_commit(None, [TopicPartition("t", 0, 10)])
    assert broker.requests == [({0: 10}, True), ({0: 30}, True)]
    sender.on_commit(None, [TopicPartition("t", 0, 30)])
    assert [r.point.offset for r in results] == [10, 30]
    assert all(r.error is None for r in results)


def test_a_synchronous_commit_drops_the_older_waiting_point() -> None:
    broker = RecordingBroker()
    sender = CommitSender({("t", 0): 1}, lambda results: None)
    tracker = _tracker()
    sender.send(broker, [_done(tracker, 0, 5)], sync=False)  # goes out
    sender.send(broker, [_done(tracker, 5, 10)], sync=False)  # waits
    sender.send(broker, [_done(tracker, 10, 20)], sync=True)  # the stop's or the revoke's commit
    sender.on_commit(None, [TopicPartition("t", 0, 5)])
    assert broker.requests == [({0: 5}, True), ({0: 20}, False)]  # 10 never goes out after 20


def test_an_unanswered_commit_holds_the_next_back_only_for_a_while(clock: list[float]) -> None:
    broker = RecordingBroker()
    sender = CommitSender({("t", 0): 1}, lambda results: None)
    tracker = _tracker()
    sender.send(broker, [_done(tracker, 0, 1)], sync=False)
    clock[0] = commits.IN_FLIGHT_LIMIT_S + 1
    sender.send(broker, [_done(tracker, 1, 2)], sync=False)
    assert broker.requests == [({0: 1}, True), ({0: 2}, True)]


def test_a_point_asked_for_again_before_its_acknowledgement_goes_out_once_and_keeps_its_first_time(
        clock: list[float]) -> None:
    broker, results = RecordingBroker(), list[CommitResult]()
    sender = CommitSender({("t", 0): 1}, results.extend)
    point = _done(_tracker(), 0, 5)
    sender.send(broker, [point], sync=False)
    clock[0] = 1.0
    sender.send(broker, [point], sync=False)  # the periodic commit, before the first was acknowledged
    clock[0] = 1.5
    sender.on_commit(None, [TopicPartition("t", 0, 5)])
    assert broker.requests == [({0: 5}, True)]
    assert [(r.point.offset, r.latency_s) for r in results] == [(5, 1.5)]


def test_a_waiting_point_of_a_revoked_partition_is_not_sent() -> None:
    assigned = {("t", 0): 1}
    broker = RecordingBroker()
    sender = CommitSender(assigned, lambda results: None)
    tracker = _tracker()
    sender.send(broker, [_done(tracker, 0, 5)], sync=False)  # goes out
    sender.send(broker, [_done(tracker, 5, 10)], sync=False)  # waits
    del assigned[("t", 0)]  # revoked (the poller's table) before the result of 5 comes
    sender.on_commit(None, [TopicPartition("t", 0, 5)])
    assert broker.requests == [({0: 5}, True)]


def test_the_latency_of_a_waiting_point_counts_its_wait(clock: list[float]) -> None:
    broker, results = RecordingBroker(), list[CommitResult]()
    sender = CommitSender({("t", 0): 1}, results.extend)
    tracker = _tracker()
    sender.send(broker, [_done(tracker, 0, 5)], sync=False)
    clock[0] = 0.5
    sender.send(broker, [_done(tracker, 5, 10)], sync=False)  # asked at 0.5, waits
    clock[0] = 2.0
    sender.on_commit(None, [TopicPartition("t", 0, 5)])  # 10 goes out now
    clock[0] = 2.5
    sender.on_commit(None, [TopicPartition("t", 0, 10)])
    assert [(r.point.offset, r.latency_s) for r in results] == [(5, 2.0), (10, 2.0)]


def test_a_failed_result_naming_no_partition_releases_the_next_commit() -> None:
    broker = RecordingBroker()
    sender = CommitSender({("t", 0): 1}, lambda results: None)
    tracker = _tracker()
    sender.send(broker, [_done(tracker, 0, 5)], sync=False)
    sender.send(broker, [_done(tracker, 5, 10)], sync=False)  # waits
    sender.on_commit(KafkaError(KafkaError._TRANSPORT), [])
    assert broker.requests == [({0: 5}, True), ({0: 10}, True)]


def test_a_commit_refused_for_a_rebalance_is_reported_as_such_and_other_failures_are_not() -> None:
    broker, results = RecordingBroker(), list[CommitResult]()
    sender = CommitSender({("t", 0): 1}, results.extend)
    tracker = _tracker()
    sender.send(broker, [_done(tracker, 0, 5)], sync=False)
    sender.on_commit(KafkaError(KafkaError.ILLEGAL_GENERATION), [TopicPartition("t", 0, 5)])
    sender.send(broker, [_done(tracker, 5, 10)], sync=False)
    sender.on_commit(KafkaError(KafkaError._TRANSPORT), [TopicPartition("t", 0, 10)])
    assert [(r.point.offset, r.error is not None, r.rebalancing) for r in results] == [(5, True, True),
                                                                                       (10, True, False)]
