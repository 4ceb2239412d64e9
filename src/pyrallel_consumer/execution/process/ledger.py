"""The process engine's book of work items: every item submitted and neither completed nor cancelled.

The engine adds and cancels items; the supervisor takes waiting items for its workers, puts back those a dead
worker held, and reports how each attempt ended. All of it runs on the event loop that started the engine, which
is also where retries are scheduled and completions delivered.

For a batch handler, a whole batch is one item (the supervisor sends, times and blames it as one), whose members are
the work items of its records; completions are still per member. The batch's id is its first member's id, which no
other item can have. Failed members are retried together in the same item, re-encoded without the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyrallel_consumer.deserialization import failed_field
from pyrallel_consumer.execution.engine import Completion, CompletionCallback, RetryPolicy
from pyrallel_consumer.execution.process.codec import encode_batch
from pyrallel_consumer.observability.log_events import HANDLER_FAILED, event_extra
from pyrallel_consumer.output import Output

if TYPE_CHECKING:
    from pyrallel_consumer.observability.tracing import Tracing

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
    members: dict[int, tuple[bytes, tuple[str, int, int]]] | None = None
    """A batch: its members neither completed nor cancelled (item id -> record payload, source), in batch order."""
    sent: tuple[int, ...] = ()
    """A batch: the members ``payload`` carries, in order: what the positions of a partial result refer to."""


class ItemLedger:
    """Items in flight, the queue of those waiting for a worker, their attempts and retries, and their end."""

    def __init__(self, retry: RetryPolicy, tracing: Tracing | None = None) -> None:
        self._retry = retry
        self._tracing = tracing
        """With ``tracing_enabled``: each retry is an event on the record's (or batch's) span."""
        self._items: dict[int, Item] = {}
        self._waiting: deque[Item] = deque()
        self._on_complete: CompletionCallback | None = None
        self._on_requeued: Callable[[], None] | None = None
        self._member_of: dict[int, Item] = {}
        """Item id of a batch member -> its batch."""
        self._batches = 0
        """Batches among ``_items``."""
        self.idle = asyncio.Event()
        """Set while no item is in flight."""
        self.idle.set()

    def open(self, on_complete: CompletionCallback, on_requeued: Callable[[], None]) -> None:
        """Deliver completions to ``on_complete`` from now on; call ``on_requeued`` when a retry is due."""
        self._on_complete = on_complete
        self._on_requeued = on_requeued

    def __len__(self) -> int:
        """Work items in flight: records, batch members counted one by one."""
        return len(self._items) - self._batches + len(self._member_of)

    def ids(self) -> list[int]:
        return [i for i, item in self._items.items() if item.members is None] + list(self._member_of)

    def add(self, item_id: int, payload: bytes, source: tuple[str, int, int] = ("", -1, -1)) -> Item:
        item = Item(item_id, payload, time.perf_counter(), source=source)
        self._items[item_id] = item
        self.idle.clear()
        return item

    def add_batch(self, members: list[tuple[int, bytes, tuple[str, int, int]]]) -> Item:
        """One item for a batch of (item id, record payload, source), in the order the handler gets them."""
        first_id, _, first_source = members[0]
        batch = Item(first_id, b"", time.perf_counter(), source=first_source,
                     members={item_id: (payload, source) for item_id, payload, source in members})
        self._encode(batch)
        self._items[first_id] = batch
        self._batches += 1
        for item_id, _, _ in members:
            self._member_of[item_id] = batch
        self.idle.clear()
        return batch

    @staticmethod
    def _encode(batch: Item) -> None:
        members = batch.members or {}
        batch.sent = tuple(members)
        batch.payload = encode_batch(batch.item_id, [payload for payload, _ in members.values()])

    def enqueue(self, item: Item) -> None:
        """Queue a new item behind those waiting."""
        self._waiting.append(item)

    def put_back(self, item: Item) -> None:
        """Queue an item again, ahead of those waiting."""
        self._waiting.appendleft(item)

    def cancel(self, item_ids: Iterable[int]) -> None:
        for item_id in item_ids:
            batch = self._member_of.pop(item_id, None)
            if batch is not None:
                if batch.members is not None:
                    batch.members.pop(item_id, None)
                    if not batch.members:
                        self._drop(batch)
                continue
            item = self._items.get(item_id)
            if item is None or item.members is not None:
                continue  # unknown, or the id of a batch whose first member is gone
            del self._items[item_id]
            if item.retry is not None:
                item.retry.cancel()
        if not self._items:
            self.idle.set()

    def _drop(self, batch: Item) -> None:
        """Take a batch out of flight once no member is left in it."""
        if self._items.get(batch.item_id) is batch:
            del self._items[batch.item_id]
            self._batches -= 1
        if batch.retry is not None:
            batch.retry.cancel()
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
            if item.members is not None and item.sent != tuple(item.members):
                self._encode(item)  # members were completed or cancelled since it was encoded
            if batch and size + len(item.payload) > max_bytes:
                self._waiting.appendleft(item)
                break
            batch.append(item)
            size += len(item.payload)
        return batch

    def attempt_ended(self, item: Item, error: tuple[str, str] | None, outputs: tuple[Output, ...] = (),
                      failures: tuple[tuple[int, str, str], ...] | None = None) -> None:
        """Count an attempt of a held item: complete it on success (with the ``outputs`` its handler returned),
        else retry it or, out of retries, fail it; a record that could not be deserialized fails at once.

        For a batch, ``failures`` names the positions a partial result failed: the other members complete now.
        """
        if item.members is not None:
            self._batch_attempt_ended(item, error, failures)
            return
        item.attempts += 1
        if error is None:
            self._finish(item, True, outputs=outputs)
            return
        if failed_field(error[0]) is not None:
            self._finish(item, False, *error)  # a poison record: the same bytes would fail again
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
            if self._tracing is not None:
                self._tracing.retrying(item.item_id, item.attempts, *error)
            delay = self._retry.delay_s(item.attempts)
            item.retry = asyncio.get_running_loop().call_later(delay, self._requeue, item)

    def _batch_attempt_ended(self, batch: Item, error: tuple[str, str] | None,
                             failures: tuple[tuple[int, str, str], ...] | None) -> None:
        batch.attempts += 1
        members = batch.members if batch.members is not None else {}
        failed: dict[int, tuple[str, str]] = {}
        if error is not None:
            failed = {member: error for member in batch.sent if member in members}
        elif failures:
            failed = {batch.sent[i]: (etype, msg) for i, etype, msg in failures
                      if 0 <= i < len(batch.sent) and batch.sent[i] in members}
        for member in [m for m in members if m not in failed]:
            self._complete_member(batch, member, None)
        for member in [m for m, (etype, _) in failed.items() if failed_field(etype) is not None]:
            self._complete_member(batch, member, failed.pop(member))  # poison: never retried
        if not failed:
            self._drop(batch)
            return
        retrying = batch.attempts <= self._retry.max_retries
        first = next(iter(failed))
        topic, partition, offset = members[first][1] if first in members else batch.source
        err_type, err_msg = failed[first]
        log.log(logging.DEBUG if retrying else logging.WARNING,
                "Attempt %d on a batch of %d record(s) failed for %d of them, first %s[%d]@%d (item %d): %s: %s%s",
                batch.attempts, len(batch.sent), len(failed), topic, partition, offset, first, err_type, err_msg,
                "; retrying them" if retrying else "; no retry left",
                extra=event_extra(HANDLER_FAILED, topic=topic, partition=partition, offset=offset,
                                  attempt=batch.attempts, retrying=retrying, error_type=err_type, error=err_msg))
        if not retrying:
            for member, member_error in failed.items():
                if member in members:
                    self._complete_member(batch, member, member_error)
            self._drop(batch)
        elif members:
            if self._tracing is not None:
                self._tracing.retrying(first, batch.attempts, err_type, err_msg, records=len(failed))
            batch.retry = asyncio.get_running_loop().call_later(self._retry.delay_s(batch.attempts), self._requeue,
                                                                batch)
        else:
            self._drop(batch)  # every failed member was cancelled by a completion callback meanwhile

    def _complete_member(self, batch: Item, member: int, error: tuple[str, str] | None) -> None:
        """Deliver one member's completion (the batch's attempts are its attempts) and take it out of the batch."""
        if batch.members is None or batch.members.pop(member, None) is None:
            return
        self._member_of.pop(member, None)
        completion = Completion(member, error is None, batch.attempts, time.perf_counter() - batch.submitted,
                                *(error or (None, None)))
        if self._on_complete is not None:
            try:
                self._on_complete(completion)
            except Exception:
                log.exception("The completion callback failed for item %d", member)

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
