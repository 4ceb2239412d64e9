"""Per-partition offset bookkeeping: what may be committed, and what is already done above it.

Offsets of one partition arrive in ascending order, so the received-but-unfinished offsets form a queue
whose head is the lowest incomplete offset: the only offset that may ever be committed. Completing a
record and advancing the head are amortised O(1); nothing on the per-record path scans the window.
Offsets that never arrive (transaction markers, compacted records) are not incomplete: the commit
position is the head of the queue, or one past the last offset received.

Assignments creates one PartitionOffsets per assignment; the Coordinator, CommitSchedule, Backpressure,
StuckGuard and the metrics use it, all on the event loop. Only the CommitPoints it computes cross to the
poller thread, which reads their fields and hands them back.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from pyrallel_consumer.control.offset_codec import (
    MAX_METADATA_CHARS,
    OffsetMap,
    OffsetMapError,
    decode_offset_map,
    encode_offset_ranges,
)

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class CommitPoint:
    """What to commit for one partition: the lowest incomplete offset and the map of done offsets above it."""

    topic: str
    partition: int
    epoch: int
    offset: int
    metadata: str
    tracker: PartitionOffsets = field(compare=False, repr=False)
    """The tracker that computed it: marked committed when the broker acknowledges it, current or not."""


class PartitionOffsets:
    """Offsets of one partition during one assignment (``epoch``).

    ``current`` answers whether this assignment is still the partition's live one on the event loop (False once
    revoked, lost or replaced by a newer assignment); ``revoking`` is set while a revocation settles. Both are
    set by ``control.assignments.Assignments`` only; every record queued or in flight refers to its tracker,
    so "is this record's assignment still current" is ``item.offsets.current``.
    """

    __slots__ = (
        "_ceiling",
        "_done",
        "_head_since",
        "_last_committed",
        "_last_metadata",
        "_last_received",
        "_last_state",
        "_map_too_long",
        "_max_window",
        "_pending",
        "_restored",
        "current",
        "epoch",
        "gap_offsets",
        "map_lossy",
        "metadata_bytes",
        "revoking",
        "start",
        "topic_partition",
    )

    def __init__(self, topic_partition: TopicPartitionKey, epoch: int, start: int | None,
                 restored: OffsetMap | None = None, *, max_window: int, end_at_assignment: int | None = None) -> None:
        self.topic_partition = topic_partition
        self._max_window = max_window
        """Longest offset map window written (max_pending_offsets): the next owner trusts no longer one."""
        self._ceiling = end_at_assignment if end_at_assignment is not None else -1
        """The partition's end (high watermark) at assignment: no commit goes beyond it or past the last received
        offset, whichever is higher."""
        self.epoch = epoch
        self.current = True
        self.revoking = False
        self.start = start
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._last_received = -1
        self._restored = restored
        self._head_since = time.monotonic()
        self._last_committed: tuple[int, str] | None = (start, "") if start is not None else None
        self._last_state: tuple[int, int, int, bool] | None = None
        self._last_metadata = ""
        """The offset map last encoded, and the state it was encoded in (commit offset, done count, ...)."""
        self.metadata_bytes = 0
        self._map_too_long = False
        """The last offset map encoded did not fit (warned once until one fits again)."""
        self.map_lossy = False
        """The last commit point's metadata leaves out records done above its offset (the map did not fit, or they
        lie beyond the window): they would run again after a restart. Exactly-once must not commit such a point."""
        self.gap_offsets = 0
        """Offsets skipped by the fetcher (transaction markers, compaction, retention): never incomplete."""

    def receive(self, offset: int) -> bool:
        """Record that ``offset`` was fetched; False when it must not be handled (done before, or seen)."""
        if offset <= self._last_received:
            return False
        if self.start is None:
            self.start = offset
        expected = self._last_received + 1 if self._last_received >= 0 else self.start
        if offset > expected:
            self.gap_offsets += offset - expected
        if not self._pending:
            self._head_since = time.monotonic()
        self._last_received = offset
        self._pending.append(offset)
        restored = self._restored
        if restored is not None:
            if restored.contains(offset):
                self.complete(offset)
                return False
            if offset >= restored.base + restored.length:
                self._restored = None
        return True

    def complete(self, offset: int) -> None:
        """Mark a received offset done and advance the head past every done offset."""
        pending = self._pending
        if not pending or offset < pending[0] or offset > self._last_received:
            return
        if offset != pending[0]:
            self._done.add(offset)
            return
        pending.popleft()
        done = self._done
        while pending and pending[0] in done:
            done.discard(pending.popleft())
        self._head_since = time.monotonic()

    def commit_offset(self) -> int | None:
        """The offset to commit: lowest incomplete, else one past the last received; None before any."""
        if self._pending:
            return self._pending[0]
        position = self._last_received + 1 if self._last_received >= 0 else self.start
        restored = self._restored
        if restored is not None and position is not None:
            for start, end in restored.completed:  # done in an earlier assignment, not fetched again yet
                if start <= position < end:
                    return end
        return position

    @property
    def last_received(self) -> int:
        """The highest offset fetched in this assignment; -1 before the first."""
        return self._last_received

    @property
    def tracked_offsets(self) -> int:
        """Offsets kept from the lowest incomplete one up to the last received (memory and commit work)."""
        return len(self._pending)

    @property
    def incomplete_count(self) -> int:
        return len(self._pending) - len(self._done)

    @property
    def completed_above_count(self) -> int:
        return len(self._done)

    def blocking(self) -> tuple[int, float] | None:
        """(lowest incomplete offset, seconds it has blocked the commit), or None when nothing blocks."""
        if not self._pending:
            return None
        return self._pending[0], time.monotonic() - self._head_since

    def _completed_ranges(self, commit_offset: int) -> Iterator[tuple[int, int]]:
        """Half-open ranges of done offsets above ``commit_offset``, in ascending order, lazily."""
        run_start = run_end = -1
        done = self._done
        for offset in self._pending:
            if offset in done:
                if offset == run_end:
                    run_end += 1
                else:
                    if run_start >= 0:
                        yield run_start, run_end
                    run_start, run_end = offset, offset + 1
        if run_start >= 0:
            yield run_start, run_end
        restored = self._restored
        if restored is not None:
            floor = max(self._last_received + 1, commit_offset + 1)
            for start, end in restored.completed:
                if end > floor:
                    yield max(start, floor), end

    def commit_point(self) -> CommitPoint | None:
        """The commit for this partition, or None when nothing changed since the last one."""
        offset = self.commit_offset()
        if offset is None:
            return None
        state = (offset, len(self._done), self._last_received, self._restored is None)
        if state == self._last_state:
            metadata = self._last_metadata  # nothing completed or arrived: skip walking the pending offsets
        else:
            metadata = self._encode_map(offset)
            self._last_state, self._last_metadata = state, metadata
        if self._last_committed == (offset, metadata):
            return None
        ceiling = max(self._ceiling, self._last_received + 1)
        if offset > ceiling:  # cannot happen with a trusted map; a commit past the log end would skip records
            log.error("Not committing %s[%d] at offset %d: beyond the partition's end (%d) as far as this consumer "
                      "knows", self.topic_partition[0], self.topic_partition[1], offset, ceiling)
            return None
        return CommitPoint(self.topic_partition[0], self.topic_partition[1], self.epoch, offset, metadata, self)

    def _encode_map(self, offset: int, limit: int = MAX_METADATA_CHARS) -> str:
        """The offset map of the records done above ``offset``; empty when there are none or it is too long."""
        window_end = self._last_received + 1
        if self._restored is not None:
            window_end = max(window_end, self._restored.base + self._restored.length)
        # The next owner distrusts a window longer than max_pending_offsets: leave the done offsets beyond it
        # out (handled again after a restart) rather than have the whole map ignored.
        natural_end = window_end
        window_end = min(window_end, offset + self._max_window)
        metadata = ""
        too_long = False
        self.map_lossy = False
        if natural_end > window_end:
            self.map_lossy = any(done >= window_end for done in self._done)
        if window_end > offset and (self._done or self._restored is not None):
            ranges = _clipped(self._completed_ranges(offset), window_end)
            encoded = encode_offset_ranges(offset, ranges, window_end, limit)
            if encoded is None:
                self.map_lossy = too_long = True
                if not self._map_too_long:  # commits follow completions closely: once, not at every commit
                    log.warning(
                        "Offset map of %s[%d] above offset %d exceeds %d characters; committing without it "
                        "(records done above the commit will be handled again after a restart) until it fits again",
                        self.topic_partition[0], self.topic_partition[1], offset, limit,
                    )
            else:
                metadata = encoded
        self._map_too_long = too_long
        return metadata

    def mark_committed(self, point: CommitPoint) -> None:
        self._last_committed = (point.offset, point.metadata)
        self.metadata_bytes = len(point.metadata)

    @property
    def last_committed_offset(self) -> int | None:
        return self._last_committed[0] if self._last_committed else None


def _clipped(ranges: Iterator[tuple[int, int]], window_end: int) -> Iterator[tuple[int, int]]:
    """``ranges`` (ascending) cut off at ``window_end``."""
    for start, end in ranges:
        if start >= window_end:
            return
        yield start, min(end, window_end)


def restore_map(topic_partition: TopicPartitionKey, offset: int, metadata: str | None,
                partition_end: int | None, max_window: int) -> OffsetMap | None:
    """The offset map committed with ``offset``, when it can be trusted; else None with one WARNING (fail closed).

    A map only says which records to skip, so a map that is wrong makes records go unhandled. It is trusted
    only when it could have been written by this library for this partition as it is: it decodes, it belongs
    to the committed offset, its window is no longer than ``max_window`` (max_pending_offsets: the writer
    never writes a longer one) and it ends at or before ``partition_end``, the partition's high watermark read
    at assignment (a map reaching beyond it would skip records that do not exist yet). Called on the event
    loop for each newly assigned partition.
    """
    if not metadata or offset < 0:
        return None
    reason = None
    restored = None
    try:
        restored = decode_offset_map(metadata, offset)
    except OffsetMapError as exc:
        reason = str(exc)
    if restored is None and reason is None:
        reason = "the metadata is not an offset map of this library (written by another client)"
    elif restored is not None:
        window_end = restored.base + restored.length
        if restored.length > max_window:
            reason = f"its window of {restored.length} offsets is longer than max_pending_offsets ({max_window})"
        elif partition_end is None:
            reason = "the partition's end could not be read to check the map against"
        elif window_end > partition_end:
            reason = f"it reaches offset {window_end - 1}, beyond the partition's end (high watermark {partition_end})"
    if reason is None:
        return restored
    log.warning(
        "Ignoring the offset map committed for %s[%d] at offset %d: %s; records above it are handled again",
        topic_partition[0], topic_partition[1], offset, reason,
    )
    return None
