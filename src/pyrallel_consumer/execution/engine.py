"""The ExecutionEngine contract: the only thing the control plane knows about how handlers run.

An engine receives work items, runs the user's handler with retries, backoff and a per-attempt timeout,
and reports exactly one Completion per item it was not told to cancel. Completions are delivered on the
event loop that started the engine. Ordering is the control plane's job: an engine may run everything it
is given at once.

Deserialization: ``WorkItem.record`` is the record as fetched (bytes). An engine that runs handlers where the
poller's objects cannot go (``deserializes_records``: the process engine) deserializes each record there itself;
for any other engine the poller thread deserialized the record ahead and the handler gets ``item.deserialized``. A
record that cannot be deserialized fails at once, after one attempt and without retries, and never reaches the
handler (``KeyDeserializationError`` / ``ValueDeserializationError``).

An engine built for a batch handler takes ``submit_batch(items)`` instead of ``submit(item)``: one handler call
gets the records of all the items, in the order given. Completions stay per item: an attempt that raises or times
out fails every item of the batch, which is retried whole; a returned ``BatchResult`` fails only the items it
names, and the others complete at once. Failed items are retried together as a smaller batch, so the items of one
batch always share an attempt count. Cancelling some items of a running batch drops their completions and leaves
them out of its retries; the handler call itself is stopped only once every item of it is cancelled.

With ``tracing_enabled`` the control plane starts an item's span before ``submit`` and ends it after the completion;
the two engines given the consumer's ``Tracing`` (``create_engine``) also make that span current around each handler
call and report each retry to it. A custom engine that does neither still gets the spans, without those parts.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pyrallel_consumer.deserialization import DeserializationError, Deserialized
from pyrallel_consumer.output import Output
from pyrallel_consumer.record import Record


@dataclass(slots=True)
class WorkItem:
    """One record to handle; ``item_id`` is unique for the lifetime of a consumer."""

    item_id: int
    record: Record
    """As fetched: key and value are the bytes on the wire (what ordering, dead letters and exhaustion use)."""
    deserialized: Deserialized = field(default=None, kw_only=True)
    """What the poller thread deserialized ahead: the record the handler gets, or why it cannot get one (a poison
    record). None when no deserializer is configured, or the engine deserializes itself: the handler gets
    ``record`` as it is, or what the engine made of it."""


@dataclass(slots=True)
class Completion:
    """The final result of one work item: success, or failure after every retry."""

    item_id: int
    ok: bool
    attempts: int
    duration_s: float
    error_type: str | None = None
    error_message: str | None = None
    outputs: tuple[Output, ...] = ()
    """What a successful handler returned to produce (exactly-once); empty otherwise."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries with exponential backoff and full jitter; a timeout bounds every attempt."""

    max_retries: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 10.0
    timeout_s: float = 60.0

    def delay_s(self, failed_attempts: int) -> float:
        """Delay before the next attempt after ``failed_attempts`` failures (>= 1)."""
        ceiling = min(self.max_backoff_s, self.backoff_s * (2 ** (failed_attempts - 1)))
        return random.uniform(0.0, ceiling)


CompletionCallback = Callable[[Completion], None]


class EngineError(RuntimeError):
    """The engine could not start or was used outside its life cycle."""


class HandlerTimeoutError(TimeoutError):
    """An attempt ran longer than ``task_timeout_ms``. Every engine reports such an attempt as this type
    (``Completion.error_type == "HandlerTimeoutError"``), whatever it had to do to stop the handler."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(timeout_s)
        self.timeout_s = timeout_s

    def __str__(self) -> str:
        return f"handler exceeded {self.timeout_s:g}s"


class ExecutionEngine(abc.ABC):
    """Runs handlers; knows nothing about Kafka, offsets or ordering."""

    deserializes_records: ClassVar[bool] = False
    """True for an engine that applies ``key_deserializer`` / ``value_deserializer`` itself, where its handlers run
    (the process engine: in its workers); the Coordinator then has the poller leave records as bytes."""

    @abc.abstractmethod
    async def start(self, on_complete: CompletionCallback) -> None:
        """Prepare workers; fail here (not at the first record) when the handler cannot run."""

    @abc.abstractmethod
    def submit(self, item: WorkItem) -> None:
        """Start handling ``item``; never blocks. The control plane bounds how many are in flight."""

    def submit_batch(self, items: Sequence[WorkItem]) -> None:
        """Start handling ``items`` in one call of the batch handler; never blocks. One Completion per item.

        Only engines built for a batch handler implement it; the Coordinator calls it (on the event loop) instead
        of ``submit`` when the consumer was given ``batch_handler``.
        """
        raise EngineError(f"{type(self).__name__} does not run batch handlers")

    @abc.abstractmethod
    def cancel(self, item_ids: Iterable[int]) -> None:
        """Best effort: stop these items; no Completion is reported for an item once cancelled."""

    @abc.abstractmethod
    def in_flight(self) -> int:
        """Items submitted and neither completed nor cancelled."""

    @abc.abstractmethod
    async def shutdown(self, drain: bool, timeout_s: float) -> None:
        """Stop the engine. drain=True waits up to ``timeout_s`` for submitted items, then cancels the rest."""


def poisoned(item_id: int, error: DeserializationError) -> Completion:
    """The completion of a record that cannot be deserialized: failed after one attempt, which it never ran."""
    return Completion(item_id, False, 1, 0.0, *describe_error(error))


def describe_error(exc: BaseException, limit: int = 1000) -> tuple[str, str]:
    """(type name, message) of a handler failure, the message cut to ``limit`` characters."""
    message = str(exc) or repr(exc)
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return type(exc).__name__, message
