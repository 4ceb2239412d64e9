"""The metrics of a share-group consumer (PyrallelShareConsumer): plain numbers updated on the event loop, turned
into Prometheus families at scrape time (as ``RecordStats`` does for the consumer group's records) in the
consumer's own registry, and into a ``ShareMetricsSnapshot`` for ``PyrallelShareConsumer.metrics()``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pyrallel_consumer.control.lifecycle import LifecycleState

if TYPE_CHECKING:
    from pyrallel_consumer.config import ConsumerConfig

ACK_KINDS = ("accept", "release", "reject")
DELIVERY_BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
"""Deliveries of a record: the broker's delivery count limit is 2 to 10."""


@dataclass(frozen=True, slots=True)
class ShareMetricsSnapshot:
    """What a share-group consumer did so far (counts since start) and holds now."""

    acquired: int
    """Records the broker handed to this member (redeliveries count again)."""
    acknowledged: dict[str, int]
    """Acknowledgements the broker applied, by kind: accept, release, reject."""
    refused: int
    """Acknowledgements the broker refused: the record's lock had expired (it is delivered again)."""
    lock_expired: int
    """Records whose lock ran out before they settled here: released, their late result not acknowledged."""
    dead_lettered: int
    """Records copied to the dead-letter topic (then accepted)."""
    deliveries: dict[int, int]
    """Acquired records by their delivery count (1 = first delivery)."""
    in_flight: int
    """Acquired records not settled yet (handled, waiting for a slot, or in the dead-letter write)."""


class ShareStats(Collector):
    """Counters of one PyrallelShareConsumer; updated on the event loop, read by scrapes (each read atomic).

    Also its Lifecycle's observer: ``kafka_consumer_lifecycle_state`` is the consumer group's metric, with the same
    labels, so one alert or dashboard covers both kinds of consumer.
    """

    def __init__(self, config: ConsumerConfig | None = None) -> None:
        self._labels = ((config.group_id, config.color or "", config.instance_id) if config is not None
                        else ("", "", ""))
        self.lifecycle_state = LifecycleState.STARTING.value
        self.acquired = 0
        self.acknowledged = dict.fromkeys(ACK_KINDS, 0)
        self.refused = 0
        self.lock_expired = 0
        self.dead_lettered = 0
        self.deliveries: dict[int, int] = {}
        self.in_flight = 0

    def record_acquired(self, delivery_count: int) -> None:
        self.acquired += 1
        self.deliveries[delivery_count] = self.deliveries.get(delivery_count, 0) + 1

    def lifecycle_changed(self, state: str) -> None:
        self.lifecycle_state = state

    def snapshot(self) -> ShareMetricsSnapshot:
        return ShareMetricsSnapshot(self.acquired, dict(self.acknowledged), self.refused, self.lock_expired,
                                    self.dead_lettered, dict(sorted(self.deliveries.items())), self.in_flight)

    def describe(self) -> Iterator[Metric]:
        return iter(ShareStats()._families(ShareStats().snapshot()))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self.snapshot()))

    def _families(self, s: ShareMetricsSnapshot) -> list[Metric]:
        acquired = CounterMetricFamily("pyrallel_share_records_acquired",
                                       "Records the share group handed to this member (redeliveries again).",
                                       value=s.acquired)
        acknowledged = CounterMetricFamily(
            "pyrallel_share_acknowledgements",
            "Acknowledgements the broker applied, by kind: accept, release (delivered again), reject (archived).",
            labels=("kind",))
        for kind, count in s.acknowledged.items():
            acknowledged.add_metric((kind,), count)
        refused = CounterMetricFamily("pyrallel_share_acknowledgements_refused",
                                      "Acknowledgements the broker refused because the record's lock had expired.",
                                      value=s.refused)
        expired = CounterMetricFamily(
            "pyrallel_share_lock_expiries",
            "Records whose lock ran out before they settled: released, the late result not acknowledged.",
            value=s.lock_expired)
        dead = CounterMetricFamily("pyrallel_share_dead_lettered",
                                   "Records copied to the dead-letter topic, then accepted.", value=s.dead_lettered)
        counts = [s.deliveries.get(b, 0) for b in DELIVERY_BUCKETS]
        over = sum(c for d, c in s.deliveries.items() if d > DELIVERY_BUCKETS[-1])
        cumulative = list(itertools.accumulate([*counts, over]))
        bounds = [repr(float(b)) for b in DELIVERY_BUCKETS] + ["+Inf"]
        deliveries = HistogramMetricFamily(
            "pyrallel_share_delivery_count", "The delivery count of each acquired record (1 = first delivery).",
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=float(sum(d * c for d, c in s.deliveries.items())))
        in_flight = GaugeMetricFamily("pyrallel_share_in_flight", "Acquired records not settled yet.",
                                      value=s.in_flight)
        lifecycle = GaugeMetricFamily("kafka_consumer_lifecycle_state",
                                      "1 for the lifecycle state this consumer is in, 0 for the others.",
                                      labels=("group", "color", "instance", "state"))
        for state in LifecycleState:
            lifecycle.add_metric((*self._labels, state.value), 1 if state.value == self.lifecycle_state else 0)
        return [acquired, acknowledged, refused, expired, dead, deliveries, in_flight, lifecycle]
