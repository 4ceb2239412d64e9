"""OpenTelemetry tracing of the records a consumer handles: the only module that imports opentelemetry.

PyrallelConsumer creates one :class:`Tracing` when ``tracing_enabled`` is set, and imports this module only then, so
a consumer without tracing never loads opentelemetry and pays nothing per record. The spans follow the messaging
semantic conventions (a CONSUMER span ``process <topic>`` per record, its parent the creation context that the
record's headers carry, W3C ``traceparent`` by default, read through the global propagator).

Who calls what, all on the event loop unless said otherwise:

- the Coordinator starts a record's span when it hands the record to the engine (:meth:`Tracing.record_started`),
  the Batcher one span for a whole batch (:meth:`Tracing.batch_started`); the Coordinator marks a record that failed
  every attempt (:meth:`Tracing.record_failed`) and ends the span when the record leaves the in-flight set
  (:meth:`Tracing.record_finished`, :meth:`Tracing.record_cancelled`). A span therefore covers the attempts, the
  backoffs between them and the exhaustion policy (a dead-letter write);
- the engines add an event per retry (:meth:`Tracing.retrying`) and run each attempt in the span's context: the
  async engine attaches it around the handler call (:meth:`Tracing.attach`), the process engine sends it to the
  worker with the record (:meth:`Tracing.carrier`), where :func:`carried` makes it current around the call (in the
  worker process, on its main thread);
- Exhaustion runs the policy in the span's context (:meth:`Tracing.task_context`), so a policy's own spans are its
  children;
- the dead-letter policies open a PRODUCER span for the copy (:meth:`Tracing.dead_letter_send`) and put its context
  in the copy's headers in place of the record's own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from pyrallel_consumer.record import Header, Record

if TYPE_CHECKING:
    from pyrallel_consumer.execution.engine import WorkItem

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.27.0"
"""The semantic conventions version whose messaging attribute names the spans use."""
RETRY_EVENT: Final = "pyrallel.retry"
CANCELLED_EVENT: Final = "pyrallel.cancelled"


class _HeaderGetter(Getter[Sequence[Header]]):
    """Reads propagation fields from a record's headers (names as Kafka keeps them, values UTF-8)."""

    def get(self, carrier: Sequence[Header], key: str) -> list[str] | None:
        values = [value.decode("utf-8", "replace") for name, value in carrier if name == key and value is not None]
        return values or None

    def keys(self, carrier: Sequence[Header]) -> list[str]:
        return [name for name, _ in carrier]


_HEADERS: Final = _HeaderGetter()


def creation_context(record: Record) -> otel_context.Context:
    """The context the record's producer put in its headers (an empty context when there is none)."""
    return propagate.extract(record.headers, getter=_HEADERS)


@contextmanager
def carried(carrier: Mapping[str, str]) -> Iterator[None]:
    """Run the block with the span context that ``carrier`` holds (see :meth:`Tracing.carrier`) current.

    Used by a process engine worker around a handler call, on its main thread: the handler's own spans then
    become children of the record's span in the parent process (the worker needs a tracer provider of its own).
    """
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


@dataclass(eq=False, slots=True)
class _Trace:
    """The span of one record, or of one batch (shared by its records until the last one leaves)."""

    span: Span
    context: otel_context.Context
    """A context holding ``span``: what attempts and the exhaustion policy run in."""
    open: int
    """Records of it still in flight."""


class DeadLetterSend:
    """The PRODUCER span of one dead-letter write, whose context the copy's headers carry onward."""

    __slots__ = ("_fields", "_span")

    def __init__(self, span: Span) -> None:
        self._span = span
        fields: dict[str, str] = {}
        propagate.inject(fields, trace.set_span_in_context(span))
        self._fields = [(name, value.encode()) for name, value in fields.items()]

    def carry(self, headers: Sequence[Header]) -> list[Header]:
        """The record's ``headers`` for its copy: every propagation field of the record's own context dropped
        (the propagator names them), this span's context instead, so the copy carries one context."""
        replaced = propagate.get_global_textmap().fields
        return [header for header in headers if header[0] not in replaced] + self._fields

    def end(self, failure: tuple[str, str] | None) -> None:
        """The write was acknowledged (None) or failed with ``failure``, (error type, message): e.g. librdkafka's
        error name; the policy tries again later, in a new span."""
        if failure is not None:
            self._span.set_attribute("error.type", failure[0])
            self._span.set_status(Status(StatusCode.ERROR, failure[1]))
        self._span.end()


class Tracing:
    """The spans of one consumer's records, by work item id; see the module docstring for who calls what."""

    def __init__(self, group_id: str) -> None:
        self._tracer = trace.get_tracer("pyrallel_consumer", schema_url=SCHEMA_URL)
        self._group_id = group_id
        self._traces: dict[int, _Trace] = {}

    # ---- control plane -------------------------------------------------------------------------------

    def record_started(self, item: WorkItem) -> None:
        """The Coordinator hands ``item`` to the engine: its span starts, a child of the record's creation context
        (and linked to it, as the conventions ask of every process span)."""
        record = item.record
        parent = creation_context(record)
        created = trace.get_current_span(parent).get_span_context()
        attributes = self._attributes(record.topic, record.partition)
        attributes["messaging.kafka.offset"] = record.offset
        key = _key_text(record.key)
        if key is not None:
            attributes["messaging.kafka.message.key"] = key
        if record.value is None:
            attributes["messaging.kafka.message.tombstone"] = True
        span = self._tracer.start_span(f"process {record.topic}", parent, SpanKind.CONSUMER, attributes,
                                       [Link(created)] if created.is_valid else None)
        self._traces[item.item_id] = _Trace(span, trace.set_span_in_context(span), 1)

    def batch_started(self, items: Sequence[WorkItem]) -> None:
        """The Batcher hands ``items`` to a batch handler: one span for the batch, a root (a batch has no single
        parent), linked to the creation context of each record that has one (the link says which record)."""
        records = [item.record for item in items]
        topics = {r.topic for r in records}
        topic = next(iter(topics)) if len(topics) == 1 else None
        partitions = {r.partition for r in records}
        attributes = self._attributes(topic, next(iter(partitions)) if topic and len(partitions) == 1 else None)
        attributes["messaging.batch.message_count"] = len(records)
        links = []
        for record in records:
            created = trace.get_current_span(creation_context(record)).get_span_context()
            if created.is_valid:
                links.append(Link(created, {"messaging.destination.name": record.topic,
                                            "messaging.destination.partition.id": str(record.partition),
                                            "messaging.kafka.offset": record.offset}))
        span = self._tracer.start_span(f"process {topic}" if topic else "process", otel_context.Context(),
                                       SpanKind.CONSUMER, attributes, links)
        shared = _Trace(span, trace.set_span_in_context(span), len(items))
        for item in items:
            self._traces[item.item_id] = shared

    def record_failed(self, item_id: int, error_type: str | None, message: str | None) -> None:
        """The record failed every attempt: its span (its batch's) ends with an error status."""
        found = self._traces.get(item_id)
        if found is not None:
            found.span.set_attribute("error.type", error_type or "_OTHER")
            found.span.set_status(Status(StatusCode.ERROR, message))

    def record_finished(self, item_id: int) -> None:
        """The record left the in-flight set (done, or let go by the exhaustion policy): its span ends (a batch's
        once its last record finished)."""
        self._leave(item_id)

    def record_cancelled(self, item_id: int, record: Record) -> None:
        """The record was taken out of flight unfinished (revoked, paused, stopped): it runs again later, under a
        new span; this one ends with an event that says so."""
        found = self._traces.get(item_id)
        if found is not None:
            found.span.add_event(CANCELLED_EVENT, {"messaging.destination.partition.id": str(record.partition),
                                                   "messaging.kafka.offset": record.offset})
            self._leave(item_id)

    # ---- engines --------------------------------------------------------------------------------------

    def retrying(self, item_id: int, attempt: int, error_type: str, message: str,
                 records: int | None = None) -> None:
        """Attempt ``attempt`` failed and another follows after a backoff: an event on the span (a retried error is
        not the span's error). ``records``: for a batch, how many of its records the attempt failed."""
        found = self._traces.get(item_id)
        if found is not None:
            attributes: dict[str, AttributeValue] = {"pyrallel.attempt": attempt, "error.type": error_type,
                                                     "exception.message": message}
            if records is not None:
                attributes["pyrallel.failed_records"] = records
            found.span.add_event(RETRY_EVENT, attributes)

    def attach(self, item_id: int) -> Token[otel_context.Context] | None:
        """Make the item's span current (the async engine, in the attempt's task, right before the handler call);
        None if it has none. :meth:`detach` undoes it right after the call."""
        found = self._traces.get(item_id)
        return otel_context.attach(found.context) if found is not None else None

    @staticmethod
    def detach(token: Token[otel_context.Context]) -> None:
        otel_context.detach(token)

    def carrier(self, item_id: int) -> dict[str, str] | None:
        """The item's span context as propagation fields, for the process engine to send to its worker."""
        found = self._traces.get(item_id)
        if found is None:
            return None
        fields: dict[str, str] = {}
        propagate.inject(fields, found.context)
        return fields

    # ---- exhaustion policy ----------------------------------------------------------------------------

    def task_context(self, item_id: int) -> contextvars.Context | None:
        """A copy of the current context with the item's span current: Exhaustion runs the policy's task in it."""
        found = self._traces.get(item_id)
        if found is None:
            return None
        context = contextvars.copy_context()
        context.run(otel_context.attach, found.context)
        return context

    def dead_letter_send(self, record: Record, topic: str) -> DeadLetterSend:
        """Start the span of writing ``record``'s copy to ``topic``: a child of the current span (the record's, in
        the policy's task), linked to the record's creation context (which producer's message this is a copy
        of); the copy's headers then carry this span's context, so the trace goes on to whoever reads the DLQ."""
        created = trace.get_current_span(creation_context(record)).get_span_context()
        links = [Link(created, {"messaging.destination.name": record.topic,
                                "messaging.destination.partition.id": str(record.partition),
                                "messaging.kafka.offset": record.offset})] if created.is_valid else None
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kafka", "messaging.operation.name": "send", "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        }
        key = _key_text(record.key)
        if key is not None:
            attributes["messaging.kafka.message.key"] = key
        return DeadLetterSend(self._tracer.start_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes,
                                                      links=links))

    # ---- internals ------------------------------------------------------------------------------------

    def _attributes(self, topic: str | None, partition: int | None) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kafka", "messaging.operation.name": "process", "messaging.operation.type": "process",
            "messaging.consumer.group.name": self._group_id,
        }
        if topic is not None:
            attributes["messaging.destination.name"] = topic
        if partition is not None:
            attributes["messaging.destination.partition.id"] = str(partition)
        return attributes

    def _leave(self, item_id: int) -> None:
        found = self._traces.pop(item_id, None)
        if found is not None:
            found.open -= 1
            if found.open == 0:
                found.span.end()


def _key_text(key: bytes | None) -> str | None:
    """A key as the conventions want it: its text when it is UTF-8; None for no key or a binary one (which has no
    canonical string form)."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None
