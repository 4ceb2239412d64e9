"""Share groups (KIP-932) on the real local broker: PyrallelShareConsumer instances sharing a topic's records."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from tests.support import read_all, seq_of, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelShareConsumer, Record
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration

DELIVERY_LIMIT = 3
LOCK_MS = 2000
BATCH = 10
MAX_BATCHES = 30


def set_share_group(bootstrap: str, group: str, **settings: str) -> None:
    """Group settings through the admin API (the local broker allows a 1 s lock and 6 s sessions)."""
    entries = [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
               for name, value in settings.items()]
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer came
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def scrape(port: int | None) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def failing_once(seq: int) -> bool:
    return seq % 10 == 1


POISON = 7


async def test_three_instances_share_two_partitions_with_retries_and_a_dead_letter_topic(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(2), unique_name("share")
    dlq = f"{topic}.dlq"
    set_share_group(kafka_bootstrap, group, **{
        "share.record.lock.duration.ms": str(LOCK_MS),
        "share.delivery.count.limit": str(DELIVERY_LIMIT)})
    handled: list[dict[int, int]] = [{}, {}, {}]  # per instance: seq -> successful handlings
    attempts: dict[int, int] = {}

    def handler_of(instance: int) -> Callable[[Record], object]:
        async def handle(record: Record) -> None:
            seq = seq_of(record.value)
            attempts[seq] = attempts.get(seq, 0) + 1
            await asyncio.sleep(0.05)  # slow enough that one member cannot take everything
            if seq == POISON or (failing_once(seq) and attempts[seq] == 1):
                raise RuntimeError(f"record {seq} fails")
            handled[instance][seq] = handled[instance].get(seq, 0) + 1
        return handle

    config = ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], group_type="share",
                            ordering="unordered", max_retries=0, dlq_enabled=True, max_in_flight=5,
                            drain_timeout_ms=5000, metrics_port=0)
    consumers = [PyrallelShareConsumer(config, handler_of(i)) for i in range(3)]
    # Produced before any member joined: the library sets the new group's share.auto.offset.reset to earliest.
    produced = await asyncio.to_thread(produce_keyed, kafka_bootstrap, topic, BATCH, 5, 16, 0)
    for consumer in consumers:
        await consumer.start()
    try:
        # Members join over a few seconds: keep producing small batches until every one has handled records.
        while not all(handled) and produced < BATCH * MAX_BATCHES:
            produced += await asyncio.to_thread(produce_keyed, kafka_bootstrap, topic, BATCH, 5, 16, produced)
            await wait_for(lambda target=produced: len(attempts) >= target, 30,  # type: ignore[misc]
                           "the new batch to be acquired")
        assert all(handled), f"an instance handled nothing: {[len(h) for h in handled]}"

        def accepted() -> int:
            return sum(c.metrics().acknowledged["accept"] for c in consumers)

        await wait_for(lambda: accepted() >= produced, 60, "every record to be accepted")
        ports = [c.metrics_port for c in consumers]
        assert "pyrallel_share_acknowledgements_total" in await asyncio.to_thread(scrape, ports[0])
    finally:
        for consumer in consumers:
            await consumer.stop()
    for port in ports:  # each instance's /metrics ends with it
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(scrape, port)
    every = set(range(produced))
    succeeded = set().union(*handled)
    assert succeeded == every - {POISON}
    metrics = [c.metrics() for c in consumers]
    assert sum(m.acknowledged["accept"] for m in metrics) == produced  # each record accepted exactly once
    assert sum(m.acknowledged["reject"] for m in metrics) == 0
    assert attempts[POISON] == DELIVERY_LIMIT
    for seq in every:
        if failing_once(seq):
            assert attempts[seq] == 2, f"record {seq} should have been released once and then succeeded"
    assert sum(m.acknowledged["release"] for m in metrics) >= len([s for s in every if failing_once(s)])
    dead = read_all(kafka_bootstrap, dlq, 1, timeout_s=20)
    assert [seq_of(m.value()) for m in dead] == [POISON]
    assert sum(m.dead_lettered for m in metrics) == 1
    assert sum(m.deliveries.get(DELIVERY_LIMIT, 0) for m in metrics) >= 1
