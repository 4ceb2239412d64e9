"""SASL/SCRAM over TLS against a real broker: ``LocalKafka.up(security="sasl_ssl")`` makes a cluster with a CA and a
SCRAM user; a producer and a PyrallelConsumer (its consumer, topic-check admin client and dead-letter producer)
work through the SECURE listener with only the ``kafka`` properties a user sets, and the security is real: a wrong
password is refused by the broker, a client without the CA refuses the broker's certificate."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from tests.support import wait_for

from pyrallel_consumer import BrokerUnreachableError, ConsumerConfig, PyrallelConsumer, Record
from pyrallel_tools.localkafka.cluster import LocalKafka
from pyrallel_tools.localkafka.ports import free_port
from pyrallel_tools.localkafka.state import ClusterState
from pyrallel_tools.localkafka.topics import create_topic

pytestmark = pytest.mark.integration

RECORDS = 600
PARTITIONS = 3
FAILING = frozenset(range(7, RECORDS, 100))
"""Records the handler always fails: they go to the dead-letter topic, through the DLQ producer's own connection."""


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterState, dict[str, str]]]:
    """One broker of its own with a SASL_SSL listener; the client properties a user would set for it."""
    kafka = LocalKafka(tmp_path_factory.mktemp("secure") / "kafka")
    try:
        state, _notes = kafka.up(security="sasl_ssl", port=free_port())
        client = state.secure_client_properties()
        if client is None or state.secure_bootstrap is None:
            pytest.fail(f"up(security='sasl_ssl') left no SECURE listener: {state}")
        yield state, client
    finally:
        kafka.down()


def _produce(bootstrap: str, client: dict[str, str], topic: str, count: int) -> set[int]:
    """Produce ``count`` records (value = sequence number) and return the sequence numbers the broker acked."""
    acked: set[int] = set()

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        value = msg.value()
        if err is None and isinstance(value, bytes):
            acked.add(int(value))

    producer = Producer({"bootstrap.servers": bootstrap, **client, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5})
    for seq in range(count):
        producer.produce(topic, key=str(seq % 30).encode(), value=str(seq).encode(), on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(60)
    if left:
        pytest.fail(f"{left} records still unacknowledged after 60 s")
    return acked


def _reader(bootstrap: str, client: dict[str, str], group: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, **client, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest"})


def _committed_and_ends(bootstrap: str, client: dict[str, str], group: str,
                        topic: str) -> tuple[list[int], list[int]]:
    reader = _reader(bootstrap, client, group)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = [tp.offset for tp in reader.committed(tps, timeout=10)]
        ends = [reader.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
    finally:
        reader.close()
    return committed, ends


def _read_all(bootstrap: str, client: dict[str, str], topic: str, expected: int, timeout_s: float = 30) -> list[int]:
    reader = _reader(bootstrap, client, f"reader-{uuid.uuid4().hex[:8]}")
    reader.subscribe([topic])
    seqs: list[int] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(seqs) < expected and time.monotonic() < deadline:
            seqs += [int(m.value() or b"-1") for m in reader.consume(500, 0.5) if m.error() is None]
    finally:
        reader.close()
    return seqs


def _first_error(bootstrap: str, conf: dict[str, Any], timeout_s: float = 30) -> KafkaError | None:
    """The first error librdkafka reports (error_cb) for a producer with ``conf`` trying to send one record."""
    errors: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": bootstrap, **conf, "error_cb": errors.append,
                         "message.timeout.ms": int(timeout_s * 1000)})
    producer.produce("security-probe", value=b"x")
    deadline = time.monotonic() + timeout_s
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    producer.purge()
    return errors[0] if errors else None


async def _consume_through_sasl_ssl(state: ClusterState, producer_client: dict[str, str],
                                   consumer_kafka: dict[str, str], records: int, failing: frozenset[int]) -> None:
    """Produce ``records`` through the SECURE listener, consume them with a PyrallelConsumer whose ``kafka`` is
    ``consumer_kafka`` (``failing`` ones dead-lettered), and judge: every acked record handled or dead-lettered,
    the dead letters readable, the commits at the end of every partition."""
    bootstrap = state.secure_bootstrap or ""
    topic, group = f"secure-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    create_topic(state.bootstrap, topic, PARTITIONS)  # tooling: over PLAINTEXT
    create_topic(state.bootstrap, f"{topic}.dlq", 1)
    acked = _produce(bootstrap, producer_client, topic, records)
    assert acked == set(range(records)), "every record produced through SASL_SSL is acknowledged"

    handled: set[int] = set()

    async def handle(record: Record) -> None:
        seq = int(record.value or b"-1")
        if seq in failing:
            raise ValueError(f"record {seq} fails on purpose")
        handled.add(seq)

    config = ConsumerConfig(bootstrap_servers=bootstrap, group_id=group, topics=[topic], commit_interval_ms=100,
                            max_retries=0, dlq_enabled=True, kafka=consumer_kafka)

    def at_the_end() -> bool:
        committed, ends = _committed_and_ends(bootstrap, producer_client, group, topic)
        return committed == ends

    async with PyrallelConsumer(config, handle) as consumer:
        await wait_for(lambda: len(handled) >= len(acked) - len(failing), what="every acked record handled")
        await wait_for(at_the_end, what="commits at the end of every partition")
        snapshot = consumer.metrics()
    assert handled == acked - failing
    assert snapshot.records_failed == len(failing)
    dead = _read_all(bootstrap, producer_client, f"{topic}.dlq", len(failing))
    assert sorted(dead) == sorted(failing), "the dead-letter producer wrote through SASL_SSL too"
    committed, ends = _committed_and_ends(bootstrap, producer_client, group, topic)
    assert committed == ends and sum(ends) == records


async def test_producer_and_pyrallel_consumer_work_through_sasl_ssl(
    secure_cluster: tuple[ClusterState, dict[str, str]],
) -> None:
    state, client = secure_cluster
    await _consume_through_sasl_ssl(state, client, client, RECORDS, FAILING)


async def test_every_client_of_the_library_takes_security_settings_outside_the_sasl_and_ssl_prefixes(
    secure_cluster: tuple[ClusterState, dict[str, str]],
) -> None:
    """A user who turns certificate verification off (e.g. a test broker's self-signed certificate) sets
    ``enable.ssl.certificate.verification``: the topic check's admin client and the dead-letter producer must get
    it as the consumer does, or they fail TLS while the consumer gets in."""
    state, client = secure_cluster
    unverified = {**{k: v for k, v in client.items() if k != "ssl.ca.location"},
                  "enable.ssl.certificate.verification": "false"}
    await _consume_through_sasl_ssl(state, client, unverified, 60, frozenset({13}))


def test_a_wrong_password_is_refused_by_the_broker(secure_cluster: tuple[ClusterState, dict[str, str]]) -> None:
    state, client = secure_cluster
    error = _first_error(state.secure_bootstrap or "", {**client, "sasl.password": "not-the-password"})
    assert error is not None, "a client with a wrong password must not get in silently"
    assert error.code() == KafkaError._AUTHENTICATION, error
    assert "invalid credentials" in error.str()


def test_a_client_without_the_ca_refuses_the_broker_certificate(
    secure_cluster: tuple[ClusterState, dict[str, str]],
) -> None:
    state, client = secure_cluster
    without_ca = {k: v for k, v in client.items() if k != "ssl.ca.location"}
    error = _first_error(state.secure_bootstrap or "", without_ca)
    assert error is not None, "a client that cannot verify the broker must not connect"
    assert error.code() == KafkaError._SSL, error
    assert "certificate verify failed" in error.str()


async def test_a_pyrallel_consumer_with_a_wrong_password_fails_at_start_saying_why(
    secure_cluster: tuple[ClusterState, dict[str, str]],
) -> None:
    state, client = secure_cluster
    config = ConsumerConfig(bootstrap_servers=state.secure_bootstrap or "", group_id="g-wrong-password",
                            topics=["security-probe"], kafka={**client, "sasl.password": "not-the-password"})

    async def handle(record: Record) -> None:
        pytest.fail(f"nothing may be handled without authentication: {record}")

    with pytest.raises(BrokerUnreachableError, match="SASL authentication error"):
        async with PyrallelConsumer(config, handle):
            pass
