"""Typed records without a broker: how deserializers are called, how fetched messages become typed records, the
config's rules for the deserializer fields, generic Records, and what marks a dead-letter copy of a poison record.
(The engines' side is in the contract suites; the real broker in tests/integration/test_typed_records_kafka.py.)"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, cast

import pytest
from confluent_kafka import Message
from confluent_kafka.serialization import Deserializer, MessageField, SerializationContext

from pyrallel_consumer import (
    BatchResult,
    ConfigError,
    ConsumerConfig,
    DeserializationError,
    KeyDeserializationError,
    Record,
    ValueDeserializationError,
)
from pyrallel_consumer.execution.engine import Completion
from pyrallel_consumer.kafka.dead_letter import dead_letter_headers
from pyrallel_consumer.kafka.deserializing import RecordDeserializer
from pyrallel_consumer.kafka.events import PollerSink
from pyrallel_consumer.kafka.fetch_gate import FetchGate
from pyrallel_consumer.kafka.inbox import Inbox

pytestmark = pytest.mark.unit

BASE: dict[str, Any] = {"bootstrap_servers": "127.0.0.1:9092", "group_id": "g", "topics": ["orders"]}


class JsonDeserializer(Deserializer):
    """A real confluent-kafka Deserializer: JSON values; it notes every context it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes | None, str, MessageField, object]] = []

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        assert ctx is not None
        self.calls.append((value, ctx.topic, ctx.field, ctx.headers))
        return None if value is None else json.loads(value)


json_values = JsonDeserializer()
"""Named by reference in the config tests."""


def upper_key(data: bytes | None, _ctx: object) -> str | None:
    return None if data is None else data.decode().upper()


@pytest.fixture(autouse=True)
def _no_stray_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.upper().startswith("PYRALLEL_"):
            monkeypatch.delenv(name)


def message(offset: int, value: bytes | None, key: bytes | None = b"k", headers: Any = None) -> Message:
    return Message(topic="orders", partition=1, offset=offset, key=key, value=value, headers=headers,
                   timestamp=(1, 1_700_000_000_000))


# ---- how the deserializers are called ------------------------------------------------------------------------------


def test_key_then_value_each_with_the_topic_its_field_and_the_headers_as_a_list() -> None:
    order: list[str] = []

    def key(data: bytes | None, ctx: Any) -> str:
        order.append(f"key {ctx.field}")
        return upper_key(data, ctx) or ""

    values = JsonDeserializer()
    deserializer = RecordDeserializer(key, values)
    assert deserializer.contents("orders", b"k1", b'{"n": 1}', [("h", b"1")]) == ("K1", {"n": 1})
    [(data, topic, field, headers)] = values.calls
    assert (data, topic, field, headers) == (b'{"n": 1}', "orders", MessageField.VALUE, [("h", b"1")])
    assert order == ["key key"]
    record = Record("orders", 1, 7, b"k1", b"[1, 2]", (("h", b"2"),), 123)
    typed = deserializer.record(record)
    assert typed == Record("orders", 1, 7, "K1", [1, 2], (("h", b"2"),), 123)
    assert values.calls[-1][3] == [("h", b"2")], "a list: the schema-registry deserializers look schema ids up there"


def test_null_values_reach_the_deserializer_as_none_and_an_unset_deserializer_leaves_bytes() -> None:
    values = JsonDeserializer()
    assert RecordDeserializer(None, values).contents("orders", b"k", None, None) == (b"k", None)
    assert values.calls == [(None, "orders", MessageField.VALUE, None)]


def test_a_failing_deserializer_makes_a_poison_record_naming_the_field_and_the_cause() -> None:
    deserializer = RecordDeserializer(upper_key, JsonDeserializer())
    with pytest.raises(ValueDeserializationError) as caught:
        deserializer.contents("orders", b"k", b"not json", None)
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)
    assert str(caught.value).startswith("JSONDecodeError: Expecting value")
    with pytest.raises(KeyDeserializationError) as key_error:
        deserializer.contents("orders", b"\xff", b"1", None)
    assert key_error.value.field == "key" and isinstance(key_error.value, DeserializationError)


def test_references_are_imported_and_nothing_is_built_without_a_deserializer() -> None:
    assert RecordDeserializer.of(None, None) is None
    deserializer = RecordDeserializer.of(f"{__name__}:upper_key", f"{__name__}:json_values")
    assert deserializer is not None
    assert deserializer.contents("orders", b"k", b"2", None) == ("K", 2)


# ---- fetched messages become typed records ---------------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.batches: list[tuple[list[tuple[Record, int]], list[Any] | None]] = []

    def on_records(self, batch: list[tuple[Record, int]], deserialized: list[Any] | None = None) -> None:
        self.batches.append((batch, deserialized))


def _convert(sink: _Sink, messages: list[Message], deserializer: RecordDeserializer | None) -> None:
    loop = asyncio.new_event_loop()
    loop.close()  # put() converts at once: nothing is scheduled for a short batch
    inbox = Inbox(cast(PollerSink, sink), FetchGate(100, 10_000), loop, on_fatal=lambda: None)
    contents = deserializer.messages(messages) if deserializer is not None else None  # the poller thread's part
    inbox.put(messages, {("orders", 1): 3}, contents)


def test_each_fetched_record_travels_as_fetched_beside_what_its_handler_gets() -> None:
    sink = _Sink()
    messages = [message(10, b'{"a": 1}', headers=[("h", b"x")]), message(11, b"{oops"), message(12, None)]
    _convert(sink, messages, RecordDeserializer(None, JsonDeserializer()))
    [(batch, deserialized)] = sink.batches
    assert [(r.offset, r.key, r.value, epoch) for r, epoch in batch] == [
        (10, b"k", b'{"a": 1}', 3), (11, b"k", b"{oops", 3), (12, b"k", None, 3)], "bytes for ordering and the DLQ"
    assert deserialized is not None
    typed, poison, tombstone = deserialized
    assert typed == Record("orders", 1, 10, b"k", {"a": 1}, (("h", b"x"),), 1_700_000_000_000)
    assert isinstance(poison, ValueDeserializationError)
    assert tombstone == Record("orders", 1, 12, b"k", None, (), 1_700_000_000_000)


def test_without_deserializers_records_stay_bytes_and_nothing_goes_beside_them() -> None:
    sink = _Sink()
    _convert(sink, [message(10, b"v")], None)
    [(batch, deserialized)] = sink.batches
    assert [r.value for r, _ in batch] == [b"v"] and deserialized is None


# ---- typed Records -------------------------------------------------------------------------------------------------


def test_a_typed_record_with_an_unhashable_value_can_be_named_in_a_batch_result() -> None:
    record: Record[str, dict[str, int]] = Record[str, dict[str, int]]("orders", 0, 5, "k", {"n": 1})
    result = BatchResult({record: "bad order"})
    assert result.failed == ((record, ("BatchRecordError", "bad order")),)
    assert Record("orders", 0, 5, "k", {"n": 1}) == record != Record("orders", 0, 5, "k", {"n": 2})
    with pytest.raises(AttributeError):
        record.offset = 6  # type: ignore[misc]


# ---- the config fields ---------------------------------------------------------------------------------------------


def test_deserializers_are_optional_and_take_an_object_or_an_import_reference(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert (ConsumerConfig(**BASE).key_deserializer, ConsumerConfig(**BASE).value_deserializer) == (None, None)
    assert ConsumerConfig(**BASE, value_deserializer=json_values).value_deserializer is json_values
    monkeypatch.setenv("PYRALLEL_VALUE_DESERIALIZER", f"{__name__}:json_values")
    monkeypatch.setenv("PYRALLEL_KEY_DESERIALIZER", f"{__name__}:upper_key")
    config = ConsumerConfig(**BASE, engine="process")
    assert (config.key_deserializer, config.value_deserializer) == (f"{__name__}:upper_key", f"{__name__}:json_values")
    assert ConsumerConfig(**BASE, engine="process", key_deserializer=upper_key).key_deserializer is upper_key


class _Builder:
    """Like confluent-kafka's DeserializerBuilder: builds a deserializer, is not one."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        raise NotImplementedError


@pytest.mark.parametrize(("value", "message"), [
    (42, "value_deserializer: int is not a deserializer: pass a callable deserializer(data, ctx)"),
    (_Builder(), "value_deserializer: _Builder is not a deserializer"),
    (JsonDeserializer, "value_deserializer: JsonDeserializer is a class; pass an instance"),
    ("no colon", "value_deserializer: value_deserializer string 'no colon' must look like 'package.module:name'"),
    ("no_such_module_pyrallel:x", "cannot be imported: ModuleNotFoundError: No module named 'no_such_module_pyrallel'"),
    (f"{__name__}:missing", f"cannot be imported: AttributeError: module '{__name__}' has no attribute 'missing'"),
    (f"{__name__}:BASE", f"cannot be imported: TypeError: {__name__}:BASE is not callable"),
    (f"{__name__}:JsonDeserializer", "names the class JsonDeserializer; name an instance of it"),
])
def test_a_bad_deserializer_is_a_config_error_naming_the_field(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match="Invalid ConsumerConfig: ") as caught:
        ConsumerConfig(**BASE, value_deserializer=value)
    assert message in str(caught.value)


@pytest.mark.parametrize(("value", "reason"), [
    (json_values, "is not a value_deserializer function; pass a top-level function or 'module:attr'"),
    (lambda data, ctx: data, "(a lambda or a nested function); define it at the top level of a module"),
])
def test_the_process_engine_refuses_a_deserializer_its_workers_cannot_import(value: object, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ConsumerConfig(**BASE, engine="process", value_deserializer=value)
    text = str(caught.value)
    assert "value_deserializer: engine='process' imports it by name in each worker process" in text
    assert "cannot be copied into another process" in text and reason in text


# ---- dead-letter copies --------------------------------------------------------------------------------------------


def test_the_dead_letter_copy_of_a_poison_record_says_which_part_failed() -> None:
    record = Record("orders", 2, 9, b"k", b"{oops")
    poison = dead_letter_headers(record, Completion(9, False, 1, 0.0, "ValueDeserializationError", "bad"), "g")
    assert ("x-deserialization-failed", b"value") in poison and ("x-error-type", b"ValueDeserializationError") in poison
    failed = dead_letter_headers(record, Completion(9, False, 4, 0.1, "ValueError", "bad"), "g")
    assert not [name for name, _ in failed if name == "x-deserialization-failed"]
