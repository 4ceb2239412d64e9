"""The schemas of the schema-registry tests, their serializers and deserializers (each with a registry client of its
own, so a reader knows no schema but what the registry tells it), and the Avro value deserializer the process
engine's workers import.

``AVRO_ORDER`` and ``JSON_ORDER`` describe one order (``id``, ``item``); ``AVRO_ORDER_V2`` is its Avro evolution, a
field added with a default, which a registry keeping backward compatibility accepts as the subject's next version.

A schema-registry deserializer holds an HTTP client, so a process-engine worker cannot be handed one: each worker
imports ``avro_values`` by its reference (``AVRO_VALUES_REF``) and builds its own ``AvroDeserializer`` at its first
record, for the registry whose URL the test put in ``TEST_SCHEMA_REGISTRY_URL`` before the consumer started
(spawned workers inherit the environment; the registry's port is only known once the session started it). Not a
``PYRALLEL_*`` name: ConsumerConfig warns about those that name no field.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import SerializationContext

REGISTRY_URL_ENV = "TEST_SCHEMA_REGISTRY_URL"

_TOPIC_SUBJECTS = {"subject.name.strategy.type": "TOPIC"}
"""The ``conf`` of every serializer and deserializer here: subjects are ``<topic>-value``, named without
asking the registry. confluent-kafka 2.16's default strategy, ASSOCIATED, first asks the registry's associations API,
which Apicurio 3.3.3 does not have; its 404 for that path (for any unknown path) is lost now and then, 2 to 4 times
in 1,000 requests here, and the client then waits for it, forever without a timeout."""
_REQUEST_TIMEOUT_S = 10
"""Per request of the tests' registry clients (confluent-kafka's default is none): an answer that never comes is
retried, within the client's ``max.retries``, instead of holding a test (or a consumer's poller thread) forever."""

_ORDER_FIELDS = [{"name": "id", "type": "long"}, {"name": "item", "type": "string"}]
AVRO_ORDER = json.dumps({"type": "record", "name": "Order", "namespace": "pyrallel.test", "fields": _ORDER_FIELDS})
QUANTITY_DEFAULT = 1
"""What a reader of ``AVRO_ORDER_V2`` sees as the quantity of an order written with ``AVRO_ORDER``."""
AVRO_ORDER_V2 = json.dumps({
    "type": "record", "name": "Order", "namespace": "pyrallel.test",
    "fields": [*_ORDER_FIELDS, {"name": "quantity", "type": "int", "default": QUANTITY_DEFAULT}],
})
JSON_ORDER = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
    "properties": {"id": {"type": "integer"}, "item": {"type": "string"}}, "required": ["id", "item"],
})


def registry_client(url: str) -> SchemaRegistryClient:
    """A new client (no schema cached) of the registry at ``url``, with the tests' request timeout."""
    return SchemaRegistryClient({"url": url, "timeout": _REQUEST_TIMEOUT_S})


def avro_serializer(url: str, schema: str = AVRO_ORDER) -> AvroSerializer:
    """Writes with ``schema``, registering it under ``<topic>-value`` (the registry checks its compatibility)."""
    return AvroSerializer(registry_client(url), schema, conf=_TOPIC_SUBJECTS)


def avro_deserializer(url: str, reader_schema: str | None = None) -> AvroDeserializer:
    """Reads with the writer's schema fetched by the id in the bytes, resolved to ``reader_schema`` when given."""
    return AvroDeserializer(registry_client(url), reader_schema, conf=_TOPIC_SUBJECTS)


def json_serializer(url: str) -> JSONSerializer:
    return JSONSerializer(JSON_ORDER, registry_client(url), conf=_TOPIC_SUBJECTS)


def json_deserializer(url: str) -> JSONDeserializer:
    """Validates against the writer's schema, fetched by the id in the bytes."""
    return JSONDeserializer(None, schema_registry_client=registry_client(url), conf=_TOPIC_SUBJECTS)


@functools.cache
def _registry_deserializer() -> AvroDeserializer:
    return avro_deserializer(os.environ[REGISTRY_URL_ENV])


def avro_values(value: bytes | None, ctx: SerializationContext | None = None) -> Any:
    """Avro values written with any schema of the registry, as dicts (the writer's schema, fetched by the id in the
    bytes); called by a process-engine worker on its main thread."""
    return _registry_deserializer()(value, ctx)


AVRO_VALUES_REF = f"{__name__}:avro_values"
