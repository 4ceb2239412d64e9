"""Batcher: decides when ready records go to a batch handler, and hands them to the engine as one batch.

A batch goes at once when it can be full: ``batch_max_records`` takeable records (or ``batch_max_bytes`` of values)
and room for them under ``max_in_flight``. Otherwise the first dispatch that finds records waiting starts a linger
timer of ``batch_linger_ms``; when it fires, whatever is takeable goes as a smaller batch (as much as the room
allows). So lingering adds at most ``batch_linger_ms`` to a record's wait, and nothing when there is a backlog.
Which records a batch holds, and the ordering rule, is the BatchWorkManager's business.

The Coordinator creates one when the consumer has a batch handler and calls ``dispatch`` wherever it would
dispatch records (fetched records, completions, resume); the timer calls ``wake`` (the Coordinator's dispatch,
which checks that processing is active). Everything runs on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.control.batch_queues import BatchWorkManager
from pyrallel_consumer.control.observer import ConsumerObserver
from pyrallel_consumer.execution.engine import ExecutionEngine

if TYPE_CHECKING:
    from pyrallel_consumer.observability.tracing import Tracing


class Batcher:
    """Forms batches from a BatchWorkManager and submits them; owns the linger timer."""

    def __init__(self, config: ConsumerConfig, work: BatchWorkManager, engine: ExecutionEngine,
                 observer: ConsumerObserver, wake: Callable[[], None], tracing: Tracing | None = None) -> None:
        self._limit = config.max_in_flight
        self._max_records = min(config.batch_max_records, config.max_in_flight)
        self._max_bytes = config.batch_max_bytes
        self._linger_s = config.batch_linger_ms / 1000
        self._work = work
        self._engine = engine
        self._observer = observer
        self._wake = wake
        self._tracing = tracing
        """With ``tracing_enabled``: one span per batch, linked to its records."""
        self._timer: asyncio.TimerHandle | None = None
        self._due = False
        """The linger timer fired: the next dispatch sends what it finds, full or not."""

    def dispatch(self) -> None:
        """Submit every batch that may go now; start the linger timer for records that wait to fill one."""
        work = self._work
        while True:
            ready = work.takeable
            if ready <= 0:
                self._reset()
                return
            room = self._limit - work.in_flight
            if room <= 0:
                self._reset()  # a new linger starts when room comes back, so no batch of one takes the first slot
                return
            full = ready >= self._max_records or work.takeable_bytes >= self._max_bytes
            if self._linger_s > 0 and not self._due and (not full or room < min(ready, self._max_records)):
                self._arm()
                return
            batch = work.take_batch(min(self._max_records, room), self._max_bytes)
            self._reset()
            if not batch:
                return
            if self._tracing is not None:
                self._tracing.batch_started(batch)
            self._engine.submit_batch(batch)
            self._observer.batch_dispatched(len(batch))

    def close(self) -> None:
        """The consumer stops: no timer may fire any more."""
        self._reset()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._due = True
        self._wake()

    def _reset(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = False
