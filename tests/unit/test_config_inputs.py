"""Hostile configuration input: booleans for counts, misspelt env vars, properties librdkafka refuses."""

from __future__ import annotations

import logging
import os
import types
import typing
from typing import Any

import pytest

from pyrallel_consumer import ConfigError, ConsumerConfig

pytestmark = pytest.mark.unit

BASE: dict[str, Any] = {"bootstrap_servers": "127.0.0.1:9092", "group_id": "g", "topics": ["orders"]}


def _int_fields() -> list[str]:
    """Every field typed int or int | None, including fields added after this test was written."""
    names = []
    for name, info in ConsumerConfig.model_fields.items():
        annotation = info.annotation
        if annotation is int or (isinstance(annotation, types.UnionType) and int in typing.get_args(annotation)):
            names.append(name)
    return names


@pytest.fixture(autouse=True)
def _no_stray_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.upper().startswith("PYRALLEL_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("field", _int_fields())
@pytest.mark.parametrize("value", [True, False, 100.0, 100.5, "1e3", "100.0", "0x64", ""])
def test_integer_fields_refuse_anything_but_whole_numbers(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{field}: "):
        ConsumerConfig(**BASE, **{field: value})


def test_integer_fields_take_decimal_text_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRALLEL_MAX_IN_FLIGHT", "250")
    monkeypatch.setenv("PYRALLEL_CONTROL_PORT", " 8081 ")
    config = ConsumerConfig(**BASE)
    assert (config.max_in_flight, config.control_port) == (250, 8081)
    monkeypatch.setenv("PYRALLEL_MAX_IN_FLIGHT", "true")
    with pytest.raises(ConfigError, match="max_in_flight: "):
        ConsumerConfig(**BASE)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("pyrallel")]


def test_misspelt_environment_variable_is_warned_about_with_the_closest_field(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PYRALLEL_MAX_INFLIGHT", "5")
    monkeypatch.setenv("pyrallel_zzz", "1")
    monkeypatch.setenv("PYRALLEL_CONNECT_URL", "http://127.0.0.1:8083")  # the test tooling's, not a field
    monkeypatch.setenv("PYRALLEL_GROUP_ID", "from-env")  # a field, in whatever case
    with caplog.at_level(logging.WARNING):
        config = ConsumerConfig(bootstrap_servers="127.0.0.1:9092", topics=["orders"])
    assert (config.max_in_flight, config.group_id) == (1000, "from-env")
    [warning] = _warnings(caplog)
    assert "PYRALLEL_MAX_INFLIGHT (did you mean PYRALLEL_MAX_IN_FLIGHT?)" in warning
    assert "PYRALLEL_ZZZ" in warning.upper()
    assert "CONNECT_URL" not in warning and "GROUP_ID" not in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ConsumerConfig(**BASE)
    assert len(_warnings(caplog)) == 1, "warned again at the next construction"


def test_only_config_fields_and_tooling_variables_in_the_environment_warn_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PYRALLEL_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    for name in ("PYRALLEL_CONNECT_URL", "PYRALLEL_KAFKA_RUN_DIR", "PYRALLEL_CACHE_DIR", "PYRALLEL_FAULT_DELAY_MS"):
        monkeypatch.setenv(name, "x")
    with caplog.at_level(logging.WARNING):
        ConsumerConfig(group_id="g", topics=["orders"])
    assert _warnings(caplog) == []


@pytest.mark.parametrize(
    ("field", "properties", "named"),
    [
        ("kafka", {"sesion.timeout.ms": "6000"}, "sesion.timeout.ms"),
        ("kafka", {"session.timeout.ms": "soon"}, "session.timeout.ms"),
        ("kafka", {"fetch.wait.max.ms": "600000"}, "fetch.wait.max.ms"),
        ("kafka", {"max.poll.interval.ms": "1000"}, "max.poll.interval.ms"),  # below session.timeout.ms
        ("kafka", {"plugin.library.paths": "no_such_plugin"}, "'plugin.library.paths'"),  # reason names the plugin
        ("dlq_kafka", {"lingerr.ms": "5"}, "lingerr.ms"),
        ("dlq_kafka", {"max.in.flight.requests.per.connection": "10"}, "max.in.flight"),  # idempotence: <= 5
    ],
)
def test_properties_librdkafka_refuses_are_config_errors_naming_them(
    field: str, properties: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        ConsumerConfig(**BASE, **{field: properties})
    message = str(caught.value)
    assert message.startswith("Invalid ConsumerConfig:")
    assert f"{field}: " in message and named in message


def test_properties_librdkafka_accepts_pass() -> None:
    config = ConsumerConfig(**BASE, kafka={"session.timeout.ms": "6000", "fetch.min.bytes": "1"},
                            dlq_kafka={"linger.ms": "20"})
    assert config.kafka["session.timeout.ms"] == "6000"
