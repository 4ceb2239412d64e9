"""The inbox ends the consumer on a fatal fetch error, however librdkafka flags it, and skips the others."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from pyrallel_consumer.kafka.events import PollerSink
from pyrallel_consumer.kafka.fetch_gate import FetchGate
from pyrallel_consumer.kafka.inbox import Inbox
from pyrallel_consumer.record import Record

pytestmark = pytest.mark.unit


class _ErrorMessage:
    """What consume() returns for an error event: no record, only ``error()``."""

    def __init__(self, error: KafkaError) -> None:
        self._error = error

    def error(self) -> KafkaError:
        return self._error

    def __len__(self) -> int:
        return 0


class _Sink:
    def __init__(self) -> None:
        self.failures: list[BaseException] = []
        self.records: list[tuple[Record, int]] = []

    def on_records(self, batch: list[tuple[Record, int]], deserialized: list[Any] | None = None) -> None:
        self.records += batch

    def on_poller_failed(self, error: BaseException) -> None:
        self.failures.append(error)


def _inbox(sink: _Sink, fatal: list[bool]) -> Inbox:
    loop = asyncio.new_event_loop()
    loop.close()  # put() converts at once; nothing is scheduled for a single short batch
    return Inbox(cast(PollerSink, sink), FetchGate(100, 10_000), loop, on_fatal=lambda: fatal.append(True))


@pytest.mark.parametrize("error", [
    # A static member fenced by another process with its group.instance.id: consume() hands over code _FATAL,
    # whose fatal() flag is False (seen with librdkafka 2.16 against Kafka 4.1).
    KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer with same group.instance.id"),
    KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced", fatal=True),
], ids=["code-_FATAL", "fatal-flag"])
def test_a_fatal_fetch_error_stops_the_poller_and_fails_the_consumer(error: KafkaError) -> None:
    sink, fatal = _Sink(), list[bool]()
    _inbox(sink, fatal).put([cast(Message, _ErrorMessage(error))], {})
    assert fatal == [True]
    assert len(sink.failures) == 1 and isinstance(sink.failures[0], KafkaException)
    failure: Any = sink.failures[0].args[0]
    assert failure.code() == error.code()


def test_a_transient_fetch_error_is_skipped() -> None:
    sink, fatal = _Sink(), list[bool]()
    _inbox(sink, fatal).put([cast(Message, _ErrorMessage(KafkaError(KafkaError._TRANSPORT, "disconnected")))], {})
    assert fatal == [] and sink.failures == [] and sink.records == []
