"""AssignmentTable: the poller thread's view of what is assigned, with one epoch per assignment.

Owned and used by the BrokerPoller on its thread only: the rebalance callbacks (which librdkafka calls inside
``poll()``/``consume()``) change it, fetches tag their records with it, and the CommitSender checks commits
against it. Each assignment of a partition gets a new epoch; the event loop learns it from the ``Assignment``
and ties it to that assignment's offset tracker.
"""

from __future__ import annotations

import logging

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from pyrallel_consumer.control.offset_tracker import TopicPartitionKey
from pyrallel_consumer.kafka.events import Assignment, partition_names

log = logging.getLogger(__name__)

_COMMITTED_TIMEOUT_S = 10.0


class AssignmentTable:
    """Partition -> epoch of its current assignment (``epochs``); the same dict object for the table's life."""

    def __init__(self) -> None:
        self.epochs: dict[TopicPartitionKey, int] = {}
        self._epoch = 0

    def assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> tuple[list[Assignment],
                                                                                      list[TopicPartition]]:
        """New epochs for newly assigned partitions: the Assignments for the loop, and where to start fetching."""
        assignments = []
        to_assign = []
        for tp in _committed(consumer, partitions):
            self._epoch += 1
            self.epochs[(tp.topic, tp.partition)] = self._epoch
            end = _partition_end(consumer, tp) if tp.metadata and tp.offset >= 0 else None
            assignments.append(Assignment(tp.topic, tp.partition, self._epoch, tp.offset, tp.metadata, end))
            to_assign.append(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_INVALID))
        return assignments, to_assign

    def forget(self, keys: list[TopicPartitionKey]) -> None:
        for key in keys:
            self.epochs.pop(key, None)

    def epochs_of(self, rest: list[Message], fetched_under: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey,
                                                                                                     int]:
        """The assignment epoch of each partition in a batch whose tail came from ``consume()``.

        A record is tagged with the epoch its partition had when it was fetched: a record of an assignment
        revoked meanwhile must be dropped, never counted by the next assignment of the same partition (whose
        tracker would take the offsets below it for a gap and commit past them). A partition assigned during
        ``consume()`` has only records of that assignment. A partition revoked and assigned again within one
        ``consume()`` call may have records of both in the tail, which nothing tells apart: the poller then
        stops, failing closed, rather than risk committing past a record.
        """
        now = self.epochs
        if now == fetched_under:
            return fetched_under
        reassigned = {tp for tp, epoch in fetched_under.items() if tp in now and now[tp] != epoch}
        mixed = sorted({tp for m in rest if (tp := (m.topic(), m.partition())) in reassigned})
        if mixed:
            raise KafkaException(KafkaError(
                KafkaError._STATE,
                f"{partition_names(mixed)} revoked and assigned again within one fetch: cannot tell which "
                "assignment its records belong to; stopping without committing past them",
            ))
        return {**now, **fetched_under}


def _committed(consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """The group's committed offsets and metadata; without them the assignment cannot start safely."""
    last: Exception | None = None
    for _ in range(3):
        try:
            result: list[TopicPartition] = consumer.committed(partitions, timeout=_COMMITTED_TIMEOUT_S)
            return result
        except KafkaException as exc:
            last = exc
            log.warning("Reading committed offsets failed (%s); retrying", exc)
    raise RuntimeError(f"could not read committed offsets for the new assignment: {last}")


def _partition_end(consumer: Consumer, tp: TopicPartition) -> int | None:
    """The partition's high watermark from the broker, to judge a committed offset map; None if unreadable."""
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                    timeout=_COMMITTED_TIMEOUT_S, cached=False)
    except KafkaException as exc:
        log.warning("Reading the end of %s[%d] failed: %s", tp.topic, tp.partition, exc)
        return None
    return int(high) if high is not None and high >= 0 else None
