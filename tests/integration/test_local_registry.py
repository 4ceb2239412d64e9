"""The local schema registry is real and speaks what confluent-kafka's serdes speak: a value serialized with
``AvroSerializer`` (or ``JSONSerializer``) registers its schema through the Confluent-compatible API, and a reader
with a fresh client, knowing no schema, gets the value back by the schema id in the bytes. No Kafka is involved: the
Kafka round trips of typed records build on this fixture."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from pyrallel_tools.localregistry.server import LocalRegistry

pytestmark = pytest.mark.registry

ORDER = {"id": 7, "item": "book"}
AVRO_ORDER = json.dumps({
    "type": "record", "name": "Order", "namespace": "pyrallel.test",
    "fields": [{"name": "id", "type": "long"}, {"name": "item", "type": "string"}],
})
JSON_ORDER = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
    "properties": {"id": {"type": "integer"}, "item": {"type": "string"}}, "required": ["id", "item"],
})


def _round_trip(topic: str, serializer: Callable[[Any, SerializationContext], bytes | None],
                deserializer: Callable[[bytes, SerializationContext], Any]) -> tuple[bytes, Any]:
    context = SerializationContext(topic, MessageField.VALUE)
    data = serializer(ORDER, context)
    assert data is not None
    return data, deserializer(data, context)


def _registered_id(registry: LocalRegistry, subject: str) -> int:
    """The id the registry gives the subject's latest version, asked by a client of its own (no cache shared)."""
    return int(SchemaRegistryClient({"url": registry.url}).get_latest_version(subject).schema_id)


def test_avro_value_round_trips_through_the_registry(schema_registry: LocalRegistry,
                                                     unique_name: Callable[[str], str]) -> None:
    topic = unique_name("orders")
    writer = AvroSerializer(SchemaRegistryClient({"url": schema_registry.url}), AVRO_ORDER)
    reader = AvroDeserializer(SchemaRegistryClient({"url": schema_registry.url}))  # no schema: the registry's

    data, value = _round_trip(topic, writer, reader)

    assert value == ORDER
    assert data[0] == 0  # Confluent's wire format: magic byte, then the schema id
    assert int.from_bytes(data[1:5], "big") == _registered_id(schema_registry, f"{topic}-value")


def test_json_schema_value_round_trips_through_the_registry(schema_registry: LocalRegistry,
                                                            unique_name: Callable[[str], str]) -> None:
    topic = unique_name("orders")
    writer = JSONSerializer(JSON_ORDER, SchemaRegistryClient({"url": schema_registry.url}))
    reader = JSONDeserializer(None, schema_registry_client=SchemaRegistryClient({"url": schema_registry.url}))

    data, value = _round_trip(topic, writer, reader)

    assert value == ORDER
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == _registered_id(schema_registry, f"{topic}-value")
