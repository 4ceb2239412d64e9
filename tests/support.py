"""Helpers shared by the integration tests: waiting on conditions and reading what the group committed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from pyrallel_consumer.control.offset_codec import OffsetMap, decode_offset_map


async def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout_s`` (a bound, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[tuple[int, str | None]]:
    """(offset, metadata) the group committed for each partition; offset -1001 when none."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    consumer = Consumer(conf)
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return [(tp.offset, tp.metadata) for tp in tps]


def log_ends(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """The high watermark of each partition: where the records produced (and acknowledged) so far end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{topic}"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


def committed_map(bootstrap: str, group: str, topic: str, partition: int = 0) -> tuple[int, OffsetMap | None]:
    offset, metadata = committed(bootstrap, group, topic, partition + 1)[partition]
    return offset, decode_offset_map(metadata or "", offset) if offset >= 0 else None


def seq_of(value: bytes | None) -> int:
    """The sequence number that ``produce_keyed`` writes at the start of every value."""
    if value is None:
        raise ValueError("record without value")
    return int(value.split(b"|", 1)[0])


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30,
             extra_conf: dict[str, Any] | None = None) -> list[Any]:
    """Every record of ``topic`` from the start, until ``expected`` came or ``timeout_s`` passed (a DLQ, an output
    topic): the test judges what arrived. ``extra_conf``: more reader properties, e.g. read_committed."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}",
                            "auto.offset.reset": "earliest", "enable.auto.commit": False, **(extra_conf or {})}
    reader = Consumer(conf)
    reader.subscribe([topic])
    out: list[Any] = []
    try:
        for _ in range(int(timeout_s / 0.5)):
            out += [m for m in reader.consume(500, 0.5) if m.error() is None]
            if len(out) >= expected:
                break
    finally:
        reader.close()
    return out
