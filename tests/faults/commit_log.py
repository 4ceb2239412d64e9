"""Every offset a group committed, in the order the broker wrote them, read back from ``__consumer_offsets``.

The fault tests judge "a committed offset never moves backwards" on this record rather than on samples of the
group's committed offsets: a backwards write repaired by the next commit 100 ms later is in the log, and a
sampler would miss it. Only the fields the checks need are decoded: the record key of an offset commit (key
versions 0 and 1: int16 version, group, topic, int32 partition; non-flexible strings) and the offset, the int64
after the value's int16 version in every value version; with the record's timestamp, when the coordinator wrote it.
"""

from __future__ import annotations

import itertools
import struct
from collections import defaultdict
from typing import NamedTuple

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition

OFFSETS_TOPIC = "__consumer_offsets"


class Commit(NamedTuple):
    """One offset commit as the group's coordinator wrote it."""

    offset: int
    written_at: float | None
    """The commit record's timestamp in seconds (``time.time()``'s scale): the coordinator's clock when it wrote the
    commit, which ``__consumer_offsets`` keeps (CreateTime). None if the record had none (not from a broker that
    writes message format v2). The DLQ fault test judges each commit against the DLQ copies' append times by it."""


def _string(data: bytes, at: int) -> tuple[str, int]:
    (length,) = struct.unpack_from(">h", data, at)
    at += 2
    return data[at:at + length].decode(), at + length


def _commit_key(key: bytes) -> tuple[str, str, int] | None:
    """(group, topic, partition) of an offset commit's key; None for the group metadata records (version 2+)."""
    (version,) = struct.unpack_from(">h", key, 0)
    if version not in (0, 1):
        return None
    group, at = _string(key, 2)
    topic, at = _string(key, at)
    (partition,) = struct.unpack_from(">i", key, at)
    return group, topic, partition


def committed_history(bootstrap: str, group: str, topic: str, timeout_s: float = 30.0) -> dict[int, list[Commit]]:
    """Per partition of ``topic``, the commits ``group`` wrote, oldest first (tombstones skipped), read up to the
    log end each ``__consumer_offsets`` partition had when this began. A partition is read once the reader's
    position reaches that end, not once a record at end - 1 arrives: the last entry may be a transaction marker,
    which the reader steps over without returning it. The fault verdict (:meth:`FaultRun.verdict`) calls it after
    the drained stop."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group}-commit-log-reader",
                       "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    history: dict[int, list[Commit]] = defaultdict(list)
    try:
        partitions = reader.list_topics(OFFSETS_TOPIC, timeout=timeout_s).topics[OFFSETS_TOPIC].partitions
        ends = {p: reader.get_watermark_offsets(TopicPartition(OFFSETS_TOPIC, p), timeout=timeout_s)[1]
                for p in partitions}
        remaining = {p for p, end in ends.items() if end > 0}
        reader.assign([TopicPartition(OFFSETS_TOPIC, p, 0) for p in remaining])
        empty_polls = 0
        while remaining and empty_polls < int(timeout_s / 0.5):
            batch = reader.consume(num_messages=10_000, timeout=0.5)
            empty_polls = 0 if batch else empty_polls + 1
            for msg in batch:
                if msg.error() is not None:
                    continue
                key, value = msg.key(), msg.value()
                parsed = _commit_key(key) if key else None
                if parsed is None or value is None or parsed[:2] != (group, topic):
                    continue
                kind, millis = msg.timestamp()
                written_at = None if kind == TIMESTAMP_NOT_AVAILABLE else millis / 1000
                history[parsed[2]].append(Commit(struct.unpack_from(">q", value, 2)[0], written_at))
            for tp in reader.position([TopicPartition(OFFSETS_TOPIC, p) for p in remaining]):
                if tp.offset >= ends[tp.partition]:
                    remaining.discard(tp.partition)
        if remaining:
            raise TimeoutError(f"{OFFSETS_TOPIC} partitions {sorted(remaining)} not read to their end")
    finally:
        reader.close()
    return dict(history)


def backwards_moves(history: dict[int, list[Commit]]) -> list[str]:
    """Each write of an offset lower than the one before it for the same partition."""
    return [f"p{p}: {before.offset} -> {after.offset}" for p, commits in sorted(history.items())
            for before, after in itertools.pairwise(commits) if after.offset < before.offset]
