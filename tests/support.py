"""Helpers shared by the integration tests: waiting on conditions, reading what the group committed, calling a
control server."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pyrallel_consumer.control.offset_codec import OffsetMap, decode_offset_map


async def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout_s`` (a bound, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


_COORDINATOR_NOT_READY = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                          KafkaError.COORDINATOR_NOT_AVAILABLE}
_COMMITTED_ATTEMPTS = 10


def http_sync(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """(status, JSON body) of one request to a control server; an HTTP error status is returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """(status, JSON body) of one request, sent from a worker thread so the consumer's loop keeps running."""
    return await asyncio.to_thread(http_sync, method, url, body, token)


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[tuple[int, str | None]]:
    """(offset, metadata) the group committed for each partition; offset -1001 when none.

    Asks again (up to 10 times, 0.2 s apart) while the group's coordinator is not ready: on a fresh broker the
    offsets topic is created by the first group and answers NOT_COORDINATOR for a few seconds, which librdkafka's
    ``committed()`` raises rather than retries."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    consumer = Consumer(conf)
    try:
        attempt = 1
        while True:
            try:
                tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            except KafkaException as exc:
                if exc.args[0].code() not in _COORDINATOR_NOT_READY or attempt == _COMMITTED_ATTEMPTS:
                    raise
                attempt += 1
                time.sleep(0.2)
            else:
                return [(tp.offset, tp.metadata) for tp in tps]
    finally:
        consumer.close()


def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """The group's committed offsets summed over the partitions: on a fresh topic without transactions, the number
    of records committed (the test waits for it to reach the number it produced)."""
    return sum(max(offset, 0) for offset, _ in committed(bootstrap, group, topic, partitions))


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


DeadLetters = dict[tuple[int, int], tuple[bytes | None, dict[str, bytes]]]
"""Dead-letter copies by the (partition, offset) of their source record: (the copy's value, its headers)."""


def dead_letters(bootstrap: str, topic: str, expected: int, extra_conf: dict[str, Any] | None = None) -> DeadLetters:
    """The copies in the dead-letter ``topic`` (read as :func:`read_all` reads), by the source record their
    ``x-source-partition`` / ``x-source-offset`` headers name; a source dead-lettered twice shows once."""
    return {(int(h["x-source-partition"]), int(h["x-source-offset"])): (m.value(), h)
            for m in read_all(bootstrap, topic, expected, extra_conf=extra_conf) for h in [dict(m.headers())]}
