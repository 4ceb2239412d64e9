"""missing_topic='fail': whether every subscribed topic exists, asked of the broker before the consumer starts.

Called by Coordinator.start() on an executor thread (it blocks for up to ``TOPIC_CHECK_TIMEOUT_S``).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.kafka.clients import KafkaClients

TOPIC_CHECK_TIMEOUT_S = 15.0
"""How long start() waits for a broker to list the topics before BrokerUnreachableError."""


class MissingTopicError(RuntimeError):
    """A subscribed topic does not exist and missing_topic is 'fail'."""


class BrokerUnreachableError(RuntimeError):
    """No broker of bootstrap_servers answered at start (missing_topic='fail' asks for the topics first)."""


def check_topics_exist(config: ConsumerConfig, clients: KafkaClients) -> None:
    """Raise MissingTopicError unless every topic of ``config.topics`` exists.

    A broker that does not answer is reported as BrokerUnreachableError with librdkafka's reason
    (connection refused, name not resolved, authentication failed), not as a missing topic.
    """
    errors: list[KafkaError] = []
    admin = clients.admin(config, errors.append)
    try:
        topics = admin.list_topics(timeout=TOPIC_CHECK_TIMEOUT_S).topics
    except KafkaException as exc:
        admin.poll(0)  # serves error_cb: what librdkafka met while it tried
        reasons = [e.str() for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
        reason = reasons[-1] if reasons else exc.args[0].str()
        raise BrokerUnreachableError(
            f"no broker at {config.bootstrap_servers} answered within {TOPIC_CHECK_TIMEOUT_S:g} s: {reason}"
        ) from exc
    missing = [t for t in config.topics if t not in topics]
    if missing:
        raise MissingTopicError(
            f"topic(s) {', '.join(missing)} do not exist; create them, or set missing_topic='wait' to wait"
        )
