"""Topic creation and bulk keyed production against the local broker, shared by demo, tests and benchmarks."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pyrallel_tools.localkafka.errors import LocalKafkaError

log = logging.getLogger(__name__)


def create_topic(bootstrap: str, name: str, partitions: int, timeout_s: float = 30.0) -> None:
    """Create ``name`` and wait until metadata shows every partition with a leader.

    The broker acknowledges the creation before its metadata cache has caught up, so a single
    metadata request right after it can still miss the topic; a consumer started then would
    miss partitions. Metadata is asked again until it is complete or ``timeout_s`` ends.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # replication_factor=-1: the brokers' default (3 on a 3-broker local cluster, 1 on one broker).
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=-1)])
    try:
        futures[name].result(timeout=timeout_s)
    except KafkaException as exc:
        raise LocalKafkaError(f"Could not create topic {name!r}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    seen = "no metadata"
    while True:
        topic = admin.list_topics(topic=name, timeout=max(1.0, deadline - time.monotonic())).topics.get(name)
        if topic is not None and topic.error is None:
            led = sum(1 for p in topic.partitions.values() if p.error is None and p.leader >= 0)
            if led == partitions:
                return
            seen = f"{led} of {partitions} partitions with a leader"
        elif topic is not None:
            seen = str(topic.error)
        if time.monotonic() >= deadline:
            raise LocalKafkaError(
                f"Topic {name!r} was created but its metadata is incomplete after {timeout_s:g} s: {seen}"
            )
        time.sleep(0.1)


def delete_topics(bootstrap: str, names: list[str], timeout_s: float = 30.0) -> list[str]:
    """Delete ``names``; return what could not be deleted (each with the reason), logged as warnings, never raised:
    a benchmark cleans up its large topics this way and keeps its results when the broker refuses."""
    if not names:
        return []
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept until the futures resolve: its end fails them
    futures = admin.delete_topics(names, operation_timeout=timeout_s)
    failed = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except (KafkaException, TimeoutError) as exc:
            log.warning("Could not delete topic %s: %s", name, exc)
            failed.append(f"{name}: {exc}")
    return failed


def produce_keyed(
    bootstrap: str,
    topic: str,
    count: int,
    keys: int,
    value_size: int = 64,
    start_seq: int = 0,
    extra_conf: dict[str, Any] | None = None,
) -> int:
    """Produce ``count`` records keyed round-robin over ``keys`` keys; return how many were acknowledged.

    The value starts with the decimal sequence number so tests can identify each record.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 200000,
    }
    conf.update(extra_conf or {})
    producer = Producer(conf)
    acked = 0
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal acked
        if err is None:
            acked += 1
        elif len(errors) < 5:
            errors.append(str(err))

    pad = b"x" * max(0, value_size)
    for seq in range(start_seq, start_seq + count):
        value = f"{seq:012d}|".encode() + pad
        while True:
            try:
                producer.produce(topic, value=value, key=f"k{seq % keys}".encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise LocalKafkaError(
            f"Producing to {topic!r}: {remaining} records unflushed, errors: {'; '.join(errors) or 'none'}"
        )
    return acked
