"""Assignments: the partitions this consumer owns on the event loop, one offset tracker per assignment.

The one owner of "is this assignment current": it creates a PartitionOffsets for each Assignment the poller
reports, marks it ``revoking`` while a revocation settles and ``current = False`` when the assignment ends
(revoked, lost, or replaced by a newer assignment of the partition). It is also the one place where the epoch
number the poller thread tagged a fetched record with is matched to a tracker (``accepting``); past that, a
record carries its tracker. Used by the Coordinator, Backpressure, CommitSchedule and StuckGuard, on the
event loop only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pyrallel_consumer.control.offset_tracker import PartitionOffsets, TopicPartitionKey, restore_map
from pyrallel_consumer.kafka.events import Assignment

log = logging.getLogger(__name__)


class Assignments:
    """The current assignment's tracker of each partition assigned to this consumer."""

    def __init__(self, max_pending_offsets: int) -> None:
        self._window = max_pending_offsets
        self._current: dict[TopicPartitionKey, PartitionOffsets] = {}

    def assign(self, a: Assignment) -> None:
        """Start tracking a new assignment from what the group committed (restoring a trusted offset map)."""
        tp = (a.topic, a.partition)
        start = a.committed_offset if a.committed_offset >= 0 else None
        restored = restore_map(tp, a.committed_offset, a.committed_metadata, a.partition_end, self._window)
        if restored is not None:
            log.info("Restored offset map of %s[%d]: %d record(s) above offset %d are done already",
                     a.topic, a.partition, restored.completed_count, a.committed_offset)
        older = self._current.get(tp)
        if older is not None:  # a revocation still settling on the loop belongs to the older assignment
            older.current = False
        self._current[tp] = PartitionOffsets(tp, a.epoch, start, restored, max_window=self._window,
                                             end_at_assignment=a.partition_end)

    def accepting(self, tp: TopicPartitionKey, epoch: int) -> PartitionOffsets | None:
        """The tracker for a record fetched under ``epoch``; None when that assignment is over or being revoked."""
        offsets = self._current.get(tp)
        if offsets is None or offsets.epoch != epoch or offsets.revoking:
            return None
        return offsets

    def begin_revoke(self, partitions: Iterable[TopicPartitionKey]) -> list[PartitionOffsets]:
        """Mark the current assignments of ``partitions`` revoking: no more records are accepted for them."""
        revoking = [offsets for tp in partitions if (offsets := self._current.get(tp)) is not None]
        for offsets in revoking:
            offsets.revoking = True
        return revoking

    def end(self, trackers: Iterable[PartitionOffsets]) -> None:
        """End these assignments (revoked or lost): their trackers are no longer current."""
        for offsets in trackers:
            if offsets.current:
                offsets.current = False
                del self._current[offsets.topic_partition]

    def of(self, tp: TopicPartitionKey) -> PartitionOffsets | None:
        return self._current.get(tp)

    def trackers(self) -> list[PartitionOffsets]:
        """The current trackers, in partition order."""
        return [self._current[tp] for tp in sorted(self._current)]

    def __len__(self) -> int:
        return len(self._current)
