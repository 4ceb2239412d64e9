"""Assignments: one tracker per current assignment; "is this assignment current" is asked of the tracker."""

from __future__ import annotations

import pytest

from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.kafka.events import Assignment

pytestmark = pytest.mark.unit


def test_records_are_accepted_only_for_the_current_assignment_while_not_revoking() -> None:
    assignments = Assignments(100)
    assignments.assign(Assignment("t", 0, 1, 5, None))
    first = assignments.accepting(("t", 0), 1)
    assert first is not None and first.current and first.start == 5
    assert assignments.accepting(("t", 0), 2) is None, "a record of another assignment"
    assert assignments.accepting(("t", 1), 1) is None, "a partition not assigned"
    assert assignments.begin_revoke([("t", 0), ("t", 1)]) == [first]
    assert assignments.accepting(("t", 0), 1) is None and first.current, "revoking: still current, no new records"


def test_a_newer_assignment_makes_the_older_tracker_not_current() -> None:
    """A revocation still settling on the loop must leave the partition's next assignment alone."""
    assignments = Assignments(100)
    assignments.assign(Assignment("t", 0, 1, -1, None))
    older = assignments.of(("t", 0))
    assert older is not None
    assignments.begin_revoke([("t", 0)])
    assignments.assign(Assignment("t", 0, 2, 0, None))
    newer = assignments.of(("t", 0))
    assert newer is not None and newer is not older
    assert not older.current and newer.current and not newer.revoking
    assignments.end([older])
    assert assignments.of(("t", 0)) is newer and len(assignments) == 1


def test_ending_an_assignment_forgets_it() -> None:
    assignments = Assignments(100)
    assignments.assign(Assignment("t", 1, 1, -1, None))
    assignments.assign(Assignment("t", 0, 2, -1, None))
    assert [o.topic_partition for o in assignments.trackers()] == [("t", 0), ("t", 1)]
    tracker = assignments.of(("t", 1))
    assert tracker is not None
    assignments.end([tracker])
    assert not tracker.current and assignments.of(("t", 1)) is None and len(assignments) == 1
