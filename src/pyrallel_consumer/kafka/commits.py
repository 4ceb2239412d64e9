"""CommitSender: sends commit points to Kafka from the poller thread and reports each result to the loop.

Everything here runs on the poller thread (BrokerPoller's commands, its revoke callback, and librdkafka's
``on_commit`` callback, which ``consume()`` serves). Commits carry the assignment epoch they were computed for
and are dropped here when the partition has since been revoked, so a stale commit never reaches the broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pyrallel_consumer.control.offset_tracker import CommitPoint, TopicPartitionKey
from pyrallel_consumer.kafka.events import CommitResult


class CommitSender:
    """Sends commits of the partitions the poller has assigned; results go to ``report`` (posted to the loop)."""

    def __init__(self, assigned: dict[TopicPartitionKey, int], report: Callable[[list[CommitResult]], None]) -> None:
        self._assigned = assigned
        """The poller's assignment table (partition -> epoch), read here: the same thread changes it."""
        self._report = report
        self._pending_async: dict[tuple[str, int, int], tuple[float, CommitPoint]] = {}

    def send(self, consumer: Consumer, points: list[CommitPoint], sync: bool) -> None:
        valid = [p for p in points if self._assigned.get((p.topic, p.partition)) == p.epoch]
        if not valid:
            return
        offsets = [TopicPartition(p.topic, p.partition, p.offset, p.metadata) for p in valid]
        started = time.monotonic()
        if not sync:
            for p in valid:
                # A point sent again before its acknowledgement keeps its first send time: the latency is how
                # long it waited to be acknowledged (a newer assignment's point replaces an older one's entry).
                pending = self._pending_async.get((p.topic, p.partition, p.offset))
                if pending is None or pending[1].epoch != p.epoch:
                    self._pending_async[(p.topic, p.partition, p.offset)] = (started, p)
            consumer.commit(offsets=offsets, asynchronous=True)
            return
        error: str | None = None
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = str(exc)
            results = None
        errors = {(tp.topic, tp.partition): str(tp.error) for tp in results or [] if tp.error is not None}
        latency = time.monotonic() - started
        self._report([CommitResult(p, error or errors.get((p.topic, p.partition)), latency) for p in valid])

    def on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's result of a commit; synchronous commits were reported already and match nothing."""
        now = time.monotonic()
        results = []
        for tp in partitions:
            entry = self._pending_async.pop((tp.topic, tp.partition, tp.offset), None)
            if entry is None:
                continue
            started, point = entry
            error = err if err is not None else tp.error
            results.append(CommitResult(point, str(error) if error is not None else None, now - started))
        if results:
            self._report(results)
