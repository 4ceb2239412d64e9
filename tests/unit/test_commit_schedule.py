"""CommitSchedule: commit points of the current assignments; an acknowledged commit marks its own tracker."""

from __future__ import annotations

import logging

import pytest

from pyrallel_consumer import ConsumerConfig
from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.control.commit_schedule import CommitSchedule
from pyrallel_consumer.control.observer import ConsumerObserver
from pyrallel_consumer.control.offset_tracker import PartitionOffsets
from pyrallel_consumer.kafka.events import Assignment, CommitResult

pytestmark = pytest.mark.unit

CONFIG = ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"])


def _assign_and_complete(assignments: Assignments, epoch: int, offset: int) -> PartitionOffsets:
    """Assign t[0] from ``offset`` and complete that offset: the assignment has a commit to make."""
    assignments.assign(Assignment("t", 0, epoch, offset, None))
    tracker = assignments.of(("t", 0))
    assert tracker is not None
    tracker.receive(offset)
    tracker.complete(offset)
    return tracker


def test_an_acknowledged_commit_is_not_offered_again_and_a_failed_one_is() -> None:
    assignments = Assignments(100)
    tracker = _assign_and_complete(assignments, 1, 10)
    schedule = CommitSchedule(CONFIG, assignments, ConsumerObserver())
    [point] = schedule.points()
    assert (point.offset, point.epoch, point.tracker) == (11, 1, tracker)
    schedule.on_committed([CommitResult(point, "broker said no", 0.01)])
    assert schedule.points() == [point] and (schedule.commits, schedule.failures) == (0, 1)
    schedule.on_committed([CommitResult(point, None, 0.01)])
    assert schedule.points() == [] and (schedule.commits, schedule.failures) == (1, 1)


def test_a_commit_acknowledged_after_the_partition_came_back_marks_only_the_old_assignment() -> None:
    assignments = Assignments(100)
    old = _assign_and_complete(assignments, 1, 0)
    schedule = CommitSchedule(CONFIG, assignments, ConsumerObserver())
    [point] = schedule.points()
    _assign_and_complete(assignments, 2, 0)
    schedule.on_committed([CommitResult(point, None, 0.01)])
    assert old.last_committed_offset == 1
    assert [p.epoch for p in schedule.points()] == [2], "the new assignment still has its own commit to make"


class Refusals(ConsumerObserver):
    def __init__(self) -> None:
        self.refused: list[int] = []
        self.errors: list[str] = []

    def commits_refused_in_rebalance(self, partitions: int) -> None:
        self.refused.append(partitions)

    def error(self, kind: str) -> None:
        self.errors.append(kind)


def test_commits_refused_in_a_rebalance_are_counted_logged_once_and_offered_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assignments = Assignments(100)
    _assign_and_complete(assignments, 1, 10)
    observer = Refusals()
    schedule = CommitSchedule(CONFIG, assignments, observer)
    caplog.set_level(logging.INFO, logger="pyrallel_consumer.control.commit_schedule")
    [point] = schedule.points()
    refused = CommitResult(point, "KafkaError{code=ILLEGAL_GENERATION}", 0.01, rebalancing=True)
    for _ in range(3):  # every periodic commit of the rebalance is refused
        schedule.on_committed([refused])
    assert schedule.points() == [point], "the next commit after the rebalance sends the same progress"
    schedule.on_committed([CommitResult(point, None, 0.01)])
    schedule.on_committed([refused])  # the next rebalance
    assert observer.refused == [1, 1, 1, 1] and observer.errors == []
    lines = [(r.levelname, getattr(r, "event", None)) for r in caplog.records]
    assert lines == [("INFO", "commit_refused_in_rebalance")] * 2, "one line per rebalance, no WARNING"
    schedule.on_committed([CommitResult(point, "KafkaError{code=_TRANSPORT}", 0.01)])
    assert observer.errors == ["commit"] and caplog.records[-1].levelname == "WARNING"
