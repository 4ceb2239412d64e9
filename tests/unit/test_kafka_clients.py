"""The Kafka adapter: the librdkafka settings of each client, and the one place clients are created."""

from __future__ import annotations

from typing import Any

import pytest

from pyrallel_consumer import ConfigError, ConsumerConfig
from pyrallel_consumer.kafka.clients import KafkaClients
from pyrallel_consumer.kafka.settings import FETCH_DEFAULTS, admin_conf, dead_letter_conf, kafka_conf

pytestmark = pytest.mark.unit


def _config(**extra: object) -> ConsumerConfig:
    return ConsumerConfig(bootstrap_servers="b:9092", group_id="g", topics=["t"], **extra)  # type: ignore[arg-type]


def test_the_consumer_gets_the_library_settings_then_the_passthrough() -> None:
    conf = kafka_conf(_config(kafka={"fetch.wait.max.ms": "50", "security.protocol": "ssl"}))
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    assert conf["fetch.wait.max.ms"] == "50", "the passthrough overrides the library's fetch defaults"
    assert conf["fetch.queue.backoff.ms"] == FETCH_DEFAULTS["fetch.queue.backoff.ms"]


def test_the_dead_letter_producer_and_the_admin_client_share_only_what_they_need() -> None:
    config = _config(kafka={"security.protocol": "ssl", "client.id": "c", "session.timeout.ms": "7000"},
                     dlq_kafka={"linger.ms": "20"})
    producer = dead_letter_conf(config)
    assert (producer["acks"], producer["enable.idempotence"], producer["linger.ms"]) == ("all", True, "20")
    assert producer["client.id"] == "c" and "session.timeout.ms" not in producer
    admin = admin_conf(config)
    assert admin["security.protocol"] == "ssl" and "client.id" not in admin and admin["bootstrap.servers"] == "b:9092"


def test_a_client_librdkafka_refuses_is_a_config_error_whatever_creates_it() -> None:
    class Recording(KafkaClients):
        def __init__(self) -> None:
            self.confs: list[dict[str, Any]] = []

        def new_consumer(self, conf: dict[str, Any]) -> Any:
            self.confs.append(conf)
            raise ValueError("No such configuration property: \"sesion.timeout.ms\"")

    clients = Recording()
    config = _config().model_copy(update={"kafka": {"sesion.timeout.ms": "6000"}})
    with pytest.raises(ConfigError, match=r"kafka: librdkafka refuses 'sesion\.timeout\.ms'"):
        clients.consumer(config, lambda err, partitions: None)
    assert clients.confs[0]["on_commit"] is not None and clients.confs[0]["group.id"] == "g"
