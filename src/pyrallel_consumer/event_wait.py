"""wait_event: the one way the library waits for an asyncio.Event with a timeout.

Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives in the same loop turn as the
event (CPython gh-86296, fixed in 3.12), so the commit task, cancelled by stop() just as a completion woke it, went on
looping and stop() never returned (seen in 4 of ~70 benchmark runs). ``asyncio.timeout`` passes the cancellation on.
Called on the event loop by the control plane (commit schedule, progress, lifecycle), the process engine's shutdown
and the share consumer.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passed; True when it was set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
