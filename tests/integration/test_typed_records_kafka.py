"""Typed records on the real broker: with a value deserializer the handlers get objects, and a record that cannot be
deserialized is a poison record, never a crash nor a silent skip: dead-lettered with its original bytes after one
attempt (in the transaction of its offset under exactly-once), or skipped and counted. Judged against the
producer's delivery reports: every acknowledged record is either handled, typed, or in the DLQ."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from tests.integration import process_handlers, typed_handlers
from tests.integration.typed_handlers import Seen
from tests.support import committed, read_all, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer, Record

pytestmark = pytest.mark.integration

RECORDS = 120
POISON_EVERY = 20
PARTITIONS = 3


def _produce(bootstrap: str, topic: str, count: int) -> dict[tuple[int, int], bytes | None]:
    """JSON values keyed over 10 keys; every ``POISON_EVERY``-th value is not JSON, and the last one is null (a
    tombstone). Returns the acknowledged records by (partition, offset): the delivery reports."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    delivered: dict[tuple[int, int], bytes | None] = {}

    def report(err: Any, msg: Any) -> None:
        if err is None:
            delivered[(msg.partition(), msg.offset())] = msg.value()

    for n in range(count):
        value: bytes | None = json.dumps({"n": n}).encode() if n % POISON_EVERY else b"not json %d" % n
        producer.produce(topic, value=None if n == count - 1 else value, key=b"k%d" % (n % 10),
                         headers=[("origin", b"test")], on_delivery=report)
    assert producer.flush(30) == 0
    assert len(delivered) == count
    return delivered


def _committed_total(bootstrap: str, group: str, topic: str) -> int:
    return sum(max(offset, 0) for offset, _ in committed(bootstrap, group, topic, PARTITIONS))


@pytest.mark.parametrize(("engine", "guarantee"), [
    ("async", "at_least_once"), ("process", "at_least_once"), ("async", "exactly_once")])
async def test_handlers_get_objects_and_poison_records_go_to_the_dlq_with_their_bytes(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, engine: str, guarantee: str,
) -> None:
    topic, group = new_topic(PARTITIONS), unique_name("g")
    delivered = _produce(kafka_bootstrap, topic, RECORDS)
    monkeypatch.setenv(process_handlers.DIR_ENV, str(tmp_path))
    in_memory: list[Seen] = []

    async def handle(record: Record[bytes | None, Any]) -> None:
        in_memory.append(typed_handlers.seen(record))

    def handled() -> list[Seen]:
        return in_memory if engine == "async" else typed_handlers.typed_seen(tmp_path)

    config = ConsumerConfig(
        bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], engine=engine, process_workers=2,
        processing_guarantee=guarantee, commit_interval_ms=100, max_retries=2, retry_backoff_ms=10,
        dlq_enabled=True,
        # the object for the async engine; process workers import their own by reference
        value_deserializer=typed_handlers.json_values if engine == "async" else typed_handlers.VALUES_REF,
    )
    poison = {tp: value for tp, value in delivered.items() if value is not None and not value.startswith(b"{")}
    async with PyrallelConsumer(config, handle if engine == "async" else typed_handlers.note_typed) as consumer:
        await wait_for(lambda: _committed_total(kafka_bootstrap, group, topic) == RECORDS, what="commits at the end")
        errors = consumer.metrics_registry.get_sample_value("kafka_consumer_errors_total", {"kind": "deserialization"})

    good = {(p, o): (type_name, value) for p, o, type_name, value in handled()}
    assert len(good) == len(handled()) == RECORDS - len(poison), "each good record handled once"
    assert good == {tp: ("NoneType", None) if value is None else ("dict", json.loads(value))
                    for tp, value in delivered.items() if tp not in poison}
    isolation = {"isolation.level": "read_committed"} if guarantee == "exactly_once" else {}
    dead = read_all(kafka_bootstrap, f"{topic}.dlq", len(poison), extra_conf=isolation)
    copies = {(int(h["x-source-partition"]), int(h["x-source-offset"])): (m.value(), h)
              for m in dead for h in [dict(m.headers())]}
    assert {tp: value for tp, (value, _) in copies.items()} == poison, "the original bytes, each poison record once"
    for _, headers in copies.values():
        assert headers["x-deserialization-failed"] == b"value"
        assert headers["x-error-type"] == b"ValueDeserializationError"
        assert headers["x-error-message"].startswith(b"JSONDecodeError: ")
        assert headers["x-attempts"] == b"1", "never retried: the same bytes would fail again"
        assert headers["origin"] == b"test"
    assert errors == len(poison)


async def test_skipped_poison_records_are_counted_and_batches_get_the_others_typed(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
) -> None:
    """The default policy (log and skip) with a batch handler: the poison records' offsets are committed, they are
    counted, and no batch holds them."""
    topic, group = new_topic(PARTITIONS), unique_name("g")
    delivered = _produce(kafka_bootstrap, topic, RECORDS)
    poison = {tp for tp, value in delivered.items() if value is not None and not value.startswith(b"{")}
    batches: list[list[Seen]] = []

    async def handle_batch(records: list[Record[bytes | None, Any]]) -> None:
        batches.append([typed_handlers.seen(record) for record in records])

    config = ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], commit_interval_ms=100,
                            batch_max_records=20, batch_linger_ms=5, value_deserializer=typed_handlers.json_values)
    async with PyrallelConsumer(config, batch_handler=handle_batch) as consumer:
        await wait_for(lambda: _committed_total(kafka_bootstrap, group, topic) == RECORDS, what="commits at the end")
        registry = consumer.metrics_registry
        counted = (registry.get_sample_value("kafka_consumer_errors_total", {"kind": "deserialization"}),
                   registry.get_sample_value("pyrallel_records_completed_total", {"outcome": "failed"}))
    handled = [seen for batch in batches for seen in batch]
    assert sorted((p, o) for p, o, _, _ in handled) == sorted(set(delivered) - poison)
    assert {type_name for _, _, type_name, _ in handled} == {"dict", "NoneType"}
    assert counted == (len(poison), len(poison))
