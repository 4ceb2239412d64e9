"""AsyncExecutionEngine: one asyncio task per in-flight record (or batch), for I/O-bound async handlers."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyrallel_consumer.batch import InvalidBatchResultError, batch_failures
from pyrallel_consumer.execution.engine import (
    Completion,
    CompletionCallback,
    EngineError,
    ExecutionEngine,
    HandlerTimeoutError,
    RetryPolicy,
    WorkItem,
    describe_error,
)
from pyrallel_consumer.observability.log_events import HANDLER_FAILED, event_extra
from pyrallel_consumer.output import Output, outputs_of
from pyrallel_consumer.record import Record

if TYPE_CHECKING:
    from pyrallel_consumer.observability.tracing import Tracing

log = logging.getLogger(__name__)

AsyncHandler = Callable[[Record], Awaitable[list[Output] | None]]
AsyncBatchHandler = Callable[[list[Record]], Awaitable[object]]
"""``async def handle_batch(records: list[Record]) -> BatchResult | None``."""


@dataclass(eq=False, slots=True)
class _Batch:
    """The items of one submit_batch() not completed nor cancelled yet, in batch order; its task runs them."""

    live: dict[int, WorkItem]


class AsyncExecutionEngine(ExecutionEngine):
    """Runs ``async def handle(record)`` on the consumer's event loop.

    Two things keep the per-record cost low. Attempt timeouts are enforced by one watchdog that sweeps
    the in-flight attempts a few times per timeout period, instead of a timer per attempt. And when a
    completion lets the control plane dispatch the next record (typically the next one of the same key),
    the finishing task runs it itself instead of creating a task that would start one loop turn later.

    With ``batch=True`` the handler is a batch handler and the engine takes ``submit_batch``: one task per batch
    runs its attempts, each bounded by ``asyncio.timeout`` (one timer per batch is cheap, unlike one per record).

    With ``tracing`` each attempt runs with the record's (or batch's) span current, so the handler's own spans are
    its children, and each retry is an event on it.
    """

    def __init__(self, handler: AsyncHandler | AsyncBatchHandler, retry: RetryPolicy, *, batch: bool = False,
                 tracing: Tracing | None = None) -> None:
        if not callable(handler):
            raise EngineError("handler must be an async function: async def handle(record) -> None")
        self._handler: Callable[..., Awaitable[object]] = handler
        self._batch = batch
        self._batches: dict[int, _Batch] = {}
        """Item id -> the batch it belongs to, for the items of submit_batch()."""
        self._retry = retry
        self._tracing = tracing
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._attempt_started: dict[int, float] = {}
        self._timed_out: set[int] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._on_complete: CompletionCallback | None = None
        self._closed = False
        self._handoff_task: asyncio.Task[None] | None = None
        self._handoff: WorkItem | None = None

    async def start(self, on_complete: CompletionCallback) -> None:
        if self._batch and not inspect.iscoroutinefunction(self._handler):
            raise EngineError(
                f"the async engine needs an async batch handler; {self._handler!r} is not a coroutine function: "
                "async def handle_batch(records: list[Record]) -> BatchResult | None (use engine='process' for "
                "synchronous, CPU-bound handlers)"
            )
        if not inspect.iscoroutinefunction(self._handler):
            raise EngineError(
                f"the async engine needs an async handler; {self._handler!r} is not a coroutine function "
                "(use engine='process' for synchronous, CPU-bound handlers)"
            )
        self._on_complete = on_complete
        self._watchdog = asyncio.get_running_loop().create_task(self._enforce_timeouts())

    def submit(self, item: WorkItem) -> None:
        if self._on_complete is None or self._closed:
            raise EngineError("submit() before start() or after shutdown()")
        if self._batch:
            raise EngineError("this engine runs a batch handler: use submit_batch()")
        if self._handoff_task is not None:
            self._tasks[item.item_id] = self._handoff_task
            self._handoff_task, self._handoff = None, item
            return
        self._tasks[item.item_id] = asyncio.get_running_loop().create_task(self._run(item))

    async def _run(self, item: WorkItem) -> None:
        """Handle ``item``, then any item handed over while reporting its completion."""
        next_item: WorkItem | None = item
        while next_item is not None:
            completion = await self._handle(next_item)
            self._handoff_task = asyncio.current_task()
            try:
                self._finish(completion)
            finally:
                self._handoff_task = None
            next_item, self._handoff = self._handoff, None

    def submit_batch(self, items: Sequence[WorkItem]) -> None:
        if self._on_complete is None or self._closed:
            raise EngineError("submit_batch() before start() or after shutdown()")
        if not self._batch:
            raise EngineError("this engine runs a per-record handler: use submit()")
        if not items:
            return
        batch = _Batch({item.item_id: item for item in items})
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        for item_id in batch.live:
            self._tasks[item_id] = task
            self._batches[item_id] = batch

    async def _run_batch(self, batch: _Batch) -> None:
        """Attempts of one batch until every item completed: failed items are retried together after a backoff."""
        started = time.perf_counter()
        attempts = 0
        tracing = self._tracing
        while batch.live:
            attempts += 1
            items = list(batch.live.values())
            traced = tracing.attach(items[0].item_id) if tracing is not None else None
            try:
                error, failures = await self._attempt_batch([item.record for item in items])
            finally:
                if tracing is not None and traced is not None:
                    tracing.detach(traced)
            if error is not None:
                failures = dict.fromkeys(range(len(items)), describe_error(error))
            failed = [(items[i], failures[i]) for i in sorted(failures)]
            duration = time.perf_counter() - started
            failed_ids = {item.item_id for item, _ in failed}
            for item in items:
                if item.item_id not in failed_ids:
                    self._finish_member(batch, Completion(item.item_id, True, attempts, duration))
            if not failed:
                return
            retrying = attempts <= self._retry.max_retries
            self._log_batch_failure(attempts, len(items), failed, retrying, error)
            if retrying and tracing is not None:
                tracing.retrying(failed[0][0].item_id, attempts, *failed[0][1], records=len(failed))
            if not retrying:
                for item, (err_type, err_msg) in failed:
                    self._finish_member(batch, Completion(item.item_id, False, attempts, duration, err_type, err_msg))
                return
            batch.live = {item.item_id: item for item, _ in failed if item.item_id in batch.live}
            await asyncio.sleep(self._retry.delay_s(attempts))

    async def _attempt_batch(self, records: list[Record]) -> tuple[BaseException | None, dict[int, tuple[str, str]]]:
        """One call of the batch handler: (the error that failed it whole, or None; the failures it named)."""
        current = asyncio.current_task()
        try:
            async with asyncio.timeout(self._retry.timeout_s) as scope:
                returned = await self._handler(list(records))  # a copy: positions must survive a handler's sort
        except TimeoutError as exc:
            return (HandlerTimeoutError(self._retry.timeout_s) if scope.expired() else exc), {}
        except asyncio.CancelledError as exc:
            if current is not None and current.cancelling() == 0:
                return exc, {}  # raised by the handler itself, not a cancellation of this task
            raise
        except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit must not stop the consumer
            return exc, {}
        try:
            return None, batch_failures(records, returned)
        except InvalidBatchResultError as exc:
            return exc, {}

    def _log_batch_failure(self, attempt: int, size: int, failed: list[tuple[WorkItem, tuple[str, str]]],
                           retrying: bool, error: BaseException | None) -> None:
        """One line per failed batch attempt (not one per record), naming its first failed record."""
        first, (err_type, err_msg) = failed[0]
        record = first.record
        log.log(logging.DEBUG if retrying else logging.WARNING,
                "Attempt %d on a batch of %d record(s) failed for %d of them, first %s[%d]@%d (item %d): %s: %s%s",
                attempt, size, len(failed), record.topic, record.partition, record.offset, first.item_id, err_type,
                err_msg, "; retrying them" if retrying else "; no retry left",
                exc_info=None if retrying else error,
                extra=event_extra(HANDLER_FAILED, topic=record.topic, partition=record.partition,
                                  offset=record.offset, attempt=attempt, retrying=retrying,
                                  error_type=err_type, error=err_msg))

    def _finish_member(self, batch: _Batch, completion: Completion) -> None:
        """Report one item of a batch, unless it was cancelled meanwhile."""
        if batch.live.pop(completion.item_id, None) is not None:
            self._batches.pop(completion.item_id, None)
            self._finish(completion)

    async def _handle(self, item: WorkItem) -> Completion:
        item_id = item.item_id
        started = time.perf_counter()
        attempts = 0
        tracing = self._tracing
        while True:
            attempts += 1
            self._attempt_started[item_id] = time.monotonic()
            traced = tracing.attach(item_id) if tracing is not None else None
            try:
                outputs = outputs_of(await self._handler(item.record))
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if item_id in self._timed_out:
                    self._timed_out.discard(item_id)
                    if current is not None:
                        current.uncancel()
                    error: BaseException = HandlerTimeoutError(self._retry.timeout_s)
                elif current is not None and current.cancelling() == 0:
                    error = exc  # raised by the handler itself, not a cancellation of this task
                else:
                    raise
            except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit must not stop the consumer
                error = exc
            else:
                return Completion(item_id, True, attempts, time.perf_counter() - started, outputs=outputs)
            finally:
                self._attempt_started.pop(item_id, None)
                if tracing is not None and traced is not None:
                    tracing.detach(traced)
            retrying = attempts <= self._retry.max_retries
            err_type, err_msg = describe_error(error)
            record = item.record
            log.log(logging.DEBUG if retrying else logging.WARNING,
                    "Attempt %d on %s[%d]@%d (item %d) failed: %s: %s%s", attempts, record.topic, record.partition,
                    record.offset, item_id, err_type, err_msg, "; retrying" if retrying else "; no retry left",
                    exc_info=None if retrying else error,
                    extra=event_extra(HANDLER_FAILED, topic=record.topic, partition=record.partition,
                                      offset=record.offset, attempt=attempts, retrying=retrying,
                                      error_type=err_type, error=err_msg))
            if not retrying:
                return Completion(item_id, False, attempts, time.perf_counter() - started, err_type, err_msg)
            if tracing is not None:
                tracing.retrying(item_id, attempts, err_type, err_msg)
            await asyncio.sleep(self._retry.delay_s(attempts))

    async def _enforce_timeouts(self) -> None:
        timeout = self._retry.timeout_s
        period = min(max(timeout / 4, 0.005), 0.1)
        while True:
            await asyncio.sleep(period)
            expired_before = time.monotonic() - timeout
            for item_id, began in list(self._attempt_started.items()):
                if began <= expired_before and item_id not in self._timed_out:
                    task = self._tasks.get(item_id)
                    if task is not None:
                        self._timed_out.add(item_id)
                        task.cancel()

    def _finish(self, completion: Completion) -> None:
        if self._tasks.pop(completion.item_id, None) is not None and self._on_complete is not None:
            self._on_complete(completion)

    def cancel(self, item_ids: Iterable[int]) -> None:
        for item_id in item_ids:
            batch = self._batches.pop(item_id, None)
            if batch is not None:
                batch.live.pop(item_id, None)
                batch_task = self._tasks.pop(item_id, None)
                if not batch.live and batch_task is not None:
                    batch_task.cancel()  # no item of it is left: stop the handler call
                continue
            task = self._tasks.pop(item_id, None)
            if task is not None:
                self._timed_out.discard(item_id)
                task.cancel()

    def in_flight(self) -> int:
        return len(self._tasks)

    async def shutdown(self, drain: bool, timeout_s: float) -> None:
        self._closed = True
        pending = list(set(self._tasks.values()))
        if drain and pending:
            await asyncio.wait(pending, timeout=timeout_s)
        leftover = list(self._tasks)
        if leftover:
            log.info("Cancelling %d in-flight record(s) at shutdown", len(leftover))
        self.cancel(leftover)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
