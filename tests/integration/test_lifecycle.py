"""Lifecycle pause/resume on the real broker: release hands partitions over, hold keeps them waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from tests.support import seq_of, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer, Record
from pyrallel_consumer.control.lifecycle import LifecycleState, StaleGenerationError
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration


def _config(bootstrap: str, group: str, topic: str, color: str, **extra: object) -> ConsumerConfig:
    values: dict[str, object] = {
        "bootstrap_servers": bootstrap, "group_id": group, "topics": [topic], "color": color,
        "instance_id": f"{color}-1", "commit_interval_ms": 100,
    }
    values.update(extra)
    return ConsumerConfig(**values)


class Log:
    """Records which color handled which sequence number, and when."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, int]] = []

    def handler(self, color: str) -> Callable[[Record], object]:
        async def handle(record: Record) -> None:
            await asyncio.sleep(0.001)
            self.events.append((time.monotonic(), color, seq_of(record.value)))

        return handle

    def seqs(self, color: str | None = None) -> list[int]:
        return [s for _, c, s in self.events if color is None or c == color]


async def test_pausing_blue_releases_every_partition_to_green_without_dual_activity(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(4), unique_name("g")
    log = Log()
    blue = PyrallelConsumer(_config(kafka_bootstrap, group, topic, "blue"), log.handler("blue"))
    green = PyrallelConsumer(_config(kafka_bootstrap, group, topic, "green"), log.handler("green"))
    async with blue, green:
        await wait_for(lambda: len(green.lifecycle.status()["assigned_partitions"]) == 2, what="split 2/2")
        await green.lifecycle.pause(timeout_s=30)
        await wait_for(lambda: len(blue.lifecycle.status()["assigned_partitions"]) == 4, what="blue owns all")
        produce_keyed(kafka_bootstrap, topic, 400, keys=40)
        await wait_for(lambda: len(log.seqs()) == 400, what="blue handles everything while green is paused")
        assert log.seqs("green") == []
        assert blue.lifecycle.request_pause() is LifecycleState.DRAINING
        assert await blue.lifecycle.wait_for(LifecycleState.PAUSED, 30)
        paused_at = time.monotonic()
        assert blue.lifecycle.request_pause() is LifecycleState.PAUSED, "pausing twice is a no-op"
        assert blue.lifecycle.status()["assigned_partitions"] == []
        await green.lifecycle.resume(timeout_s=30)
        await wait_for(lambda: len(green.lifecycle.status()["assigned_partitions"]) == 4, what="green owns all")
        produce_keyed(kafka_bootstrap, topic, 400, keys=40, start_seq=400)
        await wait_for(lambda: len(log.seqs()) == 800, what="green handles the second half")
    assert sorted(log.seqs()) == list(range(800))
    assert sorted(log.seqs("green")) == list(range(400, 800))
    assert all(t < paused_at for t, c, _ in log.events if c == "blue"), "blue handled after it was PAUSED"


async def test_hold_mode_keeps_the_partitions_so_their_records_wait(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(4), unique_name("g")
    log = Log()
    blue = PyrallelConsumer(_config(kafka_bootstrap, group, topic, "blue", pause_mode="hold"), log.handler("blue"))
    green = PyrallelConsumer(_config(kafka_bootstrap, group, topic, "green", pause_mode="hold"),
                             log.handler("green"))
    async with blue, green:
        await wait_for(lambda: len(green.lifecycle.status()["assigned_partitions"]) == 2, what="split 2/2")
        await green.lifecycle.pause(timeout_s=30)
        produce_keyed(kafka_bootstrap, topic, 400, keys=40)
        held = set(green.lifecycle.status()["assigned_partitions"])
        assert len(held) == 2, "a paused member in hold mode keeps its partitions"
        counts = _records_per_partition(kafka_bootstrap, topic)
        blue_share = sum(n for p, n in counts.items() if f"{topic}[{p}]" not in held)
        waiting = 400 - blue_share
        await wait_for(lambda: len(log.seqs()) == blue_share, what="blue handles its own partitions")
        await asyncio.sleep(1)
        assert waiting > 0
        assert len(log.seqs()) == blue_share, "records of the held partitions must wait"
        await green.lifecycle.resume(timeout_s=30)
        await wait_for(lambda: len(log.seqs()) == 400, what="the held records once green resumes")
    assert sorted(log.seqs()) == list(range(400))


def _records_per_partition(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(4)}
    finally:
        probe.close()


async def test_consumer_started_paused_stays_paused_through_rebalances(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(2), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 100, keys=10)
    log = Log()
    for mode in ("release", "hold"):
        paused = PyrallelConsumer(_config(kafka_bootstrap, group, topic, "green", start_paused=True, pause_mode=mode),
                                  log.handler("green"))
        async with paused:
            assert paused.lifecycle.state is LifecycleState.PAUSED
            other = PyrallelConsumer(_config(kafka_bootstrap, group, topic, "blue", start_paused=True,
                                             pause_mode=mode), log.handler("blue"))
            async with other:  # joining and leaving rebalance the group
                await asyncio.sleep(3)
            await asyncio.sleep(2)
            assert paused.lifecycle.state is LifecycleState.PAUSED
        assert log.events == [], f"a paused consumer ({mode}) handled records"


async def test_stale_generation_is_refused(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(1), unique_name("g")
    async with PyrallelConsumer(_config(kafka_bootstrap, group, topic, "blue"), Log().handler("blue")) as consumer:
        await wait_for(lambda: consumer.lifecycle.state is LifecycleState.ACTIVE, what="active")
        assert await consumer.lifecycle.pause(timeout_s=30, generation=5)
        with pytest.raises(StaleGenerationError):
            consumer.lifecycle.request_resume(generation=4)
        assert consumer.lifecycle.status()["generation"] == 5
        assert await consumer.lifecycle.resume(timeout_s=30, generation=6)


async def test_record_cut_off_by_a_hold_pause_runs_again_first_after_resume(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    """A pause that keeps the partitions cancels what outlives drain_timeout_ms; those records are not lost
    and still run before the later records of their key."""
    topic, group = new_topic(1), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 5, keys=1)
    handled: list[int] = []
    attempts: list[int] = []

    async def handle(record: Record) -> None:
        seq = seq_of(record.value)
        attempts.append(seq)
        if seq == 0 and attempts.count(0) == 1:
            await asyncio.sleep(3600)  # cut off by the pause
        handled.append(seq)

    config = _config(kafka_bootstrap, group, topic, "blue", pause_mode="hold", drain_timeout_ms=300)
    async with PyrallelConsumer(config, handle) as consumer:
        await wait_for(lambda: attempts == [0], what="record 0 running")
        assert await consumer.lifecycle.pause(timeout_s=30)
        assert consumer.lifecycle.status()["committed_offsets"] == {f"{topic}[0]": 0}
        assert await consumer.lifecycle.resume(timeout_s=30)
        await wait_for(lambda: len(handled) == 5, what="every record after the resume")
        await wait_for(lambda: consumer.lifecycle.status()["committed_offsets"] == {f"{topic}[0]": 5},
                       what="commit to the end")
    assert handled == [0, 1, 2, 3, 4]
