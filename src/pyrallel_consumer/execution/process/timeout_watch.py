"""Finds worker processes whose running attempt outlived the handler timeout.

Killing the process is the only way to stop pure Python CPU code, so the supervisor arms this watch whenever it
hands a worker work; one timer on the event loop, re-armed at the next deadline while any worker holds items,
reads each worker's slot and reports the attempts that ran too long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pyrallel_consumer.execution.process.worker_handle import WorkerHandle


class TimeoutWatch:
    """One timer for all workers' attempts; runs between :meth:`start` and :meth:`stop`."""

    def __init__(self, timeout_s: float, workers: list[WorkerHandle],
                 on_expired: Callable[[WorkerHandle, int], None]) -> None:
        self._timeout_s = timeout_s
        self._workers = workers
        self._on_expired = on_expired
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop = None

    def arm(self, delay_s: float) -> None:
        """Check in ``delay_s``; while a check is due already, that one re-arms for any later deadline."""
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(max(delay_s, 0.001), self._check)

    def _check(self) -> None:
        """Report workers whose running attempt outlived the timeout; re-arm at the next deadline while any is busy."""
        self._timer = None
        timeout = self._timeout_s
        now = time.monotonic()
        wake = now + timeout
        busy = False
        for worker in list(self._workers):
            if not worker.held or worker.timed_out is not None:
                continue
            busy = True
            running = worker.running()
            if running is None:
                continue
            item_id, started = running
            if now - started >= timeout:
                self._on_expired(worker, item_id)
            else:
                wake = min(wake, started + timeout)
        if busy:
            self.arm(wake - now)
