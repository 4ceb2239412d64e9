"""AsyncExecutionEngine: one asyncio task per in-flight record, for I/O-bound async handlers."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from pyrallel_consumer.execution.engine import (
    Completion,
    CompletionCallback,
    EngineError,
    ExecutionEngine,
    RetryPolicy,
    WorkItem,
    describe_error,
)
from pyrallel_consumer.record import Record

log = logging.getLogger(__name__)

AsyncHandler = Callable[[Record], Awaitable[None]]


class HandlerTimeoutError(TimeoutError):
    """One handler attempt ran longer than task_timeout_ms."""


class AsyncExecutionEngine(ExecutionEngine):
    """Runs ``async def handle(record)`` on the consumer's event loop."""

    def __init__(self, handler: AsyncHandler, retry: RetryPolicy) -> None:
        if not callable(handler):
            raise EngineError("handler must be an async function: async def handle(record) -> None")
        self._handler = handler
        self._retry = retry
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._on_complete: CompletionCallback | None = None
        self._closed = False

    async def start(self, on_complete: CompletionCallback) -> None:
        if not inspect.iscoroutinefunction(self._handler):
            raise EngineError(
                f"the async engine needs an async handler; {self._handler!r} is not a coroutine function "
                "(use engine='process' for synchronous, CPU-bound handlers)"
            )
        self._on_complete = on_complete

    def submit(self, item: WorkItem) -> None:
        if self._on_complete is None or self._closed:
            raise EngineError("submit() before start() or after shutdown()")
        task = asyncio.get_running_loop().create_task(self._run(item), name=f"pyrallel-item-{item.item_id}")
        self._tasks[item.item_id] = task

    async def _run(self, item: WorkItem) -> None:
        started = time.perf_counter()
        attempts = 0
        while True:
            attempts += 1
            try:
                await self._attempt(item.record)
            except asyncio.CancelledError:
                if self._cancelling():
                    raise
                error: BaseException = asyncio.CancelledError("handler raised CancelledError")
            except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit must not stop the consumer
                error = exc
            else:
                self._finish(Completion(item.item_id, True, attempts, time.perf_counter() - started))
                return
            if attempts > self._retry.max_retries:
                err_type, err_msg = describe_error(error)
                self._finish(
                    Completion(item.item_id, False, attempts, time.perf_counter() - started, err_type, err_msg)
                )
                return
            log.debug("Attempt %d of item %d failed: %r; retrying", attempts, item.item_id, error)
            await asyncio.sleep(self._retry.delay_s(attempts))

    async def _attempt(self, record: Record) -> None:
        try:
            async with asyncio.timeout(self._retry.timeout_s):
                await self._handler(record)
        except TimeoutError as exc:
            if self._cancelling():
                raise asyncio.CancelledError from exc
            raise HandlerTimeoutError(f"handler exceeded {self._retry.timeout_s:g}s") from exc

    @staticmethod
    def _cancelling() -> bool:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    def _finish(self, completion: Completion) -> None:
        if self._tasks.pop(completion.item_id, None) is not None and self._on_complete is not None:
            self._on_complete(completion)

    def cancel(self, item_ids: Iterable[int]) -> None:
        for item_id in item_ids:
            task = self._tasks.pop(item_id, None)
            if task is not None:
                task.cancel()

    def in_flight(self) -> int:
        return len(self._tasks)

    async def shutdown(self, drain: bool, timeout_s: float) -> None:
        self._closed = True
        pending = list(self._tasks.values())
        if drain and pending:
            await asyncio.wait(pending, timeout=timeout_s)
        leftover = list(self._tasks)
        if leftover:
            log.info("Cancelling %d in-flight record(s) at shutdown", len(leftover))
        self.cancel(leftover)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
