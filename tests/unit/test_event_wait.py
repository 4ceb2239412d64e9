"""wait_event: a task cancelled in the loop turn its event is set stops, as stop() needs of the commit task."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from pyrallel_consumer.event_wait import wait_event

pytestmark = pytest.mark.unit

Wait = Callable[[asyncio.Event, float], Awaitable[object]]


async def _loop_cancelled_as_its_event_is_set(wait: Wait) -> bool:
    """A task waiting for an event in a loop (like the commit task) is cancelled right after the event is set;
    True when it stopped."""
    event = asyncio.Event()

    async def waiter() -> None:
        while True:
            await wait(event, 10.0)
            event.clear()

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)  # the task is waiting now
    event.set()
    await asyncio.sleep(0)  # the wait's inner task ends in this turn...
    task.cancel()  # ...while its cancellation arrives
    done, _ = await asyncio.wait([task], timeout=2.0)
    if not done:
        task.cancel()  # let the test end
        await asyncio.gather(task, return_exceptions=True)
    return task in done and task.cancelled()


async def test_a_cancellation_in_the_turn_the_event_is_set_stops_the_waiting_task() -> None:
    stopped = [await _loop_cancelled_as_its_event_is_set(wait_event) for _ in range(20)]
    assert all(stopped)


async def test_it_answers_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 10.0) is True
