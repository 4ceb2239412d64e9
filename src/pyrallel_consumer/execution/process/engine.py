"""ProcessExecutionEngine: the ExecutionEngine that runs synchronous handlers in supervised worker processes.

``execution.create_engine`` builds it for ``engine="process"``; the control plane calls it on its event loop,
the loop ``start()`` runs on, where completions are delivered too. It checks the handler, encodes each record
once at submit and keeps the engine's life cycle; the ledger keeps the items, the supervisor the workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.event_wait import wait_event
from pyrallel_consumer.execution.engine import (
    CompletionCallback,
    EngineError,
    ExecutionEngine,
    RetryPolicy,
    WorkItem,
)
from pyrallel_consumer.execution.process.codec import encode_record
from pyrallel_consumer.execution.process.handler_ref import handler_reference
from pyrallel_consumer.execution.process.ledger import Item, ItemLedger
from pyrallel_consumer.execution.process.supervisor import Supervisor
from pyrallel_consumer.record import Record
from pyrallel_consumer.references import reference_of

if TYPE_CHECKING:
    from pyrallel_consumer.observability.tracing import Tracing

log = logging.getLogger(__name__)

SyncHandler = Callable[[Record], None]


class RecordTooLargeError(ValueError):
    """A record's msgpack form is larger than ``max_item_bytes``; it is failed without reaching a worker."""


class ProcessExecutionEngine(ExecutionEngine):
    """Runs a synchronous ``def handle(record) -> None`` in a pool of supervised worker processes.

    With ``batch=True`` the handler is ``def handle_batch(records: list[Record]) -> BatchResult | None`` and the
    engine takes ``submit_batch``: each batch travels, runs, times out and is blamed for a worker's death as one
    item of the ledger.

    With ``tracing`` each record travels with its span's context (a batch's records with the batch's), which the
    worker makes current around the handler call, and each retry is an event on the span.
    """

    deserializes_records = True

    def __init__(self, handler: SyncHandler | str, retry: RetryPolicy, config: ConsumerConfig, *,
                 batch: bool = False, tracing: Tracing | None = None) -> None:
        self._handler: object = handler
        self._deserializers = {"key_deserializer": config.key_deserializer,
                               "value_deserializer": config.value_deserializer}
        self._batch = batch
        self._max_item_bytes = config.max_item_bytes
        self._tracing = tracing
        self._ledger = ItemLedger(retry, tracing)
        self._supervisor = Supervisor(config, retry.timeout_s, self._ledger, batches=batch)
        self._started = False
        self._closed = False
        self._accepting = False

    @property
    def workers_started(self) -> int:
        """Worker processes started so far, replacements included."""
        return self._supervisor.workers_started

    @property
    def pool_size(self) -> int:
        """Worker processes kept running: ``process_workers``, or one per CPU core."""
        return self._supervisor.size

    async def start(self, on_complete: CompletionCallback) -> None:
        if self._started:
            raise EngineError("start() may be called once")
        ref = handler_reference(self._handler)
        deserializers = self._deserializer_references()
        self._started = True
        try:
            await self._supervisor.start(ref, deserializers)
        except BaseException:
            self._closed = True
            await self._supervisor.terminate()  # also when start() is cancelled: no worker may outlive a failed start
            raise
        self._ledger.open(on_complete, self._supervisor.schedule_dispatch)
        self._accepting = True
        log.debug("Process engine started %d worker(s) for %s", self._supervisor.size, ref)

    def _deserializer_references(self) -> tuple[str | None, str | None]:
        """What each worker imports its own deserializers by (ConsumerConfig checks it already for
        engine='process'; this engine may be built over another config)."""
        refs: list[str | None] = []
        for name, value in self._deserializers.items():
            try:
                refs.append(None if value is None else reference_of(value, name, "'module:attr'"))
            except ValueError as exc:
                raise EngineError(str(exc)) from exc
        return refs[0], refs[1]

    def submit(self, item: WorkItem) -> None:
        if not self._accepting or self._closed:
            raise EngineError("submit() before start() or after shutdown()")
        if self._batch:
            raise EngineError("this engine runs a batch handler: use submit_batch()")
        tracing = self._tracing
        payload = encode_record(item.item_id, item.record,
                                tracing.carrier(item.item_id) if tracing is not None else None)
        record = item.record
        entry = self._ledger.add(item.item_id, payload, (record.topic, record.partition, record.offset))
        if len(payload) > self._max_item_bytes:
            asyncio.get_running_loop().call_soon(self._reject_too_large, entry, item.record)
            return
        self._ledger.enqueue(entry)
        self._supervisor.schedule_dispatch()

    def submit_batch(self, items: Sequence[WorkItem]) -> None:
        if not self._accepting or self._closed:
            raise EngineError("submit_batch() before start() or after shutdown()")
        if not self._batch:
            raise EngineError("this engine runs a per-record handler: use submit()")
        members: list[tuple[int, bytes, tuple[str, int, int]]] = []
        loop = asyncio.get_running_loop()
        trace = self._tracing.carrier(items[0].item_id) if self._tracing is not None and items else None
        for item in items:
            record = item.record
            payload = encode_record(item.item_id, record, trace)
            source = (record.topic, record.partition, record.offset)
            if len(payload) > self._max_item_bytes:  # failed alone, without reaching a worker; the rest runs
                loop.call_soon(self._reject_too_large, self._ledger.add(item.item_id, payload, source), record)
            else:
                members.append((item.item_id, payload, source))
        if members:
            self._ledger.enqueue(self._ledger.add_batch(members))
            self._supervisor.schedule_dispatch()

    def _reject_too_large(self, item: Item, record: Record) -> None:
        self._ledger.reject(
            item, RecordTooLargeError.__name__,
            f"record {record.topic}[{record.partition}]@{record.offset} is {len(item.payload)} bytes as msgpack, "
            f"more than max_item_bytes={self._max_item_bytes}",
        )

    def cancel(self, item_ids: Iterable[int]) -> None:
        self._ledger.cancel(item_ids)

    def in_flight(self) -> int:
        return len(self._ledger)

    async def shutdown(self, drain: bool, timeout_s: float) -> None:
        if self._closed:
            if self._started:
                await self._supervisor.wait_terminated()
            return
        self._closed = True
        if not self._started:
            return
        self._supervisor.abort_start(EngineError("shutdown() was called while start() waited for the workers"))
        if drain and len(self._ledger):
            await wait_event(self._ledger.idle, timeout_s)
        leftover = self._ledger.ids()
        if leftover:
            log.info("Cancelling %d in-flight record(s) at shutdown", len(leftover))
        self.cancel(leftover)
        await self._supervisor.terminate()
