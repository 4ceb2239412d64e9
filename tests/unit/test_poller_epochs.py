"""Records fetched around a rebalance are tagged with the assignment they were fetched under.

Rebalance callbacks run inside ``poll()`` and ``consume()`` on the poller thread; the broker cannot be made to
revoke and re-assign a partition inside one ``consume(timeout=0)`` call on demand, so these tests set the
poller's assignment table (kafka/assignment_table.py) the way those callbacks leave it.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException

from pyrallel_consumer.kafka.assignment_table import AssignmentTable

pytestmark = pytest.mark.unit


class FakeMessage:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def _poller(assigned_now: dict[tuple[str, int], int]) -> AssignmentTable:
    table = AssignmentTable()
    table.epochs.update(assigned_now)
    return table


def test_records_of_a_partition_revoked_during_the_fetch_keep_their_old_epoch() -> None:
    """The loop then drops them: partition 1 went to another member, which starts from the committed offset."""
    poller = _poller({("t", 0): 1})
    epochs = poller.epochs_of([FakeMessage(1, 57)], {("t", 0): 1, ("t", 1): 2})
    assert epochs == {("t", 0): 1, ("t", 1): 2}


def test_records_of_a_partition_assigned_during_the_fetch_get_the_new_epoch() -> None:
    poller = _poller({("t", 0): 1, ("t", 1): 3})
    assert poller.epochs_of([FakeMessage(1, 0)], {("t", 0): 1}) == {("t", 0): 1, ("t", 1): 3}


def test_a_partition_revoked_and_assigned_again_mid_fetch_stops_the_poller() -> None:
    """Records of both assignments may be in the batch; tagging them all with either epoch can commit past one."""
    poller = _poller({("t", 0): 1, ("t", 1): 5})
    with pytest.raises(KafkaException, match=r"t\[1\] revoked and assigned again"):
        poller.epochs_of([FakeMessage(1, 80)], {("t", 0): 1, ("t", 1): 2})


def test_first_record_of_a_reassigned_partition_keeps_the_epoch_it_was_fetched_under() -> None:
    """Only the tail came from consume(); the first record came from poll() under the earlier assignment."""
    poller = _poller({("t", 0): 1, ("t", 1): 5})
    assert poller.epochs_of([FakeMessage(0, 3)], {("t", 0): 1, ("t", 1): 2}) == {("t", 0): 1, ("t", 1): 2}
