"""CommitSchedule: commit points of the current assignments; an acknowledged commit marks its own tracker."""

from __future__ import annotations

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
