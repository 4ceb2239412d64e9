"""Progress: lets the Coordinator's waits (drain, suspension, revocation) wake when something finished.

The Coordinator calls ``made`` when a record finishes or is cancelled and when assignments end, and awaits
``until`` in stop(), suspend() and on_revoked(); all on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pyrallel_consumer.event_wait import wait_event


class Progress:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def made(self) -> None:
        self._event.set()

    async def until(self, done: Callable[[], bool], timeout_s: float) -> None:
        """Wait until ``done()`` holds (checked after each progress, at least every 0.5 s) or the time is up."""
        deadline = time.monotonic() + timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._event.clear()
            await wait_event(self._event, min(remaining, 0.5))
