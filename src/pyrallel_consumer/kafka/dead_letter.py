"""Dead-letter publishing: the exhaustion policy that lets a failed record's offset be committed only
after a copy of it is safely on the dead-letter topic.

The producer is idempotent with acks=all; the policy answers True only on the broker's acknowledgement.
When the write fails the record stays incomplete, Exhaustion calls the policy again after a
backoff, and the partition's commit waits: it stalls rather than loses the record. PyrallelConsumer creates it
(the producer comes from KafkaClients); it is awaited on the event loop, and its own thread serves the
producer's delivery callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.control.observer import ConsumerObserver
from pyrallel_consumer.deserialization import failed_field
from pyrallel_consumer.execution.engine import Completion
from pyrallel_consumer.kafka.clients import KafkaClients
from pyrallel_consumer.kafka.transactions import Transactions
from pyrallel_consumer.observability.log_events import RECORD_EXHAUSTED, event_extra
from pyrallel_consumer.output import Output
from pyrallel_consumer.record import Record

if TYPE_CHECKING:
    from pyrallel_consumer.observability.tracing import DeadLetterSend, Tracing

log = logging.getLogger(__name__)

ERROR_MESSAGE_LIMIT = 1000


def dead_letter_headers(
    record: Record, completion: Completion, group_id: str, send: DeadLetterSend | None = None
) -> list[tuple[str, str | bytes | None]]:
    """The record's own headers plus the x-* headers that say where it came from and why it failed; a record that
    could not be deserialized also gets ``x-deserialization-failed`` (``key`` or ``value``).

    With tracing (``send``, the span of this write) the record's trace context headers are replaced by the span's.
    """
    message = completion.error_message or ""
    if len(message) > ERROR_MESSAGE_LIMIT:
        message = message[: ERROR_MESSAGE_LIMIT - 3] + "..."
    headers: list[tuple[str, str | bytes | None]] = list(record.headers if send is None else send.carry(record.headers))
    headers += [
        ("x-error-type", (completion.error_type or "unknown").encode()),
        ("x-error-message", message.encode("utf-8", errors="replace")),
        ("x-attempts", str(completion.attempts).encode()),
        ("x-source-topic", record.topic.encode()),
        ("x-source-partition", str(record.partition).encode()),
        ("x-source-offset", str(record.offset).encode()),
        ("x-consumer-group", group_id.encode()),
    ]
    field = failed_field(completion.error_type)
    if field is not None:
        headers.append(("x-deserialization-failed", field.encode()))
    return headers


def _log_dead_lettered(config: ConsumerConfig, record: Record, topic: str, completion: Completion, how: str) -> None:
    """The INFO line (event ``record_exhausted``, outcome ``dlq``) of a copy the DLQ holds now, or will with the
    transaction ``how`` names; both publishers log it, on the event loop."""
    log.info("Dead-lettered %s[%d]@%d to %s%s after %d attempt(s): %s", record.topic, record.partition,
             record.offset, topic, how, completion.attempts, completion.error_type,
             extra=event_extra(RECORD_EXHAUSTED, topic=record.topic, partition=record.partition,
                               offset=record.offset, attempts=completion.attempts,
                               error_type=completion.error_type, error=completion.error_message,
                               outcome="dlq", dlq_topic=topic, color=config.color, instance=config.instance_id))


class DeadLetterPublisher:
    """Exhaustion policy that publishes to ``dlq_topic`` (or ``<topic><dlq_suffix>``) and awaits the ack."""

    outcome = "dlq"

    def __init__(self, config: ConsumerConfig, clients: KafkaClients, observer: ConsumerObserver | None = None,
                 tracing: Tracing | None = None) -> None:
        self._config = config
        self._observer = observer or ConsumerObserver()
        self._tracing = tracing
        self._producer = clients.dead_letter_producer(config)
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._serve_callbacks, name="pyrallel-dlq", daemon=True)
        self._poller.start()

    def topic_for(self, record: Record) -> str:
        return self._config.dlq_topic or f"{record.topic}{self._config.dlq_suffix}"

    def _serve_callbacks(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    async def __call__(self, record: Record, completion: Completion) -> bool:
        topic = self.topic_for(record)
        send = self._tracing.dead_letter_send(record, topic) if self._tracing is not None else None
        failure: tuple[str, str] | None = ("CancelledError", "stopped before the broker answered")
        try:
            failure = await self._write(record, completion, topic, send)
        finally:
            if send is not None:
                send.end(failure)
        if failure is not None:
            return self._failed(record, topic, failure[1])
        _log_dead_lettered(self._config, record, topic, completion, "")
        return True

    async def _write(self, record: Record, completion: Completion, topic: str,
                     send: DeadLetterSend | None) -> tuple[str, str] | None:
        """Produce the copy and wait for the broker's answer: None once acknowledged, else (error type, why)."""
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[KafkaError | None] = loop.create_future()

        def settle(err: KafkaError | None) -> None:
            if not acked.done():
                acked.set_result(err)

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            loop.call_soon_threadsafe(settle, err)

        full = self._config.dlq_payload_mode == "full"
        try:
            self._producer.produce(
                topic,
                key=record.key if full else None,
                value=record.value if full else None,
                headers=dead_letter_headers(record, completion, self._config.group_id, send),
                on_delivery=on_delivery,
            )
        except (BufferError, ValueError, KafkaException) as exc:
            return type(exc).__name__, str(exc)
        err = await acked
        return None if err is None else (err.name(), str(err))

    def _failed(self, record: Record, topic: str, reason: str) -> bool:
        self._observer.error("dlq")
        log.warning("Dead-letter write of %s[%d]@%d to %s failed (%s); the record stays uncommitted and "
                    "the write is retried", record.topic, record.partition, record.offset, topic, reason)
        return False

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)
        self._closed.set()
        self._poller.join(timeout_s)


class TransactionalDeadLetters:
    """Exactly-once's dead-letter policy: the copy goes into the open transaction, with the record's offset.

    It queues the copy on the transactional producer and lets the record go at once: the record is marked complete
    after the copy was queued, so the transaction that commits its offset also commits the copy, and an aborted
    transaction drops both (the record runs again). Called by Exhaustion on the event loop; PyrallelConsumer
    creates it for ``dlq_enabled`` under ``processing_guarantee="exactly_once"``.
    """

    outcome = "dlq"

    def __init__(self, config: ConsumerConfig, transactions: Transactions, tracing: Tracing | None = None) -> None:
        self._config = config
        self._transactions = transactions
        self._tracing = tracing

    def topic_for(self, record: Record) -> str:
        return self._config.dlq_topic or f"{record.topic}{self._config.dlq_suffix}"

    async def __call__(self, record: Record, completion: Completion) -> bool:
        if not self._transactions.usable:
            return False  # the consumer is stopping on the producer's failure: the record stays incomplete
        full = self._config.dlq_payload_mode == "full"
        topic = self.topic_for(record)
        send = self._tracing.dead_letter_send(record, topic) if self._tracing is not None else None
        headers = tuple((name, value.encode() if isinstance(value, str) else value)
                        for name, value in dead_letter_headers(record, completion, self._config.group_id, send))
        self._transactions.produce([Output(topic, record.value if full else None, record.key if full else None,
                                           headers)])
        if send is not None:
            send.end(None)  # queued in the transaction; it commits (or aborts) with the record's offset
        _log_dead_lettered(self._config, record, topic, completion, " (in the transaction of its offset)")
        return True
