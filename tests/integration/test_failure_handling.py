"""Failures on the real broker: dead letters, an unwritable DLQ, a stuck record, poison input, missing topics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from tests.support import committed, read_all, seq_of, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer, Record
from pyrallel_consumer.kafka.topic_check import MissingTopicError
from pyrallel_tools.localkafka.topics import create_topic, produce_keyed

pytestmark = pytest.mark.integration


def _config(bootstrap: str, group: str, topic: str, **extra: object) -> ConsumerConfig:
    values: dict[str, object] = {
        "bootstrap_servers": bootstrap, "group_id": group, "topics": [topic], "commit_interval_ms": 100,
        "max_retries": 1, "retry_backoff_ms": 10, "max_retry_backoff_ms": 200,
    }
    values.update(extra)
    return ConsumerConfig(**values)


async def test_always_failing_records_go_to_the_dlq_with_their_story(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(3), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 500, keys=50)
    handled: set[int] = set()

    async def handle(record: Record) -> None:
        seq = seq_of(record.value)
        if seq % 10 == 3:
            raise ValueError(f"bad record {seq}")
        handled.add(seq)

    async with PyrallelConsumer(_config(kafka_bootstrap, group, topic, dlq_enabled=True), handle) as consumer:
        await wait_for(lambda: sum(o for o, _ in committed(kafka_bootstrap, group, topic, 3)) == 500,
                       what="commits at the end")
        snapshot = consumer.metrics()
    failing = {s for s in range(500) if s % 10 == 3}
    assert handled == set(range(500)) - failing
    assert snapshot.records_failed == len(failing)
    dead = read_all(kafka_bootstrap, f"{topic}.dlq", len(failing))
    assert sorted(seq_of(m.value()) for m in dead) == sorted(failing)
    headers = dict(dead[0].headers())
    assert headers["x-error-type"] == b"ValueError"
    assert headers["x-error-message"].startswith(b"bad record ")
    assert headers["x-attempts"] == b"2"
    assert headers["x-source-topic"] == topic.encode()
    assert headers["x-consumer-group"] == group.encode()
    source = {(int(dict(m.headers())["x-source-partition"]), int(dict(m.headers())["x-source-offset"])) for m in dead}
    assert len(source) == len(failing)


async def test_unwritable_dlq_stalls_the_partition_until_it_can_be_written(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(1), unique_name("g")
    dlq = unique_name("dlq")  # does not exist, and the DLQ producer may not create it
    produce_keyed(kafka_bootstrap, topic, 50, keys=50)

    async def handle(record: Record) -> None:
        if record.offset == 5:
            raise RuntimeError("poison")

    config = _config(kafka_bootstrap, group, topic, dlq_enabled=True, dlq_topic=dlq,
                     dlq_kafka={"allow.auto.create.topics": "false", "message.timeout.ms": "1500"})
    async with PyrallelConsumer(config, handle) as consumer:
        await wait_for(lambda: consumer.metrics().records_succeeded == 49, what="all healthy records")
        await asyncio.sleep(4)  # several DLQ attempts time out meanwhile
        assert committed(kafka_bootstrap, group, topic, 1)[0][0] == 5, "never commit past the undelivered record"
        assert consumer.metrics().partitions[0].blocking_offset == 5
        create_topic(kafka_bootstrap, dlq, 1)
        await wait_for(lambda: committed(kafka_bootstrap, group, topic, 1)[0][0] == 50, what="commit at the end")
    assert [m.offset() for m in read_all(kafka_bootstrap, dlq, 1)] == [0]


async def test_stuck_record_is_dead_lettered_after_max_blocking_ms(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(1), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 20, keys=20)

    async def handle(record: Record) -> None:
        if record.offset == 3:
            await asyncio.sleep(3600)

    config = _config(kafka_bootstrap, group, topic, dlq_enabled=True, max_blocking_ms=1000,
                     task_timeout_ms=3_600_000)
    async with PyrallelConsumer(config, handle):
        await wait_for(lambda: committed(kafka_bootstrap, group, topic, 1)[0][0] == 20, what="commit at the end")
    (dead,) = read_all(kafka_bootstrap, f"{topic}.dlq", 1)
    assert dict(dead.headers())["x-error-type"] == b"StuckRecordError"
    assert dict(dead.headers())["x-source-offset"] == b"3"


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt, asyncio.CancelledError, MemoryError])
async def test_poison_input_and_base_exceptions_neither_kill_nor_lose(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
    raised: type[BaseException],
) -> None:
    topic, group = new_topic(1), unique_name("g")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=None, value=b"no key")
    producer.produce(topic, key=b"no value", value=None)
    producer.produce(topic, key=b"huge", value=b"x" * 900_000)
    producer.produce(topic, key=b"raise", value=b"boom", headers=[("h", b"\xff\xfe\x00"), ("empty", None)])
    producer.produce(topic, key=b"after", value=b"fine")
    producer.flush(30)
    seen: list[int] = []

    async def handle(record: Record) -> None:
        if record.key == b"raise":
            raise raised()
        seen.append(record.offset)

    async with PyrallelConsumer(_config(kafka_bootstrap, group, topic), handle) as consumer:
        await wait_for(lambda: committed(kafka_bootstrap, group, topic, 1)[0][0] == 5, what="commit at 5")
        assert consumer.metrics().records_failed == 1
    assert sorted(seen) == [0, 1, 2, 4]


async def test_missing_topic_fails_clearly_or_waits(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("missing")

    async def handle(record: Record) -> None:
        seen.append(record.offset)

    seen: list[int] = []
    with pytest.raises(MissingTopicError, match=f"{topic} do not exist"):
        await PyrallelConsumer(_config(kafka_bootstrap, unique_name("g"), topic), handle).start()
    waiting = PyrallelConsumer(_config(kafka_bootstrap, unique_name("g"), topic, missing_topic="wait",
                                       kafka={"topic.metadata.refresh.interval.ms": "1000"}), handle)
    async with waiting:
        create_topic(kafka_bootstrap, topic, 1)
        produce_keyed(kafka_bootstrap, topic, 5, keys=1)
        await wait_for(lambda: len(seen) == 5, what="records once the topic exists")



async def _readyz(port: int) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return int(raw.split(b" ", 2)[1]), raw.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("start_paused", [False, True])
async def test_ready_once_the_broker_answers(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], start_paused: bool
) -> None:
    """Readiness waits for the broker (an unreachable one keeps /readyz at 503: tests/unit/test_consumer_start.py);
    a reachable one makes it ready, also when started paused (then not even subscribed)."""
    topic = new_topic(1)

    async def handle(record: Record) -> None:
        """Nothing to handle: the topic stays empty."""

    config = _config(kafka_bootstrap, unique_name("g"), topic, missing_topic="wait", control_port=0,
                     start_paused=start_paused)
    async with PyrallelConsumer(config, handle) as consumer:
        assert consumer.control_server is not None
        port = consumer.control_server.port
        statuses: list[int] = []

        async def ready() -> bool:
            statuses.append((await _readyz(port))[0])
            return statuses[-1] == 200

        deadline = asyncio.get_running_loop().time() + 30
        while not await ready():
            assert asyncio.get_running_loop().time() < deadline, f"/readyz still {statuses[-1]} after 30 s"
            await asyncio.sleep(0.05)
        state = "PAUSED" if start_paused else "ACTIVE"
        assert json.loads((await _readyz(port))[1]) == {"ready": True, "state": state}


async def test_broker_outage_mid_run_loses_nothing(tmp_path: Any, unique_name: Callable[[str], str]) -> None:
    from pyrallel_tools.localkafka.cluster import LocalKafka

    cluster = LocalKafka(tmp_path / "outage")
    state, _ = cluster.up(port=19092)
    bootstrap = state.bootstrap
    try:
        topic, group = unique_name("t"), unique_name("g")
        create_topic(bootstrap, topic, 2)
        produce_keyed(bootstrap, topic, 3000, keys=30)
        seen: set[int] = set()

        async def handle(record: Record) -> None:
            await asyncio.sleep(0.002)
            seen.add(seq_of(record.value))

        config = _config(bootstrap, group, topic, max_in_flight=10, kafka={"reconnect.backoff.max.ms": "1000"})
        async with PyrallelConsumer(config, handle) as consumer:
            await wait_for(lambda: len(seen) >= 500, what="under way")
            await asyncio.get_running_loop().run_in_executor(None, cluster.stop_broker)
            await asyncio.sleep(30)
            await asyncio.get_running_loop().run_in_executor(None, cluster.start_broker)
            produce_keyed(bootstrap, topic, 1000, keys=30, start_seq=3000)
            await wait_for(lambda: len(seen) == 4000, timeout_s=120, what="every record after the outage")
            await wait_for(lambda: sum(o for o, _ in committed(bootstrap, group, topic, 2)) == 4000,
                           timeout_s=60, what="commits at the end")
            assert consumer.lifecycle.state.value == "ACTIVE"
        assert seen == set(range(4000))
    finally:
        cluster.down()
