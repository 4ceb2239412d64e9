"""Drain phase of a validation: which records still wait in the topic behind the group's committed offsets.

A record the producer got acked but no consumer logged is only *lost* if the group committed past it. If it
sits at or above the committed offset, the next consumer of the group will still get it: it is *pending*.
This reads the topic from the group's committed offsets to the current end with a consumer that assigns
partitions itself (it never joins the group and never commits, so the run under test is not disturbed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from pyrallel_consumer import LibrdkafkaLog
from pyrallel_tools.bluegreen.load_producer import parse_identity

log = logging.getLogger(__name__)

_META_TIMEOUT_S = 15.0


class DrainError(RuntimeError):
    """The topic could not be read to its end (missing topic, broker down, timeout)."""


@dataclass(slots=True)
class DrainResult:
    pending_seqs: set[int] = field(default_factory=set)
    records: int = 0
    """Records read between the committed offsets and the end."""
    unparsed: int = 0
    """Of those, values that are not the load producer's JSON (ignored)."""
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    """partition -> [committed offset (or log start), end offset) that was read."""

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "pending_seqs": len(self.pending_seqs), "unparsed": self.unparsed,
                "ranges": {str(p): list(r) for p, r in sorted(self.ranges.items())}}


def read_pending(bootstrap_servers: str, topic: str, group: str, timeout_s: float = 60.0,
                 kafka: dict[str, str] | None = None) -> DrainResult:
    """Seqs of the records at or above ``group``'s committed offsets of ``topic``, up to the end as of now.

    A partition without a committed offset is read from the log start (the consume app's
    ``auto_offset_reset=earliest``). The end is fixed when the drain starts: later records are not judged.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers, "group.id": group, "enable.auto.commit": False,
        "enable.auto.offset.store": False, "logger": LibrdkafkaLog("pyrallel_tools.librdkafka.drain"),
    }
    conf.update(kafka or {})
    consumer = Consumer(conf)
    result = DrainResult()
    try:
        try:
            meta = consumer.list_topics(topic, timeout=_META_TIMEOUT_S).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise DrainError(f"topic {topic!r} does not exist or has no partitions")
            partitions = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
            committed = consumer.committed(partitions, timeout=_META_TIMEOUT_S)
            for tp in committed:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition),
                                                           timeout=_META_TIMEOUT_S)
                start = max(tp.offset, low) if tp.offset >= 0 else low
                if start < high:
                    result.ranges[tp.partition] = (start, high)
        except KafkaException as exc:
            raise DrainError(f"reading the committed offsets of group {group!r} failed: {exc}") from exc
        _read_ranges(consumer, topic, result, timeout_s)
    finally:
        consumer.close()
    log.info("Drain of %s for group %s: %d record(s) behind the committed offsets, %d seq(s)",
             topic, group, result.records, len(result.pending_seqs))
    return result


def _read_ranges(consumer: Consumer, topic: str, result: DrainResult, timeout_s: float) -> None:
    ranges = result.ranges
    if not ranges:
        return
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _end) in ranges.items()])
    remaining = set(ranges)
    deadline = time.monotonic() + timeout_s
    while remaining:
        if time.monotonic() > deadline:
            raise DrainError(f"partitions {sorted(remaining)} of {topic!r} were not read to the end in {timeout_s:g}s")
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise DrainError(f"reading {topic!r} failed: {err}")
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is None or offset is None or partition not in remaining or offset >= ranges[partition][1]:
                continue
            result.records += 1
            identity = parse_identity(msg.value())
            if identity is None:
                result.unparsed += 1
            else:
                result.pending_seqs.add(identity[0])
        # Positions, not the last offset seen: transaction markers and compacted gaps leave no message.
        for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
            if tp.offset >= ranges[tp.partition][1]:
                remaining.discard(tp.partition)
