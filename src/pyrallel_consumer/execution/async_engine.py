"""AsyncExecutionEngine: long-lived worker tasks that run records one after another (one task per batch with a
batch handler), for I/O-bound async handlers."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pyrallel_consumer.batch import InvalidBatchResultError, batch_failures
from pyrallel_consumer.deserialization import DeserializationError
from pyrallel_consumer.execution.engine import (
    Completion,
    CompletionCallback,
    EngineError,
    ExecutionEngine,
    HandlerTimeoutError,
    RetryPolicy,
    WorkItem,
    describe_error,
    poisoned,
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

_RUNS_BEFORE_YIELD = 64
"""Records a worker runs back to back before it lets the loop turn: handlers that never suspend (no-op, cached)
would otherwise hold the loop, and with it the fetched batches and every timer, for as long as work is ready."""


class _FirstSuspension:
    """Awaits a handler's coroutine like ``await`` does, and calls ``on_suspend`` when it first suspends.

    That is the moment a worker knows its handler waits on I/O and the ready records need other workers; a
    handler that returns without suspending (a cache hit, a no-op) lets its worker go on with the next record
    and nobody is woken. The coroutine is driven as ``yield from`` would: what the task sends or throws in is
    passed on, so cancellation and timeouts reach the handler unchanged.
    """

    __slots__ = ("_coro", "_on_suspend")

    def __init__(self, coro: Coroutine[Any, Any, object], on_suspend: Callable[[], None]) -> None:
        self._coro = coro
        self._on_suspend = on_suspend

    def __await__(self) -> Generator[Any, Any, object]:
        coro = self._coro
        try:
            waiting_on = coro.send(None)
        except StopIteration as returned:
            return returned.value
        self._on_suspend()
        while True:
            try:
                yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - what the task throws in (a cancellation) goes to the handler
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as returned:
                    return returned.value
                continue
            # Resumed as a task resumes a coroutine (send(None)): hand the rest to the interpreter's own delegation,
            # so later suspensions cost no Python frame of this class.
            return (yield from coro.__await__())


def _uncancel(worker: asyncio.Task[None]) -> None:
    """Forget every cancellation requested of ``worker``: they were all meant for the item it just dropped (a
    timeout and a cancel() can both hit one attempt), and a leftover one would make the next handler's own
    CancelledError look like a cancellation of the worker."""
    while worker.uncancel():
        pass


@dataclass(eq=False, slots=True)
class _Batch:
    """The items of one submit_batch() not completed nor cancelled yet, in batch order; its task runs them."""

    live: dict[int, WorkItem]


class AsyncExecutionEngine(ExecutionEngine):
    """Runs ``async def handle(record)`` on the consumer's event loop.

    Per-record handlers run in long-lived workers: a worker takes the oldest ready item, awaits the handler,
    reports the completion and takes the next item, so a record costs no task, no loop turn and no callback of its
    own (a task per record was the largest single cost of a cheap handler). There are as many workers as items were
    ever in flight at once (``max_in_flight`` at most); an idle worker parks on a future until ``submit`` wakes it.
    When reporting a completion lets the control plane submit the next record (typically the next one of the same
    key), the reporting worker runs it itself, so nobody is woken for it.

    Attempt timeouts are enforced by one watchdog that sweeps the in-flight attempts a few times per timeout
    period, instead of a timer per attempt; it cancels the worker running the late attempt.

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
        """Item id -> the task of its batch, for the items of submit_batch()."""
        self._items: dict[int, WorkItem] = {}
        """Per-record items submitted and neither completed nor cancelled (ready or running)."""
        self._ready: deque[WorkItem] = deque()
        """Submitted items no worker took yet, oldest first; cancelled ones are skipped when taken."""
        self._running: dict[int, asyncio.Task[None]] = {}
        """Item id -> the worker running it: what cancel() and the watchdog stop."""
        self._workers: set[asyncio.Task[None]] = set()
        self._parked: deque[asyncio.Future[None]] = deque()
        """Idle workers, each waiting on its future."""
        self._spare = 0
        """Workers that will look at the ready items before they park: woken or just spawned ones, and the one
        reporting a completion. submit() wakes a worker only for items beyond them."""
        self._settled: asyncio.Future[None] | None = None
        """Set by shutdown(drain=True): resolved once nothing is in flight."""
        self._attempt_started: dict[int, float] = {}
        self._timed_out: set[int] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._on_complete: CompletionCallback | None = None
        self._closed = False
        self._context = contextvars.Context()
        """A copy of the context start() ran in: each worker starts from a copy of it, not from the context of whoever
        woke it, which may be a handler's (``_fan_out``), with its record's span current under tracing."""

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
        self._context = contextvars.copy_context()
        self._watchdog = asyncio.get_running_loop().create_task(self._enforce_timeouts())

    def submit(self, item: WorkItem) -> None:
        if self._on_complete is None or self._closed:
            raise EngineError("submit() before start() or after shutdown()")
        if self._batch:
            raise EngineError("this engine runs a batch handler: use submit_batch()")
        self._items[item.item_id] = item
        self._ready.append(item)
        if not self._spare:
            self._wake(1)

    def _wake(self, most: int) -> None:
        """Have up to ``most`` more workers take ready items: parked ones first, else new ones.

        submit() wakes one worker when none is about to take an item; a worker whose handler suspends wakes two
        more (see ``_FirstSuspension``), so a burst of I/O-bound records fans out in a few loop turns, and a
        burst of records whose handler never suspends runs in one worker without waking anybody.
        """
        while most and len(self._ready) > self._spare:
            most -= 1
            self._spare += 1
            if self._parked:
                self._parked.popleft().set_result(None)
            else:
                worker = asyncio.get_running_loop().create_task(self._work(), name="pyrallel-async-worker",
                                                                context=self._context.copy())
                self._workers.add(worker)

    def _fan_out(self) -> None:
        """A handler suspended: more workers for the records that are ready."""
        self._wake(2)

    async def _work(self) -> None:
        """One worker: runs ready items one at a time, oldest first; returns once shutdown() left nothing to run."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        if me is None:
            raise EngineError("an async worker must run as a task")
        ready, items, running = self._ready, self._items, self._running
        self._spare -= 1
        runs = 0
        while True:
            if not ready:
                if self._closed:
                    return
                parked = loop.create_future()
                self._parked.append(parked)
                await parked
                self._spare -= 1
                continue
            item = ready.popleft()
            if items.get(item.item_id) is not item:
                continue  # cancelled while it waited
            running[item.item_id] = me
            try:
                completion = await self._handle(item)
            except asyncio.CancelledError:
                if item.item_id in items:
                    raise  # not a cancel() of this item: the loop is closing
                _uncancel(me)  # cancel() stopped this item: the worker goes on with the next one
                continue
            finally:
                running.pop(item.item_id, None)
            if item.item_id not in items:
                _uncancel(me)  # the handler swallowed the cancellation of its cancelled item
                continue
            self._spare += 1
            try:
                self._finish(completion)
            finally:
                self._spare -= 1
            runs += 1
            if runs == _RUNS_BEFORE_YIELD:
                runs = 0
                await asyncio.sleep(0)

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
        """Attempts of one batch until every item completed: failed items are retried together after a backoff.
        Poison records (``WorkItem.deserialized``) fail at once and never reach the handler."""
        records: dict[int, Record[Any, Any]] = {}
        for item_id, item in list(batch.live.items()):
            record = item.deserialized or item.record
            if isinstance(record, DeserializationError):
                self._finish_member(batch, poisoned(item_id, record))
            else:
                records[item_id] = record
        started = time.perf_counter()
        attempts = 0
        tracing = self._tracing
        while batch.live:
            attempts += 1
            items = list(batch.live.values())
            traced = tracing.attach(items[0].item_id) if tracing is not None else None
            try:
                error, failures = await self._attempt_batch([records[item.item_id] for item in items])
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

    async def _attempt_batch(self, records: list[Record[Any, Any]]
                             ) -> tuple[BaseException | None, dict[int, tuple[str, str]]]:
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
        record = item.deserialized or item.record
        if isinstance(record, DeserializationError):
            return poisoned(item_id, record)
        started = time.perf_counter()
        attempts = 0
        tracing = self._tracing
        while True:
            attempts += 1
            self._attempt_started[item_id] = time.monotonic()
            traced = tracing.attach(item_id) if tracing is not None else None
            try:
                outputs = outputs_of(await _FirstSuspension(
                    cast("Coroutine[Any, Any, object]", self._handler(record)), self._fan_out))
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
                    task = self._running.get(item_id)
                    if task is not None:
                        self._timed_out.add(item_id)
                        task.cancel()

    def _finish(self, completion: Completion) -> None:
        item_id = completion.item_id
        known = self._items.pop(item_id, None) or self._tasks.pop(item_id, None)
        if known is not None and self._on_complete is not None:
            self._on_complete(completion)
        self._check_settled()

    def _check_settled(self) -> None:
        settled = self._settled
        if settled is not None and not settled.done() and not self.in_flight():
            settled.set_result(None)

    def cancel(self, item_ids: Iterable[int]) -> None:
        for item_id in item_ids:
            batch = self._batches.pop(item_id, None)
            if batch is not None:
                batch.live.pop(item_id, None)
                batch_task = self._tasks.pop(item_id, None)
                if not batch.live and batch_task is not None:
                    batch_task.cancel()  # no item of it is left: stop the handler call
                continue
            if self._items.pop(item_id, None) is None:
                continue
            worker = self._running.get(item_id)
            if worker is not None:
                self._timed_out.discard(item_id)
                worker.cancel()
        self._check_settled()

    def in_flight(self) -> int:
        return len(self._items) + len(self._tasks)

    async def shutdown(self, drain: bool, timeout_s: float) -> None:
        self._closed = True
        if drain and self.in_flight():
            self._settled = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._settled], timeout=timeout_s)
        leftover = [*self._items, *self._tasks]
        if leftover:
            log.info("Cancelling %d in-flight record(s) at shutdown", len(leftover))
        batch_tasks = list(set(self._tasks.values()))
        self.cancel(leftover)
        while self._parked:  # woken with nothing to run, each returns
            self._spare += 1
            self._parked.popleft().set_result(None)
        await asyncio.gather(*self._workers, *batch_tasks, return_exceptions=True)
        self._workers.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
