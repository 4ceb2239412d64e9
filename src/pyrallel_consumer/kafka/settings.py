"""The librdkafka configuration of each client the library creates, from a ConsumerConfig.

Called by ``clients.KafkaClients`` when it creates a client (on the event loop during start(), or in
PyrallelConsumer() for the dead-letter producer, or on an executor thread for the topic check); the benchmark
reads ``FETCH_DEFAULTS`` to give every contender the same fetch settings. Coordinator.start() also asks
``warn_if_revocation_outlasts_poll_interval`` on the event loop.
"""

from __future__ import annotations

import logging
from typing import Any

from pyrallel_consumer.config import REVOKE_MARGIN_MS, ConsumerConfig
from pyrallel_consumer.observability.librdkafka_log import LIBRDKAFKA_LOGGER, LibrdkafkaLog

log = logging.getLogger(__name__)

FETCH_DEFAULTS: dict[str, str] = {
    "fetch.queue.backoff.ms": "10",
    "fetch.wait.max.ms": "100",
}
"""librdkafka defaults the library changes (``kafka`` overrides them). A partition that backpressure paused
drops its pre-fetched records and is fetched again after the resume; with librdkafka's defaults that next
fetch can wait up to 1 s (queue backoff) or 500 ms (a long-poll of other partitions) while handlers idle."""

_SECURITY_PREFIXES = ("security.", "sasl.", "ssl.", "https.")
"""librdkafka's security settings: protocol, SASL, TLS, and the TLS of the OIDC token endpoint (``https.ca.*``)."""
_SECURITY_PROPERTIES = frozenset({"enable.ssl.certificate.verification", "enable.sasl.oauthbearer.unsecure.jwt"})
"""Security settings whose names have none of the prefixes: without them a client the library creates besides the
consumer would verify a certificate (or refuse a token) the user's consumer accepts, and fail where it gets in."""
_SHARED_PREFIXES = (*_SECURITY_PREFIXES, "client.", "socket.", "broker.", "reconnect.", "metadata.")
"""Client settings the dead-letter producer shares with the consumer (security, identity); consumer-only ones
are left out."""


def is_security_property(name: str) -> bool:
    """Whether the ``kafka`` property ``name`` is a security setting every client the library creates needs."""
    return name.startswith(_SECURITY_PREFIXES) or name in _SECURITY_PROPERTIES


def kafka_conf(config: ConsumerConfig) -> dict[str, Any]:
    """The consumer's configuration: the library's settings and fetch defaults, then the user's passthrough."""
    conf: dict[str, Any] = {
        **FETCH_DEFAULTS,
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": config.auto_offset_reset,
        "group.protocol": config.group_protocol,
        "logger": LibrdkafkaLog(f"{LIBRDKAFKA_LOGGER}.consumer"),
    }
    if config.group_protocol == "classic":
        conf["partition.assignment.strategy"] = "cooperative-sticky"
    if config.group_instance_id:
        conf["group.instance.id"] = config.group_instance_id
    if config.processing_guarantee == "exactly_once":
        # Chained pipelines: an upstream exactly-once stage's aborted outputs must never be handled here. It also
        # makes librdkafka ask for stable offsets (KIP-447), so a new owner waits for a pending transaction's offsets.
        conf["isolation.level"] = "read_committed"
    conf.update(config.kafka)
    return conf


def share_conf(config: ConsumerConfig) -> dict[str, Any]:
    """The share consumer's configuration (group_type="share"): explicit acknowledgement, batches of about
    ``max_in_flight`` records (one poll's batch is all one instance handles at once), then the user's passthrough.
    Where a share group starts reading is the group's ``share.auto.offset.reset``, not a client setting."""
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group_id,
        "share.acknowledgement.mode": "explicit",
        "max.poll.records": config.max_in_flight,
        "logger": LibrdkafkaLog(f"{LIBRDKAFKA_LOGGER}.share_consumer"),
    }
    conf.update(config.kafka)
    return conf


def transactional_id(config: ConsumerConfig) -> str:
    """The transactional.id of the consumer's exactly-once producer: ``transactional_id``, else one derived from the
    group and the instance (the static member id when set, which survives a restart; else ``instance_id``).

    Fencing of zombies does not rest on it (KIP-447: offsets are sent with the consumer's group metadata, and the
    broker refuses those of an older group generation), so one id per consumer instance is enough; a stable one
    lets a restarted instance abort its predecessor's open transaction at once instead of after
    ``transaction_timeout_ms``."""
    if config.transactional_id:
        return config.transactional_id
    return f"pyrallel-{config.group_id}-{config.group_instance_id or config.instance_id}"


def transactional_conf(config: ConsumerConfig) -> dict[str, Any]:
    """The exactly-once producer's configuration: transactional (idempotent, acks=all), then ``output_kafka``."""
    # Outputs become visible at the commit anyway (commit_transaction flushes): batching longer costs no visible
    # latency and saves broker and client work per output.
    conf = _acked_producer_conf(config, "transactions", linger_ms=50)
    conf.update({"transactional.id": transactional_id(config), "transaction.timeout.ms": config.transaction_timeout_ms})
    conf.update(config.output_kafka)
    return conf


def dead_letter_conf(config: ConsumerConfig) -> dict[str, Any]:
    """The dead-letter producer's configuration: idempotent, acks=all, then ``dlq_kafka``."""
    conf = _acked_producer_conf(config, "dlq", linger_ms=5)
    conf.update(config.dlq_kafka)
    return conf


def _acked_producer_conf(config: ConsumerConfig, client: str, linger_ms: int) -> dict[str, Any]:
    """What the library's producers share: the consumer's connection and security properties, idempotence with
    acks=all, and librdkafka's lines in the ``client``'s logger; each caller adds its own and the user's on top."""
    conf: dict[str, Any] = {k: v for k, v in config.kafka.items()
                            if k.startswith(_SHARED_PREFIXES) or k in _SECURITY_PROPERTIES}
    conf.update({
        "bootstrap.servers": config.bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        "logger": LibrdkafkaLog(f"{LIBRDKAFKA_LOGGER}.{client}"),
    })
    return conf


def admin_conf(config: ConsumerConfig) -> dict[str, Any]:
    """The topic check's admin client: the bootstrap servers, the logger and the consumer's security settings."""
    conf: dict[str, Any] = {"bootstrap.servers": config.bootstrap_servers,
                            "logger": LibrdkafkaLog(f"{LIBRDKAFKA_LOGGER}.admin")}
    conf.update({k: v for k, v in config.kafka.items() if is_security_property(k)})
    return conf


def warn_if_revocation_outlasts_poll_interval(config: ConsumerConfig) -> None:
    """One WARNING when a revocation may wait (rebalance_grace_ms + margin) past max.poll.interval.ms."""
    poll_interval = config.kafka.get("max.poll.interval.ms", "300000")
    if poll_interval.isdigit() and config.rebalance_grace_ms + REVOKE_MARGIN_MS >= int(poll_interval):
        log.warning("rebalance_grace_ms (%d) + %d ms reaches max.poll.interval.ms (%s): a revocation that "
                    "waits that long for in-flight records gets this member evicted from the group",
                    config.rebalance_grace_ms, REVOKE_MARGIN_MS, poll_interval)
