"""Inbox: turns the raw batches the poller thread fetched into Records, on the event loop, in slices.

The BrokerPoller hands each fetched batch over with ``call_soon_threadsafe(inbox.put, ...)``, so the poller
thread holds the GIL only briefly; everything here runs on the event loop. Converted records go to the sink
(the Coordinator) tagged with the assignment epoch they were fetched under; what was taken in is reported to
the fetch gate. When the poller thread deserialized a batch (``kafka/deserializing.py``), each record goes with the
record its handler gets, or the error that makes it a poison record.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message

from pyrallel_consumer.control.offset_tracker import TopicPartitionKey
from pyrallel_consumer.deserialization import DeserializationError, Deserialized
from pyrallel_consumer.kafka.deserializing import Contents, typed_record
from pyrallel_consumer.kafka.events import PollerSink
from pyrallel_consumer.kafka.fetch_gate import FetchGate
from pyrallel_consumer.record import Header, Record

log = logging.getLogger(__name__)

_CONVERT_SLICE = 100
"""Messages converted per loop callback: about half a millisecond of loop time."""
Fetched = tuple[list[Message], dict[TopicPartitionKey, int], list[Contents | DeserializationError | None] | None]
"""A fetched batch as the poller hands it over: messages, epochs of their partitions, what was deserialized."""


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _headers(raw: object) -> tuple[Header, ...]:
    """Headers as (name, bytes) pairs, whatever shape librdkafka hands them over in."""
    if not raw:
        return ()
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((str(name), _as_bytes(value)) for name, value in cast("list[tuple[str, Any]]", items))


class Inbox:
    """Fetched batches waiting for conversion, oldest first (a partition's offsets stay in order)."""

    def __init__(self, sink: PollerSink, gate: FetchGate, loop: asyncio.AbstractEventLoop,
                 on_fatal: Callable[[], None]) -> None:
        self._sink = sink
        self._gate = gate
        self._loop = loop
        self._on_fatal = on_fatal
        """Tells the poller thread to stop: a fatal fetch error ends the consumer."""
        self._batches: collections.deque[Fetched] = collections.deque()
        self._pos = 0
        self._converting = False

    def put(self, messages: list[Message], epochs: dict[TopicPartitionKey, int],
            contents: list[Contents | DeserializationError | None] | None = None) -> None:
        """Queue a fetched batch behind the ones not converted yet; ``contents``: what the poller thread
        deserialized of each message (``RecordDeserializer.messages``), None when it deserialized nothing."""
        self._batches.append((messages, epochs, contents))
        if not self._converting:
            self._converting = True
            self._convert()

    def _convert(self) -> None:
        """Turn up to ``_CONVERT_SLICE`` messages into (Record, epoch) pairs for the sink, then yield.

        Converting a whole fetch at once would hold the loop for milliseconds and make every handler's timer
        late; slices let due timers run in between.
        """
        batches = self._batches
        batch: list[tuple[Record, int]] = []
        deserialized: list[Deserialized] = []
        taken = taken_bytes = 0
        while batches and taken < _CONVERT_SLICE:
            messages, epochs, contents = batches[0]
            start = self._pos
            end = min(len(messages), start + _CONVERT_SLICE - taken)
            for index in range(start, end):
                msg = messages[index]
                taken_bytes += len(msg)
                err = msg.error()
                if err is not None:
                    # librdkafka hands a fatal error (e.g. a static member fenced by another process with its
                    # group.instance.id) to consume() as code _FATAL, whose fatal() flag is not set.
                    if err.fatal() or err.code() == KafkaError._FATAL:
                        self._on_fatal()
                        self._sink.on_poller_failed(KafkaException(err))
                        batches.clear()
                        self._converting = False
                        return
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("Fetch error: %s", err)
                    continue
                topic, partition = msg.topic(), msg.partition()
                epoch = epochs.get((topic, partition))  # type: ignore[arg-type]
                if epoch is None:
                    continue
                ts_type, ts = msg.timestamp()
                record = Record(topic, partition, msg.offset(), _as_bytes(msg.key()),  # type: ignore[arg-type]
                                _as_bytes(msg.value()), _headers(msg.headers()), ts if ts_type else -1)
                batch.append((record, epoch))
                if contents is not None:
                    result = contents[index]
                    deserialized.append(typed_record(record, result) if isinstance(result, tuple) else result)
            taken += end - start
            if end == len(messages):
                batches.popleft()
                self._pos = 0
            else:
                self._pos = end
        self._gate.ingested(taken, taken_bytes)
        if batch:
            self._sink.on_records(batch, deserialized or None)
        if batches:
            self._loop.call_soon(self._convert)
        else:
            self._converting = False
