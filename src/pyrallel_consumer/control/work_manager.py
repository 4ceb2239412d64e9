"""Virtual queues: one per ordering slot (key or partition), dispatched oldest-first.

A slot holds at most one record in flight (or its records of one batch, with a batch handler: see
``batch_queues``); the records behind it wait in the slot's queue. Slots whose head may run sit in a heap
ordered by arrival, so the oldest fetched record (and with it the lowest blocking offset of its partition) is
dispatched first. Every operation is O(log n) at most. UNORDERED
needs no slots: its records wait in one FIFO, which is arrival order too.

It is the one owner of "in flight": a record is in flight from ``next_ready`` until ``finish`` or ``requeue``,
and ``running(item_id)`` finds it. Used by the Coordinator (and read by Backpressure, the StuckGuard and the
metrics) on the event loop only.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from pyrallel_consumer.control.offset_tracker import PartitionOffsets, TopicPartitionKey
from pyrallel_consumer.deserialization import Deserialized
from pyrallel_consumer.execution.engine import WorkItem
from pyrallel_consumer.record import Ordering, Record

Slot = Hashable


@dataclass(slots=True)
class QueuedRecord(WorkItem):
    """A record waiting for or holding its slot, with the offset tracker of the assignment it was fetched in.

    It is the engine's work item itself (``item_id`` is its arrival number), so dispatch allocates nothing.
    """

    offsets: PartitionOffsets = field(repr=False)
    """Its assignment's tracker: ``offsets.current`` says whether that assignment is still this partition's."""
    slot: Slot = field(default=None)
    size: int = 0
    """What it weighs for queue_max_bytes: its value's length (what librdkafka's len(message) counts too)."""


def slot_of(record: Record, ordering: Ordering) -> Slot:
    """Which records must not overlap: same key (keyless: same partition), or same partition."""
    if ordering is Ordering.KEY and record.key is not None:
        return (record.topic, record.partition, record.key)
    return (record.topic, record.partition)


class WorkManager:
    """Holds fetched records until they may run and the records in flight; counts both per partition."""

    def __init__(self, ordering: Ordering) -> None:
        self._ordering = ordering
        self._unordered = ordering is Ordering.UNORDERED
        self._fifo: deque[QueuedRecord] = deque()
        """UNORDERED mode's only queue."""
        self._queues: dict[Slot, deque[QueuedRecord]] = {}
        self._busy: dict[Slot, int] = {}
        """Slots with records in flight -> how many (one, or the slot's records in one batch)."""
        self._ready: list[tuple[int, Slot]] = []
        self._seq = 0
        self.queued = 0
        self._in_flight: dict[int, QueuedRecord] = {}
        self._queued_by_tp: dict[TopicPartitionKey, int] = {}
        self._in_flight_by_tp: dict[TopicPartitionKey, int] = {}
        self.queued_bytes = 0
        """Bytes of the queued records' values."""
        self._queued_bytes_by_tp: dict[TopicPartitionKey, int] = {}
        self._apart: frozenset[TopicPartitionKey] = frozenset()
        self.queued_apart = 0
        """Queued records of the partitions given to ``count_apart`` (and their bytes, below)."""
        self.queued_bytes_apart = 0

    def add(self, record: Record, offsets: PartitionOffsets, deserialized: Deserialized = None) -> None:
        """Queue a fetched record (with what the poller deserialized of it, see ``WorkItem.deserialized``)."""
        self._seq += 1
        size = len(record.value) if record.value else 0
        if self._unordered:
            self._fifo.append(QueuedRecord(self._seq, record, offsets, size=size, deserialized=deserialized))
        else:
            slot = slot_of(record, self._ordering)
            item = QueuedRecord(self._seq, record, offsets, slot, size, deserialized=deserialized)
            queue = self._queues.get(slot)
            if queue is None:
                queue = self._queues[slot] = deque()
            queue.append(item)
            if len(queue) == 1 and slot not in self._busy:
                heapq.heappush(self._ready, (item.item_id, slot))
        self._count_queued((record.topic, record.partition), 1, size)

    def _count_queued(self, tp: TopicPartitionKey, records: int, size: int) -> None:
        """Add ``records`` (negative: take them away) of ``size`` bytes in all to the queued counts."""
        self.queued += records
        self.queued_bytes += size
        self._queued_by_tp[tp] = self._queued_by_tp.get(tp, 0) + records
        self._queued_bytes_by_tp[tp] = self._queued_bytes_by_tp.get(tp, 0) + size
        if tp in self._apart:
            self.queued_apart += records
            self.queued_bytes_apart += size

    def count_apart(self, partitions: frozenset[TopicPartitionKey]) -> None:
        """Total the queued records of ``partitions`` apart from now on (Backpressure's held ones): the level of the
        others is then known at every change of the queue without a walk over them (512 held partitions made
        that walk the largest cost of a completion)."""
        self._apart = partitions
        self.queued_apart = sum(self._queued_by_tp.get(tp, 0) for tp in partitions)
        self.queued_bytes_apart = sum(self._queued_bytes_by_tp.get(tp, 0) for tp in partitions)

    def next_ready(self) -> QueuedRecord | None:
        """The oldest record whose slot is free, now marked in flight; None when nothing may run."""
        item = self._next_unordered() if self._unordered else self._next_in_slot()
        if item is None:
            return None
        self._mark_in_flight(item)
        return item

    def _mark_in_flight(self, item: QueuedRecord) -> None:
        """Count a record taken off its queue as in flight (its slot is marked busy by the caller)."""
        tp = (item.record.topic, item.record.partition)
        self._count_queued(tp, -1, -item.size)
        self._in_flight[item.item_id] = item
        self._in_flight_by_tp[tp] = self._in_flight_by_tp.get(tp, 0) + 1

    def _next_unordered(self) -> QueuedRecord | None:
        return self._fifo.popleft() if self._fifo else None

    def _next_in_slot(self) -> QueuedRecord | None:
        while self._ready:
            seq, slot = heapq.heappop(self._ready)
            queue = self._queues.get(slot)
            if not queue or queue[0].item_id != seq or slot in self._busy:
                continue  # stale heap entry: its records were dropped
            item = queue.popleft()
            if not queue:
                del self._queues[slot]
            self._busy[slot] = 1
            return item
        return None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def running(self, item_id: int) -> QueuedRecord | None:
        """The record with this id if it is in flight; None once finished, requeued or never dispatched."""
        return self._in_flight.get(item_id)

    def in_flight_items(self) -> list[QueuedRecord]:
        return list(self._in_flight.values())

    def finish(self, item: QueuedRecord) -> None:
        """Take an in-flight record out of flight and free its slot; its successor becomes ready."""
        del self._in_flight[item.item_id]
        tp = (item.record.topic, item.record.partition)
        self._in_flight_by_tp[tp] -= 1
        if self._unordered:
            return
        left = self._busy.pop(item.slot, 1) - 1
        if left > 0:
            self._busy[item.slot] = left  # other records of its slot are still in flight (in the same batch)
            return
        queue = self._queues.get(item.slot)
        if queue:
            heapq.heappush(self._ready, (queue[0].item_id, item.slot))

    def requeue(self, item: QueuedRecord) -> None:
        """Put an in-flight record that was stopped unfinished back at the head of its slot.

        It runs again first when dispatch resumes, before the records of its key that arrived after it. Records of
        one slot (a batch's) are requeued newest first, so they keep their order.
        """
        self.finish(item)
        tp = (item.record.topic, item.record.partition)
        self._count_queued(tp, 1, item.size)
        if self._unordered:
            self._fifo.appendleft(item)
            return
        queue = self._queues.get(item.slot)
        if queue is None:
            queue = self._queues[item.slot] = deque()
        queue.appendleft(item)
        heapq.heappush(self._ready, (item.item_id, item.slot))

    def drop_partitions(self, partitions: Iterable[TopicPartitionKey]) -> int:
        """Forget queued (not in-flight) records of these partitions; return how many were dropped."""
        targets = set(partitions)
        dropped = 0
        doomed = [s for s, q in self._queues.items() if (q[0].record.topic, q[0].record.partition) in targets]
        for slot in doomed:
            dropped += len(self._queues.pop(slot))
        if self._fifo:
            kept = deque(q for q in self._fifo if (q.record.topic, q.record.partition) not in targets)
            dropped += len(self._fifo) - len(kept)
            self._fifo = kept
        for tp in targets:
            records, size = self._queued_by_tp.pop(tp, 0), self._queued_bytes_by_tp.pop(tp, 0)
            self.queued_bytes -= size
            if tp in self._apart:
                self.queued_apart -= records
                self.queued_bytes_apart -= size
        self.queued -= dropped
        return dropped

    def in_flight_of(self, tp: TopicPartitionKey) -> int:
        return self._in_flight_by_tp.get(tp, 0)

    def queued_of(self, tp: TopicPartitionKey) -> int:
        return self._queued_by_tp.get(tp, 0)

    def queued_bytes_of(self, tp: TopicPartitionKey) -> int:
        return self._queued_bytes_by_tp.get(tp, 0)
