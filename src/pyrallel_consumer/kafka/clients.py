"""KafkaClients: where every confluent-kafka client of one PyrallelConsumer is created.

PyrallelConsumer takes an instance (``kafka_clients=``) and hands it to the coordinator (which gives it to the
BrokerPoller and the topic check) and to the dead-letter publisher. Test tooling passes a subclass that wraps
the real clients to inject faults (the blue/green consume app's ``FaultInjectingClients``); applications
leave the default. The ``new_*`` methods are what such a subclass overrides: they get the finished librdkafka
configuration and return the client. ``consumer`` runs on the event loop in start(), ``dead_letter_producer`` in
PyrallelConsumer(), ``admin`` on an executor thread during start().
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Producer, ShareConsumer
from confluent_kafka.admin import AdminClient

from pyrallel_consumer.config import ConfigError, ConsumerConfig
from pyrallel_consumer.kafka.property_check import describe_refusal, reason_of
from pyrallel_consumer.kafka.settings import admin_conf, dead_letter_conf, kafka_conf, share_conf, transactional_conf

log = logging.getLogger(__name__)

_Client = TypeVar("_Client")


def _created(field: str, properties: dict[str, str], create: Callable[[], _Client]) -> _Client:
    """``create()``, with librdkafka's refusal of the ``field`` properties raised as a ConfigError."""
    try:
        return create()
    except (KafkaException, TypeError, ValueError) as exc:  # e.g. after model_copy(update=...): not validated
        raise librdkafka_config_error(field, properties, exc) from exc


class KafkaClients:
    """Creates the consumer (or share consumer), the dead-letter producer, the exactly-once producer, the admin."""

    def consumer(self, config: ConsumerConfig, on_commit: Callable[[Any, list[Any]], None]) -> Consumer:
        """The group member; ``on_commit`` receives the results of asynchronous commits (on the poller thread)."""
        conf = {**kafka_conf(config), "on_commit": on_commit}
        return _created("kafka", config.kafka, lambda: self.new_consumer(conf))

    def share_consumer(self, config: ConsumerConfig) -> ShareConsumer:
        """The share-group member (group_type="share"); created on the event loop in start()."""
        return _created("kafka", config.kafka, lambda: self.new_share_consumer(share_conf(config)))

    def dead_letter_producer(self, config: ConsumerConfig) -> Producer:
        return _created("dlq_kafka", config.dlq_kafka, lambda: self.new_producer(dead_letter_conf(config)))

    def transactional_producer(self, config: ConsumerConfig) -> Producer:
        """The exactly-once producer (``processing_guarantee="exactly_once"``); created in start() on the loop."""
        return _created("output_kafka", config.output_kafka, lambda: self.new_producer(transactional_conf(config)))

    def admin(self, config: ConsumerConfig, error_cb: Callable[[Any], None]) -> AdminClient:
        """An admin client for the topic check; ``error_cb`` collects what librdkafka met while connecting."""
        conf = {**admin_conf(config), "error_cb": error_cb}
        return _created("kafka", config.kafka, lambda: self.new_admin(conf))

    def new_consumer(self, conf: dict[str, Any]) -> Consumer:
        return Consumer(conf)

    def new_share_consumer(self, conf: dict[str, Any]) -> ShareConsumer:
        return ShareConsumer(conf)

    def new_producer(self, conf: dict[str, Any]) -> Producer:
        return Producer(conf)

    def new_admin(self, conf: dict[str, Any]) -> AdminClient:
        return AdminClient(conf)


def librdkafka_config_error(field: str, properties: Mapping[str, str], exc: BaseException) -> ConfigError:
    """The ConfigError for a client that librdkafka refused to create from the ``field`` properties.

    Raised on the event-loop thread by start() (the Kafka consumer) and by PyrallelConsumer() (the dead-letter
    producer) for a config that skipped validation (``model_copy(update=...)``, ``model_construct``) or a
    combination only the full client configuration shows.
    """
    return ConfigError(f"Invalid ConsumerConfig: {field}: {describe_refusal(properties, reason_of(exc))}")


def close_quietly(consumer: Consumer | ShareConsumer, what: str) -> None:
    """Close a poller thread's consumer as the thread ends (on that thread): a failure to close is logged, not
    raised, so the thread still reports how it ended."""
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        log.warning("Closing the %s failed: %s", what, exc)
