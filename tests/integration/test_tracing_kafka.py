"""OpenTelemetry tracing on the real broker, judged with the real SDK (in-memory exporter) and its W3C propagator.

A producer span per record injects ``traceparent`` into the record's headers; the consumer's spans must continue
those traces: a process span per record (a child of its producer span), retries as events, a failure as the span's
status, a dead-letter copy whose headers carry the trace onward, one span per batch linked to its records, and the
handler's own spans as children, in the async engine's tasks and in the process engine's workers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from tests.integration import tracing_handlers
from tests.integration.tracing_handlers import handler_spans
from tests.support import committed, read_all, wait_for

from pyrallel_consumer import (
    Completion,
    ConsumerConfig,
    ConsumerObserver,
    PyrallelConsumer,
    PyrallelShareConsumer,
    Record,
)
from pyrallel_tools.benchmark.share import set_share_group

pytestmark = pytest.mark.integration

ENGINES = ["async", "process"]
_tracer = trace.get_tracer("tests.producer")


@pytest.fixture
def memory(span_exporter: InMemorySpanExporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> InMemorySpanExporter:
    """The in-memory exporter; the handlers' directory (attempt counts, the workers' spans) set."""
    monkeypatch.setenv(tracing_handlers.DIR_ENV, str(tmp_path))
    return span_exporter


def produce_traced(bootstrap: str, topic: str, keys: list[bytes]) -> dict[int, SpanContext]:
    """One record per key, each sent under a producer span whose context its headers carry: offset -> that span."""
    producer = Producer({"bootstrap.servers": bootstrap})
    sent: dict[int, SpanContext] = {}

    def delivered(err: Any, msg: Any, context: SpanContext) -> None:
        assert err is None, err
        sent[msg.offset()] = context

    for i, key in enumerate(keys):
        with _tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            context = span.get_span_context()
            producer.produce(topic, key=key, value=str(i).encode(),
                             headers=[(name, value.encode()) for name, value in carrier.items()],
                             on_delivery=lambda err, msg, context=context: delivered(err, msg, context))
    producer.flush(30)
    assert len(sent) == len(keys)
    return sent


def config(bootstrap: str, group: str, topic: str, engine: str, **extra: object) -> ConsumerConfig:
    values: dict[str, object] = {
        "bootstrap_servers": bootstrap, "group_id": group, "topics": [topic], "engine": engine,
        "process_workers": 1, "commit_interval_ms": 100, "max_retries": 2, "retry_backoff_ms": 10,
        "max_retry_backoff_ms": 50, "tracing_enabled": True,
    }
    values.update(extra)
    return ConsumerConfig(**values)


async def consume_all(consumer_config: ConsumerConfig, count: int, **arguments: Any) -> None:
    """Run a consumer until the group committed ``count`` records of its one single-partition topic, then stop."""
    bootstrap, group, topic = consumer_config.bootstrap_servers, consumer_config.group_id, consumer_config.topics[0]
    async with PyrallelConsumer(consumer_config, **arguments):
        await wait_for(lambda: committed(bootstrap, group, topic, 1)[0][0] == count, 60, "every record committed")


class AmbientSpans(ConsumerObserver):
    """Which span is current where the consumer reports a completion (between handler calls): none should be."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int] | None] = []

    def record_completed(self, record: Record, completion: Completion) -> None:
        context = trace.get_current_span().get_span_context()
        self.seen.append(ids(context) if context.is_valid else None)


def consumer_spans(memory: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in memory.get_finished_spans()
            if s.instrumentation_scope is not None and s.instrumentation_scope.name == "pyrallel_consumer"
            and s.kind == kind]


def traceparents(message: Any) -> list[SpanContext]:
    """The span contexts a consumed message's ``traceparent`` headers name."""
    found = []
    for name, value in message.headers() or []:
        if name == "traceparent":
            _, trace_id, span_id, _ = value.decode().split("-")
            found.append((int(trace_id, 16), int(span_id, 16)))
    return found


def ids(context: SpanContext | None) -> tuple[int, int] | None:
    return (context.trace_id, context.span_id) if context is not None else None


@pytest.mark.parametrize("engine", ENGINES)
async def test_record_spans_continue_the_producers_trace(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
    memory: InMemorySpanExporter, tmp_path: Path, engine: str,
) -> None:
    topic, group = new_topic(1), unique_name("g")
    keys = [b"k0", b"k1", b"flaky", b"k3", b"poison", b"k5", b"\xff\xfe", b"k7"]
    sent = produce_traced(kafka_bootstrap, topic, keys)
    handler = tracing_handlers.handle_async if engine == "async" else tracing_handlers.handle
    observer = AmbientSpans()
    await consume_all(config(kafka_bootstrap, group, topic, engine, dlq_enabled=True), len(keys), handler=handler,
                      observer=observer)

    process = {s.attributes["messaging.kafka.offset"]: s for s in consumer_spans(memory, SpanKind.CONSUMER)}
    assert sorted(process) == list(range(len(keys)))
    for offset, span in process.items():
        assert span.name == f"process {topic}"
        assert ids(span.parent) == ids(sent[offset]), "the record's producer span is the parent"
        assert [ids(link.context) for link in span.links] == [ids(sent[offset])]
        expected = {"messaging.system": "kafka", "messaging.operation.name": "process",
                    "messaging.operation.type": "process", "messaging.destination.name": topic,
                    "messaging.destination.partition.id": "0", "messaging.consumer.group.name": group}
        assert {k: span.attributes[k] for k in expected} == expected
    assert process[0].attributes["messaging.kafka.message.key"] == "k0"
    assert "messaging.kafka.message.key" not in process[6].attributes, "a binary key has no text form"

    # the handler's own spans, in the engine's task or in the worker process, are children of the record's span
    attempts: dict[int, int] = {}
    for span in handler_spans(engine, tmp_path, memory):
        offset = int(span.name.split()[1])
        assert (span.trace_id, span.parent_id) == ids(process[offset].context), span
        attempts[offset] = attempts.get(offset, 0) + 1
    assert attempts == {offset: 3 if offset in (2, 4) else 1 for offset in range(len(keys))}

    flaky, poison = process[2], process[4]
    assert [(e.name, e.attributes["pyrallel.attempt"], e.attributes["error.type"]) for e in flaky.events] == [
        ("pyrallel.retry", 1, "ValueError"), ("pyrallel.retry", 2, "ValueError")]
    assert flaky.status.status_code is StatusCode.UNSET, "retried errors are not the span's error"
    assert [e.attributes["pyrallel.attempt"] for e in poison.events] == [1, 2]
    assert poison.status.status_code is StatusCode.ERROR
    assert poison.status.description == "attempt 3 of offset 4 fails"
    assert poison.attributes["error.type"] == "ValueError"

    # the dead-letter copy: a producer span, child of the record's span, linked to the original message; the copy's
    # headers carry that span's context (and no other)
    (send,) = consumer_spans(memory, SpanKind.PRODUCER)
    assert send.name == f"send {topic}.dlq"
    assert ids(send.parent) == ids(poison.context)
    assert [ids(link.context) for link in send.links] == [ids(sent[4])]
    (copy,) = read_all(kafka_bootstrap, f"{topic}.dlq", 1)
    assert traceparents(copy) == [ids(send.context)]
    assert observer.seen == [None] * len(keys), "no record's span leaks into the consumer's own code"


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_batch_span_links_its_records(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
    memory: InMemorySpanExporter, tmp_path: Path, engine: str,
) -> None:
    topic, group = new_topic(1), unique_name("g")
    sent = produce_traced(kafka_bootstrap, topic, [f"k{i}".encode() for i in range(10)])
    handler = tracing_handlers.handle_batch_async if engine == "async" else tracing_handlers.handle_batch
    await consume_all(config(kafka_bootstrap, group, topic, engine, batch_max_records=10, batch_linger_ms=200),
                      len(sent), batch_handler=handler)

    batches = consumer_spans(memory, SpanKind.CONSUMER)
    linked: dict[int, tuple[int, int] | None] = {}
    for span in batches:
        assert span.name == f"process {topic}"
        assert span.parent is None, "a batch has no one parent: its records are links"
        assert span.attributes["messaging.batch.message_count"] == len(span.links)
        for link in span.links:
            offset = link.attributes["messaging.kafka.offset"]
            assert offset not in linked, f"offset {offset} linked twice"
            linked[offset] = ids(link.context)
    assert linked == {offset: ids(context) for offset, context in sent.items()}

    (first,) = [s for s in batches if any(link.attributes["messaging.kafka.offset"] == 0 for link in s.links)]
    assert [(e.name, e.attributes["pyrallel.attempt"], e.attributes["pyrallel.failed_records"])
            for e in first.events] == [("pyrallel.retry", 1, len(first.links))], "its first attempt failed whole"
    calls = handler_spans(engine, tmp_path, memory)
    assert {(s.trace_id, s.parent_id) for s in calls} == {ids(s.context) for s in batches}, \
        "each handler call is a child of its batch's span"


async def test_exactly_once_dead_letter_copy_carries_the_trace(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
    memory: InMemorySpanExporter,
) -> None:
    topic, group = new_topic(1), unique_name("g")
    sent = produce_traced(kafka_bootstrap, topic, [b"k0", b"poison", b"k2"])
    await consume_all(config(kafka_bootstrap, group, topic, "async", dlq_enabled=True, max_retries=0,
                             processing_guarantee="exactly_once"), len(sent), handler=tracing_handlers.handle_async)

    process = {s.attributes["messaging.kafka.offset"]: s for s in consumer_spans(memory, SpanKind.CONSUMER)}
    (send,) = consumer_spans(memory, SpanKind.PRODUCER)
    assert ids(send.parent) == ids(process[1].context)
    assert [ids(link.context) for link in send.links] == [ids(sent[1])]
    (copy,) = read_all(kafka_bootstrap, f"{topic}.dlq", 1)
    assert traceparents(copy) == [ids(send.context)]


async def test_tracing_off_makes_no_spans_and_passes_the_context_on_untouched(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
    memory: InMemorySpanExporter, tmp_path: Path,
) -> None:
    topic, group = new_topic(1), unique_name("g")
    sent = produce_traced(kafka_bootstrap, topic, [b"k0", b"poison", b"k2"])
    await consume_all(config(kafka_bootstrap, group, topic, "async", dlq_enabled=True, max_retries=0,
                             tracing_enabled=False), len(sent), handler=tracing_handlers.handle_async)

    assert consumer_spans(memory, SpanKind.CONSUMER) == consumer_spans(memory, SpanKind.PRODUCER) == []
    assert sorted(s.name for s in handler_spans("async", tmp_path, memory)) == ["handle 0", "handle 1", "handle 2"]
    assert all(s.parent_id is None for s in handler_spans("async", tmp_path, memory))
    (copy,) = read_all(kafka_bootstrap, f"{topic}.dlq", 1)
    assert traceparents(copy) == [ids(sent[1])], "the copy keeps the record's own trace context"


async def test_a_share_group_traces_each_delivery_of_a_record(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
    memory: InMemorySpanExporter, tmp_path: Path,
) -> None:
    """Share groups: a span per delivery (a released record comes back under a new span), the failed deliveries
    with an error status, the dead-letter copy at the last delivery carrying the trace onward."""
    topic, group = new_topic(1), unique_name("share")
    limit = 3
    set_share_group(kafka_bootstrap, group, {"share.delivery.count.limit": str(limit)})
    keys = [b"k0", b"flaky", b"poison", b"k3"]  # flaky fails its first two attempts, poison every one
    sent = produce_traced(kafka_bootstrap, topic, keys)
    share_config = ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic],
                                  group_type="share", ordering="unordered", max_retries=0, dlq_enabled=True,
                                  tracing_enabled=True)
    consumer = PyrallelShareConsumer(share_config, tracing_handlers.handle_async)
    async with consumer:
        await wait_for(lambda: consumer.metrics().acknowledged["accept"] == len(keys), 60, "every record accepted")

    deliveries: dict[int, list[ReadableSpan]] = {}
    for span in sorted(consumer_spans(memory, SpanKind.CONSUMER), key=lambda s: s.start_time or 0):
        deliveries.setdefault(int(span.attributes["messaging.kafka.offset"]), []).append(span)
    assert {offset: len(spans) for offset, spans in deliveries.items()} == {0: 1, 1: limit, 2: limit, 3: 1}
    for offset, spans in deliveries.items():
        assert all(ids(span.parent) == ids(sent[offset]) for span in spans), "each delivery continues the trace"
    assert [s.status.status_code for s in deliveries[1]] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert [s.status.status_code for s in deliveries[2]] == [StatusCode.ERROR] * limit
    handled = {(span.trace_id, span.parent_id) for span in handler_spans("async", tmp_path, memory)}
    assert handled == {ids(span.context) for spans in deliveries.values() for span in spans}, \
        "the handler's spans are children of the delivery's span"
    (send,) = consumer_spans(memory, SpanKind.PRODUCER)
    assert ids(send.parent) == ids(deliveries[2][-1].context), "the copy is written under the last delivery's span"
    (copy,) = read_all(kafka_bootstrap, f"{topic}.dlq", 1)
    assert traceparents(copy) == [ids(send.context)]
