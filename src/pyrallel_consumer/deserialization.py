"""Typed records: what a deserializer is, and the errors that make a record a poison record.

A record whose key or value cannot be deserialized is a poison record: it never reaches the handler, and it goes to
the exhaustion policy at once, without retries (another attempt would read the same bytes). The errors are shared
by every plane: ``kafka/deserializing.py`` raises them (on the poller thread, or in a process-engine worker), the
engines complete such a record after one attempt, the coordinator counts it (``kafka_consumer_errors_total``
``kind="deserialization"``) and the dead-letter publishers mark its copy (``x-deserialization-failed``). It imports
only the record, so a worker process can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pyrallel_consumer.record import Record

Deserializer = Callable[[bytes | None, Any], object]
"""confluent-kafka's serde interface: ``deserializer(data, ctx)`` turns the bytes of a key or value (None for a null
one) into an object; ``ctx`` is a ``confluent_kafka.serialization.SerializationContext`` (topic, field, headers).
confluent-kafka's ``AvroDeserializer``, ``JSONDeserializer`` and ``ProtobufDeserializer`` are such callables, and
so is a plain function."""


class DeserializationError(Exception):
    """A record's key or value could not be deserialized; the deserializer's exception is the ``__cause__``.

    Completions and logs name the subclass (``KeyDeserializationError`` or ``ValueDeserializationError``), so
    ``completion.error_type`` tells a poison record from a handler failure.
    """

    field: ClassVar[str] = ""
    """``"key"`` or ``"value"``: which part of the record failed."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")


class KeyDeserializationError(DeserializationError):
    """The key deserializer failed."""

    field = "key"


class ValueDeserializationError(DeserializationError):
    """The value deserializer failed."""

    field = "value"


Deserialized = Record[Any, Any] | DeserializationError | None
"""What the poller thread deserialized of a fetched record, carried to the engine as ``WorkItem.deserialized``: the
record the handler gets, the error that makes it a poison record, or None (nothing was deserialized ahead)."""

_FIELD_OF = {error.__name__: error.field for error in (KeyDeserializationError, ValueDeserializationError)}


def failed_field(error_type: str | None) -> str | None:
    """``"key"`` or ``"value"`` when a completion's ``error_type`` says its record could not be deserialized, else
    None. By name, because a worker process reports its errors as text; called on the event loop by the ledger (no
    retry), the coordinator (the metric) and the dead-letter headers."""
    return _FIELD_OF.get(error_type) if error_type else None
