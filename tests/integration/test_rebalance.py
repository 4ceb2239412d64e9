"""Hand-over between group members: nothing lost, per-key order kept, no stale commit."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from tests.support import committed, seq_of, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer, Record
from pyrallel_consumer.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration

RECORDS = 8000


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
async def test_member_joins_then_first_leaves_without_loss_or_reordering(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], protocol: str
) -> None:
    topic, group = new_topic(6), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, RECORDS, keys=60)
    handled: list[tuple[float, str, bytes, int]] = []

    def handler(name: str) -> Callable[[Record], object]:
        async def handle(record: Record) -> None:
            await asyncio.sleep(0.02)
            assert record.key is not None
            handled.append((time.monotonic(), name, record.key, seq_of(record.value)))

        return handle

    def config() -> ConsumerConfig:
        return ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic],
                              max_in_flight=20, commit_interval_ms=200, group_protocol=protocol)

    first = PyrallelConsumer(config(), handler("first"))
    second = PyrallelConsumer(config(), handler("second"))
    await first.start()
    try:
        await wait_for(lambda: len(handled) >= RECORDS // 5, what="first member under way")
        await second.start()
        await wait_for(lambda: any(n == "second" for _, n, _, _ in handled), what="second member handling")
        await wait_for(lambda: len(handled) >= RECORDS // 2, what="both under way")
        await first.stop(drain=True)
        await wait_for(lambda: len({s for _, _, _, s in handled}) == RECORDS, timeout_s=120, what="all records")
        await wait_for(lambda: sum(o for o, _ in committed(kafka_bootstrap, group, topic, 6)) == RECORDS,
                       what="commits at the end")
    finally:
        await first.stop()
        await second.stop()
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for _, _, key, seq in sorted(handled):
        by_key[key].append(seq)
    seqs = [s for _, _, _, s in handled]
    assert sorted(set(seqs)) == list(range(RECORDS))
    assert len(seqs) == RECORDS, f"{len(seqs) - RECORDS} records were handled twice across the hand-over"
    for key, key_seqs in by_key.items():
        assert key_seqs == sorted(key_seqs), f"key {key!r} handled out of order"
    assert {n for _, n, _, _ in handled} == {"first", "second"}
