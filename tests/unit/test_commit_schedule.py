"""CommitSchedule: commit points of the current assignments; an acknowledged commit marks its own tracker."""

from __future__ import annotations

import itertools
import logging
from collections import deque

import pytest

from pyrallel_consumer import ConsumerConfig
from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.control.commit_schedule import WORK_SHARE, CommitCadence, CommitSchedule
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


def _drive(cadence: CommitCadence, completions: list[float], until: float) -> list[tuple[float, list[float]]]:
    """Run the cadence as CommitSchedule.run does, on a fake clock: records complete at ``completions`` (seconds);
    returns each commit that carried completions, with its time and the completion times it carried."""
    commits: list[tuple[float, list[float]]] = []
    waiting: list[float] = []
    pending = deque(sorted(completions))
    now = 0.0
    while now <= until:
        due = now + cadence.delay(now)
        if pending and pending[0] <= min(due, until):
            now = pending.popleft()
            cadence.progressed = True
            waiting.append(now)
            continue
        if due > until:
            break
        now = due
        cadence.committed(now, took_s=0.0)
        if waiting:
            commits.append((now, waiting))
            waiting = []
    return commits


@pytest.mark.parametrize(("rate", "most_commits"), [(10, 10), (1_000, 100), (50_000, 100)])
def test_completions_are_committed_within_the_min_interval_and_commits_stay_that_far_apart(
        rate: int, most_commits: int) -> None:
    cadence = CommitCadence(min_interval_s=0.010, interval_s=1.0, now=-0.5)  # last commit: 0.5 s ago
    commits = _drive(cadence, [(i + 0.5) / rate for i in range(rate)], until=1.1)  # one second of completions
    assert sum(len(carried) for _, carried in commits) == rate
    assert max(at - done for at, carried in commits for done in carried) <= 0.010 + 1e-9
    assert all(b - a >= 0.010 - 1e-9 for (a, _), (b, _) in itertools.pairwise(commits))
    per_second = [at for at, _ in commits if at <= 1.0]
    assert len(per_second) == most_commits, "one commit per record at low rates, one per min interval above"


def test_without_progress_a_commit_is_due_only_after_the_commit_interval() -> None:
    cadence = CommitCadence(min_interval_s=0.010, interval_s=1.0, now=0.0)
    assert cadence.delay(0.25) == pytest.approx(0.75), "nothing completed: the periodic commit (a failed one again)"
    cadence.progressed = True
    assert cadence.delay(0.25) == 0.0, "the first completion after a quiet spell goes at once"
    cadence.committed(0.25, took_s=0.0001)
    cadence.progressed = True
    assert cadence.delay(0.253) == pytest.approx(0.007), "the next one waits for the min interval to end"
    assert cadence.delay(0.3) == 0.0


def test_commit_points_that_took_long_to_compute_space_the_next_commit_out() -> None:
    cadence = CommitCadence(min_interval_s=0.010, interval_s=1.0, now=0.0)
    cadence.committed(0.0, took_s=0.042)  # 100,000 offsets behind a blocked record: 42 ms of the loop
    cadence.progressed = True
    assert cadence.delay(0.0) == pytest.approx(0.042 / WORK_SHARE)
    cadence.committed(1.0, took_s=0.0001)
    cadence.progressed = True
    assert cadence.delay(1.0) == pytest.approx(0.010), "cheap again: back to the min interval"


def test_a_min_interval_of_zero_commits_every_completion_at_once() -> None:
    cadence = CommitCadence(min_interval_s=0.0, interval_s=1.0, now=0.0)
    commits = _drive(cadence, [0.001, 0.002, 0.003], until=1.0)
    assert [len(carried) for _, carried in commits] == [1, 1, 1]
    assert all(at == carried[0] for at, carried in commits)


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
