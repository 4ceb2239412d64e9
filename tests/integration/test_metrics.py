"""Prometheus metrics scraped over HTTP while a consumer runs against the real broker: counts match what was
produced, true lag drains to 0, and a stuck record shows up as a growing blocking offset age until released."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support import seq_of, wait_for

from pyrallel_consumer import ConsumerConfig, PartitionMetrics, PyrallelConsumer, Record
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration

PARTITIONS = 3


class Scrape:
    """One scrape of /metrics, parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def per_partition(self, name: str) -> dict[int, float]:
        return {int(s.labels["partition"]): s.value for s in self.samples if s.name == name}


async def scrape(port: int | None) -> Scrape:
    """GET /metrics from a worker thread: the exporter reads the consumer's state on this test's event loop."""
    url = f"http://127.0.0.1:{port}/metrics"

    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    return Scrape(await asyncio.to_thread(get))


def settled(consumer: PyrallelConsumer) -> bool:
    """Every partition assigned, nothing left to do, and everything committed up to the high watermark."""
    rows = consumer.metrics().partitions
    return len(rows) == PARTITIONS and all(
        p.true_lag == 0 and p.high_watermark is not None and p.committed_offset == p.high_watermark for p in rows
    )


async def test_metrics_scraped_during_a_real_run(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(PARTITIONS), unique_name("g")
    assert produce_keyed(kafka_bootstrap, topic, 300, keys=30) == 300
    stuck_seq, release = 307, asyncio.Event()
    stuck_at: list[Record] = []
    handled: set[int] = set()

    async def handle(record: Record) -> None:
        seq = seq_of(record.value)
        if seq == stuck_seq:
            stuck_at.append(record)
            await release.wait()
        handled.add(seq)

    config = ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], metrics_port=0,
                            commit_interval_ms=100, color="blue", instance_id="blue-1", max_in_flight=50)
    consumer = PyrallelConsumer(config, handle)
    async with consumer:
        port = consumer.metrics_exporter.port
        assert port is not None
        await wait_for(lambda: len(handled) == 300, what="the first 300 records handled")
        await wait_for(lambda: settled(consumer), what="true lag 0 and every partition committed")
        first = await scrape(port)
        assert first.value("pyrallel_records_consumed_total") == 300
        assert first.value("pyrallel_records_completed_total", outcome="success") == 300
        assert first.value("pyrallel_handler_duration_seconds_count") == 300
        assert first.per_partition("pyrallel_true_lag") == dict.fromkeys(range(PARTITIONS), 0)
        assert first.per_partition("pyrallel_committed_offset") == first.per_partition("pyrallel_high_watermark")
        assert sum(first.per_partition("pyrallel_high_watermark").values()) == 300
        assert first.value("pyrallel_max_in_flight") == 50
        assert first.value("pyrallel_in_flight") == 0
        assert first.value("pyrallel_commit_latency_seconds_count") >= PARTITIONS
        assert first.value("pyrallel_rebalances_total", kind="assign") >= 1
        assert first.value("kafka_consumer_rebalance_count_total") >= 1
        assert first.value("kafka_consumer_errors_total", kind="commit") == 0
        lifecycle = {s.labels["state"]: s.value for s in first.samples if s.name == "kafka_consumer_lifecycle_state"}
        assert lifecycle == {"STARTING": 0, "ACTIVE": 1, "DRAINING": 0, "PAUSED": 0, "STOPPED": 0}

        assert produce_keyed(kafka_bootstrap, topic, 100, keys=30, start_seq=300) == 100
        same_key = {seq for seq in range(300, 400) if seq % 30 == stuck_seq % 30}  # wait behind it (key order)
        await wait_for(lambda: handled == set(range(400)) - same_key, what="every record of other keys handled")
        stuck = stuck_at[0]
        labels = {"topic": topic, "partition": str(stuck.partition)}

        def stuck_row() -> PartitionMetrics:
            return next(p for p in consumer.metrics().partitions if p.partition == stuck.partition)

        def blocking_age() -> float:
            row = stuck_row()
            return row.blocking_age_s if row.blocking_offset == stuck.offset else 0.0

        # true lag counts up to the high watermark, which the poller refreshes about once a second
        await wait_for(lambda: blocking_age() > 0 and (stuck_row().true_lag or 0) >= 1,
                       what="the stuck record blocking its partition, counted in its true lag")
        before = await scrape(port)
        age_before = before.value("pyrallel_blocking_offset_age_seconds", **labels)
        assert age_before > 0
        assert before.value("pyrallel_true_lag", **labels) >= 1
        assert before.value("pyrallel_incomplete_offsets", **labels) >= 1
        assert before.value("pyrallel_in_flight") == 1
        await wait_for(lambda: blocking_age() > age_before + 0.5, what="the blocking age to grow")
        after = await scrape(port)
        assert after.value("pyrallel_blocking_offset_age_seconds", **labels) > age_before + 0.5
        assert after.value("pyrallel_committed_offset", **labels) <= stuck.offset, "nothing committed past it"

        release.set()
        await wait_for(lambda: len(handled) == 400 and settled(consumer), what="the released record committed")
        final = await scrape(port)
        assert final.value("pyrallel_blocking_offset_age_seconds", **labels) == 0
        assert final.value("pyrallel_records_consumed_total") == 400
        assert final.value("pyrallel_records_completed_total", outcome="success") == 400
        assert sum(final.per_partition("pyrallel_true_lag").values()) == 0
        assert sum(final.per_partition("pyrallel_committed_offset").values()) == 400

    with pytest.raises(urllib.error.URLError):
        await scrape(port)
