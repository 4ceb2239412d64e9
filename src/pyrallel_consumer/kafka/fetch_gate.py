"""FetchGate: how many records the poller's next fetch may take, from what the event loop published.

The two threads meet here without calling into each other. The event loop publishes a ``QueueLevel`` after
every change of its queue (``publish``, one atomic attribute assignment by the Backpressure owner) and
reports what it took in from the poller (``ingested``, under a lock); the poller thread counts what it fetched
(``fetched``, under the lock) and asks ``next_fetch`` before each fetch. ``level.held`` also tells the poller
which partitions backpressure holds, for it to pause them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from pyrallel_consumer.control.offset_tracker import TopicPartitionKey

log = logging.getLogger(__name__)

_PAUSE_AFTER_S = 1.0
"""How long fetching may stay gated before every partition is paused so consume() can run again."""


@dataclass(frozen=True, slots=True)
class QueueLevel:
    """The event loop's queue as the fetch gate counts it; replaced as a whole, never changed."""

    records: int
    """Records queued and not dispatched, of partitions not held."""
    size: int
    """Bytes of their values."""
    held: frozenset[TopicPartitionKey]
    """Partitions backpressure holds: their fetching is paused and their queued records do not count."""


class FetchGate:
    """Fetches in batches while the records fetched and not yet dispatched leave room in the queue.

    While the queue is full the poller does not call ``consume()``, so librdkafka's own pre-fetch buffer
    stays intact: pausing partitions instead would make librdkafka discard what it had pre-fetched and wait
    for a new fetch round trip after the resume, starving the handlers every time. A gate closed for longer
    than ``_PAUSE_AFTER_S`` sets ``paused`` (the poller then pauses every partition and polls on, since a
    member that stops calling ``consume()`` for ``max.poll.interval.ms`` is evicted from the group); fetching
    resumes once half of the queue has drained.
    """

    def __init__(self, queue_max_messages: int, queue_max_bytes: int, batch_size: int = 500) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._max_messages = queue_max_messages
        self._max_bytes = queue_max_bytes
        self.batch_size = batch_size
        self.level = QueueLevel(0, 0, frozenset())
        """Published by the event loop; read by the poller thread."""
        self.paused = False
        """Poller thread: the gate stayed closed so long that every partition is paused."""
        self._uningested = 0
        self._uningested_bytes = 0
        self._lock = threading.Lock()
        self._avg_bytes: float | None = None
        """Average record value size seen, to size fetches against the bytes left; None before the first fetch."""
        self._closed_since: float | None = None

    # ---- event loop ------------------------------------------------------------------------------------

    def publish(self, level: QueueLevel) -> None:
        self.level = level

    def ingested(self, count: int, size: int) -> None:
        """The loop has taken ``count`` fetched records of ``size`` bytes into its own bookkeeping."""
        with self._lock:
            self._uningested -= count
            self._uningested_bytes -= size

    # ---- poller thread ---------------------------------------------------------------------------------

    def fetched(self, count: int, size: int) -> None:
        """The poller fetched ``count`` records of ``size`` bytes and hands them to the loop."""
        average = size / count
        self._avg_bytes = average if self._avg_bytes is None else 0.8 * self._avg_bytes + 0.2 * average
        with self._lock:
            self._uningested += count
            self._uningested_bytes += size

    def next_fetch(self) -> int:
        """How many records the next fetch may take; 0 while the loop's queue of records not dispatched is full.

        Large records shrink the batch so that one fetch cannot overrun queue_max_bytes by much. While
        ``paused`` it is the batch size: everything is paused, consume() hands out no records but serves the
        callbacks.
        """
        with self._lock:
            uningested, uningested_bytes = self._uningested, self._uningested_bytes
        level = self.level
        size = level.size + uningested_bytes
        fill = max((level.records + uningested) / self._max_messages, size / self._max_bytes)
        if self.paused:
            if fill <= 0.5:
                self.paused = False
                log.debug("Backpressure gate open again: fetching resumed")
            return self.batch_size
        if uningested >= 2 * self.batch_size:
            return 0  # the loop has not seen the last fetches: a partition it is about to hold could pile up
        if fill < 1.0:
            self._closed_since = None
            if self._avg_bytes is None:
                return 1  # sizes unknown yet: one record, then batches sized by what it weighed
            if self._avg_bytes < 1.0:
                return self.batch_size
            return max(1, min(self.batch_size, int((self._max_bytes - size) / self._avg_bytes)))
        now = time.monotonic()
        if self._closed_since is None:
            self._closed_since = now
        elif now - self._closed_since >= _PAUSE_AFTER_S:
            self._closed_since = None
            self.paused = True
            log.debug("Backpressure gate closed for %.1fs: every partition paused", _PAUSE_AFTER_S)
            return self.batch_size
        return 0
