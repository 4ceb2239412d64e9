"""The active-color record: which color may process, and its generation, fenced by Kafka transactions.

The record lives in a compacted control topic, keyed by deployment name. A controller writes it with a
transactional producer whose ``transactional.id`` is derived from the controller id, so a second
controller with the same id fences the first (``init_transactions`` bumps the producer epoch) — the way
Kafka Connect guards connector target states in its config topic. A lease alone would not fence: a
paused old controller could still write after its lease expired; a fenced producer cannot.

Every client here takes ``kafka``: the librdkafka properties the deployment's cluster needs of any client
(``security.protocol``, ``sasl.*``, ``ssl.*``: ``Deployment.kafka``); the settings the fencing and the reading
depend on are the module's own and win over them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pyrallel_consumer import LibrdkafkaLog

log = logging.getLogger(__name__)

CONTROL_TOPIC = "_pyrallel-bluegreen"
CONTROL_LOGGER = "pyrallel_consumer.kafka.librdkafka.control"
"""The logger of librdkafka's lines from the control-topic clients here and the controller's admin client: a child
of the library's ``LIBRDKAFKA_LOGGER``, which this package may not import (it uses the public API only)."""


class ControllerFencedError(RuntimeError):
    """Another controller with the same id took over; this one must stop writing."""


@dataclass(frozen=True, slots=True)
class ActiveColor:
    deployment: str
    color: str
    generation: int
    controller_id: str
    updated_at: float

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ActiveColor:
        data = json.loads(raw)
        return cls(str(data["deployment"]), str(data["color"]), int(data["generation"]),
                   str(data["controller_id"]), float(data["updated_at"]))


def ensure_control_topic(bootstrap: str, topic: str = CONTROL_TOPIC, kafka: Mapping[str, str] | None = None) -> None:
    """Create the compacted single-partition control topic unless it exists, replicated as the cluster's default
    (``replication_factor=-1``, the broker's ``min.insync.replicas``): the fencing record must survive a broker."""
    conf: dict[str, Any] = {**(kafka or {}), "bootstrap.servers": bootstrap, "logger": LibrdkafkaLog(CONTROL_LOGGER)}
    admin = AdminClient(conf)
    if topic in admin.list_topics(timeout=15).topics:
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1,
                                            config={"cleanup.policy": "compact"})])
    try:
        futures[topic].result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def read_active_color(bootstrap: str, deployment: str, topic: str = CONTROL_TOPIC,
                      timeout_s: float = 15.0, kafka: Mapping[str, str] | None = None) -> ActiveColor | None:
    """The latest committed record for ``deployment`` (read_committed, to the end of the topic).

    None when there is none, also when no controller has created the control topic yet.
    """
    conf: dict[str, Any] = {
        **(kafka or {}),
        "bootstrap.servers": bootstrap, "group.id": f"pyrallel-bg-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "isolation.level": "read_committed",
        "logger": LibrdkafkaLog(CONTROL_LOGGER),
    }
    reader = Consumer(conf)
    try:
        meta = reader.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or (meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            return None
        tp = TopicPartition(topic, 0)
        _low, high = reader.get_watermark_offsets(tp, timeout=timeout_s)
        if high <= 0:
            return None
        reader.assign([TopicPartition(topic, 0, 0)])
        latest: ActiveColor | None = None
        deadline = time.monotonic() + timeout_s
        position = 0
        while position < high and time.monotonic() < deadline:
            for msg in reader.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                position = (msg.offset() or 0) + 1
                value = msg.value()
                if msg.key() == deployment.encode() and isinstance(value, bytes) and value:
                    latest = ActiveColor.from_json(value)
            # Transaction markers occupy offsets that are never delivered: trust the consumer position.
            current = reader.position([tp])[0].offset
            if current is not None and current >= high:
                break
        return latest
    finally:
        reader.close()


class ActiveColorWriter:
    """Writes the active color with a transactional producer; fenced when another controller takes over.

    A failed write leaves the transaction in doubt, so the next write starts a new producer with the same
    ``transactional.id``. After being fenced, that also fences in turn whoever took over: the controller
    that acts last owns the deployment.
    """

    def __init__(self, bootstrap: str, controller_id: str, topic: str = CONTROL_TOPIC,
                 kafka: Mapping[str, str] | None = None) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._kafka = dict(kafka or {})
        self.controller_id = controller_id
        ensure_control_topic(bootstrap, topic, self._kafka)
        self._producer: Producer | None = self._new_producer()

    def _new_producer(self) -> Producer:
        producer = Producer({
            **self._kafka,
            "bootstrap.servers": self._bootstrap,
            "transactional.id": f"pyrallel-bg-controller-{self.controller_id}",
            "enable.idempotence": True,
            "acks": "all",
            "transaction.timeout.ms": 30000,
            "logger": LibrdkafkaLog(CONTROL_LOGGER),
        })
        producer.init_transactions(30)
        return producer

    def close(self) -> None:
        """Close the transactional producer (each write is committed before it returns: nothing is pending)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

    def write(self, deployment: str, color: str, generation: int) -> ActiveColor:
        record = ActiveColor(deployment, color, generation, self.controller_id, time.time())
        if self._producer is None:
            self._producer = self._new_producer()
        producer = self._producer
        try:
            producer.begin_transaction()
            producer.produce(self._topic, key=deployment.encode(), value=record.to_json())
            _commit_transaction(producer)
        except KafkaException as exc:
            # Whatever failed, the transaction may still be open: the next write starts a new producer, whose
            # init_transactions finishes or aborts it.
            self._producer = None
            error = exc.args[0]
            if error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH):
                raise ControllerFencedError(
                    f"controller {self.controller_id} was fenced by a newer instance: {error}"
                ) from exc
            raise
        log.info("Active color of %s is now %s (generation %d)", deployment, color, generation)
        return record


def _commit_transaction(producer: Producer, attempts: int = 3) -> None:
    """Commit, retrying what librdkafka marks retriable (a timeout leaves the transaction open otherwise)."""
    for attempt in range(1, attempts + 1):
        try:
            producer.commit_transaction(30)
            return
        except KafkaException as exc:
            if attempt == attempts or not exc.args[0].retriable():
                raise
            log.warning("Committing the active-color transaction failed (%s); retrying", exc.args[0])
