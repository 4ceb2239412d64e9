"""Backpressure: the one owner of which partitions are held (their fetching paused) and of what the fetch
gate sees of the event loop's queue.

The Coordinator tells it, on the event loop, which partitions got records (``update``), which records finished
(``recheck``), which partitions are gone (``forget``) and when the consumer stops (``stop``), and asks it to
``publish`` after every change of the queue. Publishing assigns one immutable QueueLevel to the FetchGate,
which the poller thread reads before each fetch; the poller pauses in librdkafka the partitions that level
names as held. Nobody else keeps a held set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.control.offset_tracker import TopicPartitionKey
from pyrallel_consumer.control.work_manager import WorkManager
from pyrallel_consumer.kafka.events import partition_names
from pyrallel_consumer.kafka.fetch_gate import FetchGate, QueueLevel

log = logging.getLogger(__name__)


class Backpressure:
    """Holds a partition at 1.5x its share of the queue (or behind a blocking record) and releases it at its share.

    A fetch hands out one partition's records in long runs (a whole record batch), so a queue filled by
    one or two partitions offers only their keys and the handlers starve. Holding such a partition takes
    it out of the poller's gate, which bounds the other partitions' queued records, so their records
    come in and the handlers see every partition's keys. Balanced partitions reach the gate before
    1.5x their share and are not paused, so librdkafka rarely drops pre-fetched data on a pause. Resuming
    at the full share leaves the fetch after the resume time to arrive before the partition's keys run dry
    (at half a share, a 100-key run lost 250-400 ms per partition now and then).

    A partition whose lowest incomplete record blocks while later ones complete is held too once it tracks
    more than max_pending_offsets offsets, until that record is done: otherwise its bookkeeping, and the
    walk over it at every commit, would grow for as long as the record blocks.
    """

    def __init__(self, config: ConsumerConfig, assignments: Assignments, work: WorkManager, gate: FetchGate) -> None:
        self._config = config
        self._assignments = assignments
        self._work = work
        self._gate = gate
        self.held: frozenset[TopicPartitionKey] = frozenset()
        """Replaced, never changed: the gate's level shares it, and the poller compares it by identity."""
        self._stopping = False

    def stop(self) -> None:
        """The consumer stops (every partition is paused): nothing is held or released any more."""
        self._stopping = True

    def update(self, touched: Iterable[TopicPartitionKey]) -> None:
        """Hold or release the ``touched`` partitions by their queued records and tracked offsets; publish."""
        if self._stopping:
            self.publish()
            return
        count = len(self._assignments)
        share = self._share(count)
        byte_share = max(1, self._config.queue_max_bytes // max(1, count))
        window = self._config.max_pending_offsets
        work, held = self._work, self.held
        to_hold, to_release = [], []
        for tp in touched:
            offsets = self._assignments.of(tp)
            wide = offsets is not None and offsets.tracked_offsets > window
            queued, size = work.queued_of(tp), work.queued_bytes_of(tp)
            if tp not in held:
                if wide or (count >= 2 and (queued >= share + share // 2 or size >= byte_share + byte_share // 2)):
                    to_hold.append(tp)
            elif not wide and queued <= share and size <= byte_share:
                to_release.append(tp)
        if to_hold:
            log.info("Backpressure: pausing fetch of %s (1.5x its share of the queue, or max_pending_offsets "
                     "tracked behind a blocking record)", partition_names(to_hold))
        if to_release:
            log.info("Backpressure released: resuming fetch of %s", partition_names(to_release))
        if to_hold or to_release:
            self._hold((held | frozenset(to_hold)) - frozenset(to_release))
        self.publish()

    def _share(self, partitions: int) -> int:
        """A partition's share of queue_max_messages when ``partitions`` are assigned."""
        return max(1, self._config.queue_max_messages // max(1, partitions))

    def _hold(self, held: frozenset[TopicPartitionKey]) -> None:
        self.held = held
        self._work.count_apart(held)

    def recheck(self, tp: TopicPartitionKey | None = None) -> None:
        """Re-decide the held partitions (only ``tp``, if given and held): something left the queue, or the
        partitions' shares changed."""
        if tp is None:
            self.update(self.held)
        elif tp in self.held and self._work.queued_of(tp) <= self._share(len(self._assignments)):
            self.update((tp,))  # only then may it be released: at 512 held partitions most rechecks stop above

    def forget(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """These partitions are no longer assigned: no longer held."""
        gone = self.held.intersection(partitions)
        if gone:
            self._hold(self.held - gone)

    def publish(self) -> None:
        """Give the fetch gate the queued records and bytes of the partitions not held, and the held set."""
        work, held = self._work, self.held
        records, size = work.queued - work.queued_apart, work.queued_bytes - work.queued_bytes_apart
        level = self._gate.level
        if (level.records, level.size) != (records, size) or level.held is not held:
            self._gate.publish(QueueLevel(records, size, held))
