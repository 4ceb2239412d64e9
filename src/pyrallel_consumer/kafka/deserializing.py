"""RecordDeserializer: ``key_deserializer`` / ``value_deserializer`` applied as confluent-kafka's DeserializingConsumer
applies them, so its ``AvroDeserializer``, ``JSONDeserializer`` and ``ProtobufDeserializer`` work unchanged.

The key first, then the value (a key deserializer may leave state for the value's, as the schema-registry ones do),
with one ``SerializationContext`` of the record's topic, the field and the record's headers as a list (where the
schema-registry deserializers look for a schema id); a null key or value is passed as None, which those
deserializers return as None. Any exception of a deserializer makes the record a poison record: a
``KeyDeserializationError`` or ``ValueDeserializationError`` whose cause is that exception.

Who calls it, never on the event loop (a schema-registry deserializer fetches an unknown schema id over HTTP,
synchronously, and a CPU-heavy format would hold the loop): with the async engine, the BrokerPoller on its thread,
for each fetched batch before it is posted to the loop (:meth:`RecordDeserializer.messages`); with the process
engine, each worker process on its main thread, per record before its handler runs (:meth:`RecordDeserializer.record`).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message
from confluent_kafka.serialization import MessageField, SerializationContext

from pyrallel_consumer.deserialization import (
    DeserializationError,
    Deserializer,
    KeyDeserializationError,
    ValueDeserializationError,
)
from pyrallel_consumer.record import Record
from pyrallel_consumer.references import resolve

Contents = tuple[object, object]
"""A record's deserialized key and value."""
Headers = list[tuple[str, str | bytes | None]]
"""Headers as a SerializationContext carries them (and as ``Message.headers()`` returns them)."""


class RecordDeserializer:
    """The configured key and value deserializers (a missing one leaves its field as bytes)."""

    def __init__(self, key: Deserializer | None, value: Deserializer | None) -> None:
        self._key = key
        self._value = value

    @classmethod
    def of(cls, key: Deserializer | str | None, value: Deserializer | str | None) -> RecordDeserializer | None:
        """From the config's fields (an import reference is imported here); None when neither is set."""
        if key is None and value is None:
            return None
        return cls(resolve(key) if isinstance(key, str) else key, resolve(value) if isinstance(value, str) else value)

    def contents(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None) -> Contents:
        """The deserialized key and value; KeyDeserializationError or ValueDeserializationError when one fails."""
        ctx = SerializationContext(topic, MessageField.KEY, headers)
        out_key: object = key
        if self._key is not None:
            try:
                out_key = self._key(key, ctx)
            except Exception as exc:  # any failure of the user's deserializer makes a poison record
                raise KeyDeserializationError(exc) from exc
        out_value: object = value
        if self._value is not None:
            ctx.field = MessageField.VALUE
            try:
                out_value = self._value(value, ctx)
            except Exception as exc:
                raise ValueDeserializationError(exc) from exc
        return out_key, out_value

    def messages(self, messages: list[Message]) -> list[Contents | DeserializationError | None]:
        """For each fetched message, in order: its contents, the error that makes it poison, or None for an error
        message (which carries no record). Called on the poller thread."""
        results: list[Contents | DeserializationError | None] = []
        for msg in messages:
            if msg.error() is not None:
                results.append(None)
                continue
            try:
                results.append(self.contents(msg.topic(), msg.key(), msg.value(), msg.headers()))  # type: ignore[arg-type]
            except DeserializationError as exc:
                results.append(exc)
        return results

    def record(self, record: Record) -> Record[Any, Any]:
        """The record a handler gets; raises the DeserializationError of a poison record. Called in a worker."""
        headers: Headers = list(record.headers)
        return typed_record(record, self.contents(record.topic, record.key, record.value, headers or None))


def typed_record(record: Record, contents: Contents) -> Record[Any, Any]:
    """``record`` (as fetched) with its deserialized key and value."""
    key, value = contents
    return Record(record.topic, record.partition, record.offset, key, value, record.headers, record.timestamp)
