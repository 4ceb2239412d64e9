"""CommitSender: sends commit points to Kafka from the poller thread and reports each result to the loop.

Everything here runs on the poller thread (BrokerPoller's commands, its revoke callback, and librdkafka's
``on_commit`` callback, which ``consume()`` serves). Commits carry the assignment epoch they were computed for
and are dropped here when the partition has since been revoked, so a stale commit never reaches the broker.

At most one asynchronous commit is in flight: librdkafka retries a commit by itself when the group coordinator
moves or is loading, so a second commit sent meanwhile could be written first and then be overwritten by the
older one's retry - the committed offset would move backwards (seen on a rolling restart of a 3-broker cluster).
Points asked for while one is in flight wait, newest per partition, and go out when its result comes.

A synchronous commit (revoke, stop, pause) cannot wait for the asynchronous one in flight: its result comes only
through ``consume()``, which the revoke callback is inside of. When that older commit's retry lands after the
synchronous one, its result marks the tracker committed at the older offset, so the next asynchronous commit sends
the newest point again - unless the partition was revoked or the consumer stopped meanwhile: then the next owner
starts at the older offset and handles the records between again (duplicates, never a loss; after a rebalance
the broker refuses the old generation's retry anyway).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pyrallel_consumer.control.offset_tracker import CommitPoint, TopicPartitionKey
from pyrallel_consumer.kafka.events import CommitResult
from pyrallel_consumer.observability.log_events import OFFSETS_COMMITTED, event_extra, partition_list

log = logging.getLogger(__name__)

REBALANCING = frozenset({KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS,
                         KafkaError.UNKNOWN_MEMBER_ID, KafkaError.STALE_MEMBER_EPOCH,
                         KafkaError.FENCED_MEMBER_EPOCH})
"""Commit errors of a group that is rebalancing (or of a member about to rejoin): an asynchronous commit sent while
the group changes generation is refused with them, and the next one after the rebalance carries the same progress."""


def is_rebalancing(error: object) -> bool:
    """Whether a commit's ``error`` (a KafkaError, or anything else that went wrong) is one of ``REBALANCING``."""
    return isinstance(error, KafkaError) and error.code() in REBALANCING


IN_FLIGHT_LIMIT_S = 30.0
"""An asynchronous commit whose result has not come after this long no longer holds the next one back (librdkafka
reports every commit, so this only bounds the damage of a result that never comes)."""


class CommitSender:
    """Sends commits of the partitions the poller has assigned; results go to ``report`` (posted to the loop)."""

    def __init__(self, assigned: dict[TopicPartitionKey, int], report: Callable[[list[CommitResult]], None],
                 labels: Mapping[str, object] | None = None) -> None:
        self._assigned = assigned
        """The poller's assignment table (partition -> epoch), read here: the same thread changes it."""
        self._report = report
        self._pending_async: dict[tuple[str, int, int], tuple[float, CommitPoint]] = {}
        """Points sent asynchronously and not yet reported, with the time each was first asked for."""
        self._waiting: dict[TopicPartitionKey, tuple[float, CommitPoint]] = {}
        """Points asked for while a commit was in flight: the newest per partition with the time its partition's
        commit was first asked for (the latency counts the wait), sent when the result of the one in flight comes."""
        self._in_flight: frozenset[tuple[str, int, int]] = frozenset()
        self._in_flight_since = 0.0
        self._consumer: Consumer | None = None
        self._labels = dict(labels or {})
        """Fields of every ``offsets_committed`` line (the consumer's color and instance)."""

    def send(self, consumer: Consumer, points: list[CommitPoint], sync: bool) -> None:
        started = time.monotonic()
        if not sync:
            self._consumer = consumer
            for p in points:
                earlier = self._waiting.get((p.topic, p.partition))
                self._waiting[(p.topic, p.partition)] = (earlier[0] if earlier else started, p)
            self._send_waiting(started)
            return
        for p in points:  # a waiting point is older than this one and must not be sent after it
            self._waiting.pop((p.topic, p.partition), None)
        valid = self._valid(points)
        if not valid:
            return
        offsets = [TopicPartition(p.topic, p.partition, p.offset, p.metadata) for p in valid]
        failure: object = None
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            failure = exc.args[0] if exc.args else exc
            results = None
        errors = {(tp.topic, tp.partition): tp.error for tp in results or [] if tp.error is not None}
        latency = time.monotonic() - started
        reported = [_result(p, failure if failure is not None else errors.get((p.topic, p.partition)), latency)
                    for p in valid]
        self._log_committed(logging.INFO, "sync", reported)
        self._report(reported)

    def _valid(self, points: list[CommitPoint]) -> list[CommitPoint]:
        return [p for p in points if self._assigned.get((p.topic, p.partition)) == p.epoch]

    def _send_waiting(self, now: float) -> None:
        """Send the waiting points as one asynchronous commit unless one is in flight (and not overdue)."""
        if self._in_flight and now - self._in_flight_since < IN_FLIGHT_LIMIT_S:
            return
        asked = {(p.topic, p.partition): t for t, p in self._waiting.values()}
        valid = self._valid([p for _, p in self._waiting.values()])
        self._waiting.clear()
        if not valid or self._consumer is None:
            self._in_flight = frozenset()
            return
        for p in valid:
            # A point sent again before its acknowledgement keeps its first time: the latency is how long it waited
            # to be acknowledged (a newer assignment's point replaces an older one's entry).
            pending = self._pending_async.get((p.topic, p.partition, p.offset))
            if pending is None or pending[1].epoch != p.epoch:
                self._pending_async[(p.topic, p.partition, p.offset)] = (asked[(p.topic, p.partition)], p)
        self._in_flight = frozenset((p.topic, p.partition, p.offset) for p in valid)
        self._in_flight_since = now
        self._consumer.commit(offsets=[TopicPartition(p.topic, p.partition, p.offset, p.metadata) for p in valid],
                              asynchronous=True)

    def on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's result of a commit; synchronous commits were reported already and match nothing. The
        result of the commit in flight lets the waiting points go out (those it acknowledged as they were stay)."""
        now = time.monotonic()
        results = []
        keys = {(tp.topic, tp.partition, tp.offset) for tp in partitions}
        for tp in partitions:
            entry = self._pending_async.pop((tp.topic, tp.partition, tp.offset), None)
            if entry is None:
                continue
            started, point = entry
            error = err if err is not None else tp.error
            results.append(_result(point, error, now - started))
            waiting = self._waiting.get((point.topic, point.partition))
            if error is None and waiting is not None and (waiting[1].offset, waiting[1].metadata, waiting[1].epoch) == (
                    point.offset, point.metadata, point.epoch):
                del self._waiting[(point.topic, point.partition)]  # acknowledged as it is: nothing to resend
        if keys & self._in_flight or (not partitions and self._in_flight):  # a result naming no partition: ours
            self._in_flight = frozenset()
            self._send_waiting(now)
        if results:
            if log.isEnabledFor(logging.DEBUG):
                self._log_committed(logging.DEBUG, "async", results)
            self._report(results)

    def _log_committed(self, level: int, mode: str, results: list[CommitResult]) -> None:
        """One ``offsets_committed`` line for the acknowledged points (failures are logged by the CommitSchedule)."""
        done = [r for r in results if r.error is None]
        if not done:
            return
        keys = [(r.point.topic, r.point.partition) for r in done]
        offsets = partition_list(keys, [r.point.offset for r in done])
        seconds = max(r.latency_s for r in done)
        log.log(level, "Committed %s (%s) in %.3fs", offsets, mode, seconds,
                extra=event_extra(OFFSETS_COMMITTED, mode=mode, partitions=offsets, partition_count=len(done),
                                  seconds=round(seconds, 6), **self._labels))


def _result(point: CommitPoint, error: object, latency_s: float) -> CommitResult:
    """The result of ``point``'s commit: ``error`` None for an acknowledged one."""
    if error is None:
        return CommitResult(point, None, latency_s)
    return CommitResult(point, str(error), latency_s, rebalancing=is_rebalancing(error))
