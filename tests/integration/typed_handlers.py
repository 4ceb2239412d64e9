"""What the process engine's workers of the typed-records tests import by name: a JSON value deserializer (a real
confluent-kafka ``Deserializer``) and a handler that notes the typed values it got.

Each worker imports its own ``json_values`` (``value_deserializer="tests.integration.typed_handlers:json_values"``)
and appends one line per handled record to ``<pid>.typed`` in the directory named by ``PYRALLEL_TEST_DIR``, which
:func:`typed_seen` reads back. The async tests use the same deserializer object and keep what they saw in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from confluent_kafka.serialization import Deserializer, SerializationContext
from tests.integration.process_handlers import DIR_ENV

from pyrallel_consumer.record import Record

Seen = tuple[int, int, str, Any]
"""(partition, offset, type name of the value the handler got, that value)."""


class JsonValues(Deserializer):
    """JSON record values (None for a null value, as confluent-kafka's deserializers do)."""

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        return None if value is None else json.loads(value)


json_values = JsonValues()
VALUES_REF = f"{__name__}:json_values"


def seen(record: Record[bytes | None, Any]) -> Seen:
    return record.partition, record.offset, type(record.value).__name__, record.value


def note_typed(record: Record[bytes | None, Any]) -> None:
    """The process engine's handler: one JSON line per record."""
    with (Path(os.environ[DIR_ENV]) / f"{os.getpid()}.typed").open("a") as out:
        out.write(json.dumps(seen(record)) + "\n")


def typed_seen(directory: Path) -> list[Seen]:
    """What the process engine's handlers noted so far (complete lines only)."""
    lines = [line for path in sorted(directory.glob("*.typed"))
             for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]
    return [tuple(json.loads(line)) for line in lines]  # type: ignore[misc]
