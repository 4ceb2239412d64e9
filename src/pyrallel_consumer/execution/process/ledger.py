"""The process engine's book of work items: every item submitted and neither completed nor cancelled.

The engine adds and cancels items; the supervisor takes waiting items for its workers, puts back those a dead
worker held, and reports how each attempt ended. All of it runs on the event loop that started the engine, which
is also where retries are scheduled and completions delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pyrallel_consumer.execution.engine import Completion, CompletionCallback, RetryPolicy
from pyrallel_consumer.observability.log_events import HANDLER_FAILED, event_extra
from pyrallel_consumer.output import Output

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Item:
    """One work item as the parent keeps it: its record encoded once at submit, and its attempts so far."""

    item_id: int
    payload: bytes
    submitted: float
    attempts: int = 0
    retry: asyncio.TimerHandle | None = None
    source: tuple[str, int, int] = ("", -1, -1)
    """The record's topic, partition and offset, for log lines."""


class ItemLedger:
    """Items in flight, the queue of those waiting for a worker, their attempts and retries, and their end."""

    def __init__(self, retry: RetryPolicy) -> None:
        self._retry = retry
        self._items: dict[int, Item] = {}
        self._waiting: deque[Item] = deque()
        self._on_complete: CompletionCallback | None = None
        self._on_requeued: Callable[[], None] | None = None
        self.idle = asyncio.Event()
        """Set while no item is in flight."""
        self.idle.set()

    def open(self, on_complete: CompletionCallback, on_requeued: Callable[[], None]) -> None:
        """Deliver completions to ``on_complete`` from now on; call ``on_requeued`` when a retry is due."""
        self._on_complete = on_complete
        self._on_requeued = on_requeued

    def __len__(self) -> int:
        return len(self._items)

    def ids(self) -> list[int]:
        return list(self._items)

    def add(self, item_id: int, payload: bytes, source: tuple[str, int, int] = ("", -1, -1)) -> Item:
        item = Item(item_id, payload, time.perf_counter(), source=source)
        self._items[item_id] = item
        self.idle.clear()
        return item

    def enqueue(self, item: Item) -> None:
        """Queue a new item behind those waiting."""
        self._waiting.append(item)

    def put_back(self, item: Item) -> None:
        """Queue an item again, ahead of those waiting."""
        self._waiting.appendleft(item)

    def cancel(self, item_ids: Iterable[int]) -> None:
        for item_id in item_ids:
            item = self._items.pop(item_id, None)
            if item is not None and item.retry is not None:
                item.retry.cancel()
        if not self._items:
            self.idle.set()

    def holds(self, item: Item) -> bool:
        """Whether ``item`` is still in flight (not completed, not cancelled)."""
        return self._items.get(item.item_id) is item

    def waiting(self) -> int:
        """Length of the queue, cancelled items that were not taken yet included."""
        return len(self._waiting)

    def take(self, count: int, max_bytes: int) -> list[Item]:
        """Up to ``count`` waiting items, at most ``max_bytes`` of payload unless the first alone is larger."""
        batch: list[Item] = []
        size = 0
        while self._waiting and len(batch) < count:
            item = self._waiting.popleft()
            if not self.holds(item):
                continue  # cancelled while it waited
            if batch and size + len(item.payload) > max_bytes:
                self._waiting.appendleft(item)
                break
            batch.append(item)
            size += len(item.payload)
        return batch

    def attempt_ended(self, item: Item, error: tuple[str, str] | None, outputs: tuple[Output, ...] = ()) -> None:
        """Count an attempt of a held item: complete it on success (with the ``outputs`` its handler returned),
        else retry it or, out of retries, fail it."""
        item.attempts += 1
        if error is None:
            self._finish(item, True, outputs=outputs)
            return
        retrying = item.attempts <= self._retry.max_retries
        topic, partition, offset = item.source
        # No stack: the worker process sends the exception's type and message only.
        log.log(logging.DEBUG if retrying else logging.WARNING,
                "Attempt %d on %s[%d]@%d (item %d) failed: %s: %s%s", item.attempts, topic, partition, offset,
                item.item_id, *error, "; retrying" if retrying else "; no retry left",
                extra=event_extra(HANDLER_FAILED, topic=topic, partition=partition, offset=offset,
                                  attempt=item.attempts, retrying=retrying, error_type=error[0], error=error[1]))
        if not retrying:
            self._finish(item, False, *error)
        else:
            delay = self._retry.delay_s(item.attempts)
            item.retry = asyncio.get_running_loop().call_later(delay, self._requeue, item)

    def reject(self, item: Item, error_type: str, message: str) -> None:
        """Fail an item that cannot run, charging one attempt; nothing if it was cancelled meanwhile."""
        if self.holds(item):
            item.attempts = 1
            self._finish(item, False, error_type, message)

    def _requeue(self, item: Item) -> None:
        item.retry = None
        if self.holds(item):
            self.put_back(item)
            if self._on_requeued is not None:
                self._on_requeued()

    def _finish(self, item: Item, ok: bool, error_type: str | None = None, message: str | None = None,
                outputs: tuple[Output, ...] = ()) -> None:
        del self._items[item.item_id]
        if not self._items:
            self.idle.set()
        completion = Completion(item.item_id, ok, item.attempts, time.perf_counter() - item.submitted,
                                error_type, message, outputs)
        if self._on_complete is not None:
            try:
                self._on_complete(completion)
            except Exception:
                log.exception("The completion callback failed for item %d", item.item_id)
