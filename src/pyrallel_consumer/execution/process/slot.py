"""The shared-memory slot in which a worker process publishes the attempt it is running.

The worker (``worker``, main thread) writes it around every handler call; the parent (``worker_handle``, on the
event loop's thread) reads it to find an attempt that outlived the timeout and, after a worker died, the item it
was running or had started last. Nothing locks it: the running id is written last and cleared first, and a
reader that sees it change while reading takes the worker to be between items.
"""

from __future__ import annotations

import ctypes
import time
from multiprocessing.context import SpawnContext
from typing import Final

Slot = ctypes.Array[ctypes.c_double]

_RUNNING: Final = 0  # id of the running item, -1 between items
_STARTED: Final = 1  # time.monotonic() when that attempt started
_LAST: Final = 2  # id of the last item started, -1 before the first


def new_slot(ctx: SpawnContext) -> Slot:
    return ctx.RawArray(ctypes.c_double, [-1.0, 0.0, -1.0])


def attempt_begins(slot: Slot, item_id: int) -> None:
    slot[_LAST] = item_id
    slot[_STARTED] = time.monotonic()
    slot[_RUNNING] = item_id


def attempt_ends(slot: Slot) -> None:
    slot[_RUNNING] = -1.0


def running(slot: Slot) -> tuple[int, float] | None:
    """(item id, attempt start); None between items or on a torn read."""
    item_id = slot[_RUNNING]
    if item_id < 0:
        return None
    started = slot[_STARTED]
    if slot[_RUNNING] != item_id:
        return None
    return int(item_id), started


def last_started(slot: Slot) -> int:
    """Id of the last item started (-1 for none); read after the worker died, when nothing writes the slot."""
    return int(slot[_LAST])
