"""BatchWorkManager: the work manager of a consumer with a batch handler, which hands out batches, not records.

A batch takes the oldest records whose slot is free, up to a count and a byte bound, several of one slot if they
are next in its queue (so a batch holds many keys, each key's records in offset order). Every slot it took records
from stays busy until all of them finished, so the slot's next batch waits for this one. It also counts the
records that a batch could take now (``takeable``): queued records whose slot is free, which is what the Batcher
decides by without walking the queues.

Used by the Coordinator and the Batcher on the event loop only.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from pyrallel_consumer.control.offset_tracker import PartitionOffsets, TopicPartitionKey
from pyrallel_consumer.control.work_manager import QueuedRecord, Slot, WorkManager, slot_of
from pyrallel_consumer.deserialization import Deserialized
from pyrallel_consumer.record import Ordering, Record


class BatchWorkManager(WorkManager):
    """A WorkManager that also forms batches (``take_batch``) and counts the records they could take now."""

    def __init__(self, ordering: Ordering) -> None:
        super().__init__(ordering)
        self._blocked = 0
        """Queued records behind a busy slot: a batch cannot take them now."""
        self._blocked_bytes = 0
        self._slot_bytes: dict[Slot, int] = {}
        """Bytes queued per slot (KEY and PARTITION modes)."""

    @property
    def takeable(self) -> int:
        """Queued records a batch could take now (their slot has nothing in flight)."""
        return self.queued - self._blocked

    @property
    def takeable_bytes(self) -> int:
        return self.queued_bytes - self._blocked_bytes

    def add(self, record: Record, offsets: PartitionOffsets, deserialized: Deserialized = None) -> None:
        super().add(record, offsets, deserialized)
        if self._unordered:
            return
        slot = slot_of(record, self._ordering)
        size = len(record.value) if record.value else 0
        self._slot_bytes[slot] = self._slot_bytes.get(slot, 0) + size
        if slot in self._busy:
            self._blocked += 1
            self._blocked_bytes += size

    def take_batch(self, max_records: int, max_bytes: int) -> list[QueuedRecord]:
        """The oldest takeable records, now in flight: at most ``max_records`` and ``max_bytes`` of values (a first
        record larger than that goes alone). Each slot's records come in offset order; their slots stay busy until
        every one of them finished."""
        batch: list[QueuedRecord] = []
        size = 0
        if self._unordered:
            fifo = self._fifo
            while fifo and len(batch) < max_records:
                item = fifo[0]
                if batch and size + item.size > max_bytes:
                    break
                batch.append(fifo.popleft())
                size += item.size
        else:
            ready, queues, busy, slot_bytes = self._ready, self._queues, self._busy, self._slot_bytes
            taken: dict[Slot, int] = {}
            while ready and len(batch) < max_records:
                seq, slot = ready[0]
                queue = queues.get(slot)
                if not queue or queue[0].item_id != seq or slot in busy:
                    heapq.heappop(ready)  # stale entry: dropped records, or a slot busy with an earlier batch
                    continue
                item = queue[0]
                if batch and size + item.size > max_bytes:
                    break
                heapq.heappop(ready)
                queue.popleft()
                batch.append(item)
                size += item.size
                taken[slot] = taken.get(slot, 0) + 1
                slot_bytes[slot] -= item.size
                if queue:
                    heapq.heappush(ready, (queue[0].item_id, slot))  # its next record may join this batch too
                else:
                    del queues[slot]
                    del slot_bytes[slot]
            for slot, count in taken.items():
                busy[slot] = count
                rest = queues.get(slot)
                if rest:
                    self._blocked += len(rest)
                    self._blocked_bytes += slot_bytes[slot]
        for item in batch:
            self._mark_in_flight(item)
        return batch

    def finish(self, item: QueuedRecord) -> None:
        super().finish(item)
        if self._unordered or item.slot in self._busy:
            return
        rest = self._queues.get(item.slot)  # the slot is free now: its queue is takeable again
        if rest:
            self._blocked -= len(rest)
            self._blocked_bytes -= self._slot_bytes.get(item.slot, 0)

    def requeue(self, item: QueuedRecord) -> None:
        super().requeue(item)  # finish() above, then back at the head of its slot
        if self._unordered:
            return
        self._slot_bytes[item.slot] = self._slot_bytes.get(item.slot, 0) + item.size
        if item.slot in self._busy:  # other records of its batch are still in flight
            self._blocked += 1
            self._blocked_bytes += item.size

    def drop_partitions(self, partitions: Iterable[TopicPartitionKey]) -> int:
        targets = set(partitions)
        if not self._unordered:
            for slot, queue in self._queues.items():
                if (queue[0].record.topic, queue[0].record.partition) in targets:
                    if slot in self._busy:
                        self._blocked -= len(queue)
                        self._blocked_bytes -= self._slot_bytes.get(slot, 0)
                    self._slot_bytes.pop(slot, None)
        return super().drop_partitions(targets)
