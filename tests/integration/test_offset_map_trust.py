"""A committed offset map is only trusted when this partition could hold it: a hostile or stale map that claims
records as done that were never handled is ignored (with one warning) and those records are handled."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition
from tests.support import committed, seq_of, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer, Record
from pyrallel_consumer.control.offset_codec import encode_offset_ranges
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration

COMMITTED = 2
"""The offset a plain consumer of the group commits, with the map under test as its metadata."""
LATER = 3
"""Records produced once the consumer handled the first ones."""

MAPS: dict[str, tuple[int, int, dict[str, object]]] = {
    # (records produced first, end of the map's window, config overrides)
    # 27 characters claiming every offset of a 2**40 window above the committed one as done.
    "window of 2**40": (40, COMMITTED + 2**40, {}),
    # A map that reaches 30 offsets past the log end.
    "30 past the log end": (40, 70, {}),
    # Inside the log, but wider than this consumer would ever write.
    "wider than max_pending_offsets": (200, 200, {"max_pending_offsets": 100}),
}


def _commit_as_plain_consumer(bootstrap: str, group: str, topic: str, offset: int, metadata: str) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset, metadata)], asynchronous=False)
    finally:
        consumer.close()


@pytest.mark.parametrize("reset", ["earliest", "latest"])
@pytest.mark.parametrize("case", list(MAPS))
async def test_a_map_claiming_records_never_handled_is_ignored_and_they_are_handled(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
    caplog: pytest.LogCaptureFixture, reset: str, case: str,
) -> None:
    topic, group = new_topic(1), unique_name("g")
    end, window_end, overrides = MAPS[case]
    assert produce_keyed(kafka_bootstrap, topic, end, keys=5) == end
    metadata = encode_offset_ranges(COMMITTED, [(COMMITTED + 1, window_end)], window_end)
    assert metadata, "the map under test fits in the commit metadata"
    _commit_as_plain_consumer(kafka_bootstrap, group, topic, COMMITTED, metadata)

    handled: list[int] = []

    async def handle(record: Record) -> None:
        handled.append(seq_of(record.value))

    config = ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], commit_interval_ms=100,
                            auto_offset_reset=reset, **overrides)
    with caplog.at_level(logging.WARNING, logger="pyrallel_consumer"):
        async with PyrallelConsumer(config, handle):
            await wait_for(lambda: len(handled) >= end - COMMITTED, what="every record above the committed offset")
            assert produce_keyed(kafka_bootstrap, topic, LATER, keys=5, start_seq=end) == LATER
            await wait_for(lambda: len(handled) >= end + LATER - COMMITTED, what="the records produced later")
            await wait_for(lambda: committed(kafka_bootstrap, group, topic, 1)[0][0] == end + LATER,
                           what="a commit at the end of the log")
    assert sorted(handled) == list(range(COMMITTED, end + LATER)), "each record from the committed one, once"
    offset, metadata_after = committed(kafka_bootstrap, group, topic, 1)[0]
    assert offset == end + LATER, "never committed beyond the end of the log"
    assert not metadata_after
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "Ignoring the offset map" in r.getMessage()]
    assert len(warnings) == 1 and f"{topic}[0] at offset {COMMITTED}" in warnings[0]


async def test_a_trusted_map_still_skips_the_records_it_names(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
) -> None:
    topic, group = new_topic(1), unique_name("g")
    assert produce_keyed(kafka_bootstrap, topic, 40, keys=5) == 40
    # Offsets 5..9 done above the committed offset 2; the window ends at the log end.
    metadata = encode_offset_ranges(COMMITTED, [(5, 10)], 40)
    assert metadata
    _commit_as_plain_consumer(kafka_bootstrap, group, topic, COMMITTED, metadata)
    handled: list[int] = []

    async def handle(record: Record) -> None:
        handled.append(seq_of(record.value))

    config = ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], commit_interval_ms=100)
    async with PyrallelConsumer(config, handle):
        await wait_for(lambda: committed(kafka_bootstrap, group, topic, 1)[0][0] == 40, what="commit at the end")
    assert sorted(handled) == [o for o in range(COMMITTED, 40) if not 5 <= o < 10]
