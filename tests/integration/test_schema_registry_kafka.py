"""Typed records through a real schema registry (the session's Apicurio Registry, Confluent-compatible API) on the
real broker. Values written by confluent-kafka's ``SerializingProducer`` with the registry's Avro and JSON Schema
serializers reach the handler as the objects produced, with either engine; a record whose bytes name a schema id
the registry does not know is a poison record, dead-lettered with its bytes after one attempt while the records
around it are handled; and records of a schema evolved compatibly (a field added with a default) are read by the
old reader and the new one. Judged against the producer's delivery reports: every acknowledged record is handled
with the object it was written from, or in the DLQ."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import SerializingProducer
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from tests.integration import process_handlers, registry_serde
from tests.integration.registry_serde import (
    AVRO_ORDER,
    AVRO_ORDER_V2,
    QUANTITY_DEFAULT,
    avro_deserializer,
    avro_serializer,
    json_deserializer,
    json_serializer,
    registry_client,
)
from tests.integration.typed_handlers import Handled
from tests.support import committed_total, dead_letters, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer
from pyrallel_tools.localregistry.server import LocalRegistry

pytestmark = [pytest.mark.integration, pytest.mark.registry]

PARTITIONS = 2
HALF = 12
"""Records per half of a topic: before and after the unknown schema id, or of each schema version."""
UNKNOWN_SCHEMA_ID = 0x7FFFFFF0

Delivered = dict[tuple[int, int], Any]
"""The acknowledged records (the delivery reports) by (partition, offset): the value each was written from."""
Serializer = Callable[[Any, SerializationContext], bytes | None]

SERDES: dict[str, tuple[Callable[[str], Serializer], Callable[[str], Any]]] = {
    "avro": (avro_serializer, avro_deserializer), "json": (json_serializer, json_deserializer)}
"""For each format, given the registry's URL: the writer of ``Order`` values and a reader that knows no schema (it
gets the writer's from the registry, by the id in the bytes)."""


def _orders(first: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": n, "item": f"item-{n}", **extra} for n in range(first, first + HALF)]


def _produce(bootstrap: str, topic: str, values: list[Any], serializer: Serializer | None = None) -> Delivered:
    """``values`` through a ``SerializingProducer`` (as bytes without ``serializer``), keyed over 4 keys so that
    both partitions get records of every call."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    if serializer is not None:
        conf["value.serializer"] = serializer
    producer = SerializingProducer(conf)
    delivered: Delivered = {}
    for n, value in enumerate(values):
        def report(err: Any, msg: Any, value: Any = value) -> None:
            if err is None:
                delivered[(msg.partition(), msg.offset())] = value

        producer.produce(topic, key=b"k%d" % (n % 4), value=value, on_delivery=report)
    assert producer.flush(30) == 0
    assert len(delivered) == len(values)
    return delivered


def _unknown_schema_id(registry_url: str, serialized: bytes) -> bytes:
    """``serialized`` (Confluent's wire format: magic byte 0, a 4-byte big-endian schema id, the payload) with the
    id replaced by one the registry does not know."""
    with pytest.raises(SchemaRegistryError) as unknown:
        registry_client(registry_url).get_schema(UNKNOWN_SCHEMA_ID)
    assert unknown.value.http_status_code == 404
    return b"\x00" + UNKNOWN_SCHEMA_ID.to_bytes(4, "big") + serialized[5:]


@pytest.mark.parametrize(("fmt", "engine"), [("avro", "async"), ("avro", "process"), ("json", "async")])
async def test_registry_values_reach_the_handler_and_an_unknown_schema_id_goes_to_the_dlq(
    kafka_bootstrap: str, schema_registry: LocalRegistry, new_topic: Callable[[int], str],
    unique_name: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, engine: str,
) -> None:
    topic, group = new_topic(PARTITIONS), unique_name("g")
    make_writer, make_reader = SERDES[fmt]
    writer = make_writer(schema_registry.url)
    delivered = _produce(kafka_bootstrap, topic, _orders(0), writer)
    good_bytes = writer({"id": -1, "item": "x"}, SerializationContext(topic, MessageField.VALUE))
    assert good_bytes is not None
    poison = _produce(kafka_bootstrap, topic, [_unknown_schema_id(schema_registry.url, good_bytes)])
    delivered |= _produce(kafka_bootstrap, topic, _orders(HALF), writer)
    monkeypatch.setenv(process_handlers.DIR_ENV, str(tmp_path))
    monkeypatch.setenv(registry_serde.REGISTRY_URL_ENV, schema_registry.url)
    handled = Handled(engine, tmp_path)
    config = ConsumerConfig(
        bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], engine=engine, process_workers=2,
        commit_interval_ms=100, dlq_enabled=True,
        # process workers import their reader by reference
        value_deserializer=make_reader(schema_registry.url) if engine == "async" else registry_serde.AVRO_VALUES_REF,
    )
    async with PyrallelConsumer(config, handled.handler) as consumer:
        await wait_for(lambda: committed_total(kafka_bootstrap, group, topic, PARTITIONS) == 2 * HALF + 1,
                       what="commits at the end")
        errors = consumer.metrics_registry.get_sample_value("kafka_consumer_errors_total", {"kind": "deserialization"})

    good = {(p, o): value for p, o, _, value in handled.seen()}
    assert len(good) == len(handled.seen()), "each record handled once"
    assert good == delivered, "every good record, as the object it was written from"
    [(partition, offset)] = poison
    assert {(partition, offset - 1), (partition, offset + 1)} <= good.keys(), "the records around it were handled"
    copies = dead_letters(kafka_bootstrap, f"{topic}.dlq", 1)
    assert {tp: value for tp, (value, _) in copies.items()} == poison, "its original bytes"
    headers = copies[(partition, offset)][1]
    assert headers["x-deserialization-failed"] == b"value"
    assert headers["x-error-type"] == b"ValueDeserializationError"
    assert headers["x-error-message"].startswith(b"SchemaRegistryError: ")
    assert headers["x-attempts"] == b"1"
    assert errors == 1


async def test_an_evolved_schema_is_read_by_the_old_and_the_new_reader(
    kafka_bootstrap: str, schema_registry: LocalRegistry, new_topic: Callable[[int], str],
    unique_name: Callable[[str], str], tmp_path: Path,
) -> None:
    """v1 records, then v2 records (a field added with a default, accepted by the registry under the subject's
    backward compatibility) on one topic; a consumer reading with the v1 schema and one reading with v2, at once."""
    topic, url = new_topic(PARTITIONS), schema_registry.url
    subject = f"{topic}-value"
    client = registry_client(url)
    v1 = _produce(kafka_bootstrap, topic, _orders(0), avro_serializer(url, AVRO_ORDER))
    client.set_compatibility(subject, "BACKWARD")
    assert client.test_compatibility(subject, Schema(AVRO_ORDER_V2, "AVRO"))
    v2 = _produce(kafka_bootstrap, topic, _orders(HALF, quantity=5), avro_serializer(url, AVRO_ORDER_V2))
    assert client.get_versions(subject) == [1, 2]

    readers = {"old": AVRO_ORDER, "new": AVRO_ORDER_V2}
    groups = {name: unique_name(name) for name in readers}
    handled = {name: Handled("async", tmp_path) for name in readers}

    def consumer(name: str) -> PyrallelConsumer:
        config = ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=groups[name], topics=[topic],
                                commit_interval_ms=100,
                                value_deserializer=avro_deserializer(url, readers[name]))
        return PyrallelConsumer(config, handled[name].handler)

    async with contextlib.AsyncExitStack() as running:
        for name in readers:
            await running.enter_async_context(consumer(name))
        await wait_for(lambda: all(committed_total(kafka_bootstrap, group, topic, PARTITIONS) == 2 * HALF
                                   for group in groups.values()), what="both readers' commits at the end")

    seen = {name: {(p, o): value for p, o, _, value in log.seen()} for name, log in handled.items()}
    assert [len(seen[name]) for name in readers] == [len(handled[name].seen()) for name in readers], "each once"
    assert seen["old"] == {tp: {"id": order["id"], "item": order["item"]} for tp, order in (v1 | v2).items()}
    assert seen["new"] == {tp: {**order, "quantity": QUANTITY_DEFAULT} for tp, order in v1.items()} | v2
