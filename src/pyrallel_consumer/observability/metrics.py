"""Prometheus metrics of one consumer, in a registry of its own: importing or starting never touches a global.

Events (records finished, commits, rebalances, errors) update counters and histograms through the observer
hooks, which is all the hot path pays. State (lags, offsets, queue sizes) is read from ``consumer.metrics()``
only when Prometheus scrapes, by a custom collector. Labels are bounded: topic, partition, outcome, kind and
the consumer's own group, color and instance; never a key or an offset.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pyrallel_consumer.control.lifecycle import LifecycleState
from pyrallel_consumer.control.observer import ConsumerObserver

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from pyrallel_consumer.config import ConsumerConfig
    from pyrallel_consumer.execution.engine import Completion
    from pyrallel_consumer.observability.snapshot import MetricsSnapshot
    from pyrallel_consumer.record import Record

log = logging.getLogger(__name__)

OUTCOMES = ("success", "retried", "failed", "dlq")
REBALANCE_KINDS = ("assign", "revoke", "lost")
ERROR_KINDS = ("commit", "poller", "handler", "deserialization", "dlq")
HANDLER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_AVG_WEIGHT = 0.1
"""Weight of the newest commit in ``kafka_consumer_commit_latency_avg`` (about the last 10-20 commits count)."""
SCRAPE_TIMEOUT_S = 5.0
"""How long a scrape waits for the event loop to read the consumer's state before it leaves that state out."""

# (metric, PartitionMetrics field, help): gauges labelled topic, partition; a None field leaves the sample out.
PARTITION_GAUGES = (
    ("pyrallel_committed_offset", "committed_offset",
     "Offset last committed to Kafka (acknowledged): the next record a new owner would read."),
    ("pyrallel_high_watermark", "high_watermark", "Offset the next produced record will get (log end)."),
    ("pyrallel_true_lag", "true_lag",
     "Records at or above the commit position not completed yet: the work really left, unlike Kafka lag."),
    ("pyrallel_incomplete_offsets", "incomplete", "Received records not completed yet."),
    ("pyrallel_blocking_offset_age_seconds", "blocking_age_s",
     "How long the lowest incomplete offset has held the commit position back (0 when nothing blocks)."),
    ("pyrallel_commit_metadata_bytes", "metadata_bytes",
     "Size of the offset map of completed records above the commit, carried in the commit metadata."),
)
# (metric, MetricsSnapshot field, help): unlabelled gauges.
CONSUMER_GAUGES = (
    ("pyrallel_in_flight", "in_flight", "Records whose handler is running (or retrying) now."),
    ("pyrallel_queued", "queued", "Fetched records waiting for dispatch."),
    ("pyrallel_paused_partitions", "paused_partitions", "Partitions whose fetching backpressure has paused."),
)


class PrometheusExporter(ConsumerObserver):
    """The consumer's Prometheus metrics; an observer that forwards every hook to ``chained`` too.

    ``registry`` can be mounted by a host application's own HTTP server; ``start`` additionally serves it on
    ``config.metrics_port`` when that is set.
    """

    def __init__(
        self,
        config: ConsumerConfig,
        snapshot: Callable[[], MetricsSnapshot],
        chained: ConsumerObserver | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._config = config
        self._next = chained if chained is not None else ConsumerObserver()
        reg = self.registry
        self._consumed = Counter("pyrallel_records_consumed", "Records fetched from Kafka into the work queues.",
                                 registry=reg)
        self._records = RecordStats()
        reg.register(self._records)
        self._commit_latency = Histogram("pyrallel_commit_latency_seconds",
                                         "Time from sending a partition's commit to the broker's answer.",
                                         buckets=COMMIT_BUCKETS, registry=reg)
        self._batches = Counter("pyrallel_batches", "Batches handed to the batch handler (first attempts).",
                                registry=reg)
        self._batch_size = Histogram("pyrallel_batch_size_records", "Records per batch handed to the batch handler.",
                                     buckets=BATCH_SIZE_BUCKETS, registry=reg)
        self._rebalance_refusals = Counter(
            "pyrallel_commit_rebalance_refusals",
            "Partition commits refused because the group was rebalancing (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, "
            "...): expected; the next commit after the rebalance sends the same progress.", registry=reg)
        self._rebalances = Counter("pyrallel_rebalances", "Rebalance callbacks by kind: assign, revoke, lost.",
                                   ["kind"], registry=reg)
        self._rebalance_count = Counter("kafka_consumer_rebalance_count",
                                        "Rebalance callbacks of any kind (blue/green name).", registry=reg)
        self._errors = Counter("kafka_consumer_errors",
                               "Failures worth alerting on: commit, poller, handler, deserialization, dlq.",
                               ["kind"], registry=reg)
        self._commit_avg = Gauge("kafka_consumer_commit_latency_avg",
                                 "Exponentially weighted moving average of the commit latency in seconds.",
                                 registry=reg)
        lifecycle = Gauge("kafka_consumer_lifecycle_state",
                          "1 for the lifecycle state this consumer is in, 0 for the others.",
                          ["group", "color", "instance", "state"], registry=reg)
        self._states = {
            state.value: lifecycle.labels(config.group_id, config.color or "", config.instance_id, state.value)
            for state in LifecycleState
        }
        for kind in REBALANCE_KINDS:
            self._rebalances.labels(kind)
        for kind in ERROR_KINDS:
            self._errors.labels(kind)
        self._commit_avg_s: float | None = None
        self._set_state(LifecycleState.STARTING.value)
        self._state_collector = StateCollector(snapshot, config.max_in_flight)
        reg.register(self._state_collector)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ---- serving -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind to the running event loop (scrapes read the consumer's state there); serve when a port is set."""
        self._state_collector.loop = asyncio.get_running_loop()
        port = self._config.metrics_port
        if port is None or self._server is not None:
            return
        self._server, self._thread = start_http_server(port, self._config.metrics_host, self.registry)
        log.info("Serving Prometheus metrics on http://%s:%d/metrics", self._config.metrics_host, self.port)

    @property
    def port(self) -> int | None:
        """The port /metrics is served on (the one the OS picked for metrics_port=0), None when not serving."""
        return None if self._server is None else self._server.server_port

    def stop(self) -> None:
        """Stop serving: the target disappears instead of reporting a stopped consumer's frozen state."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # ---- observer hooks (event loop) ---------------------------------------------------------------------

    def records_received(self, count: int) -> None:
        self._consumed.inc(count)
        self._next.records_received(count)

    def record_completed(self, record: Record, completion: Completion) -> None:
        self._next.record_completed(record, completion)

    def record_finished(self, outcome: str, duration_s: float, attempts: int) -> None:
        self._records.add(outcome, duration_s)
        self._next.record_finished(outcome, duration_s, attempts)

    def batch_dispatched(self, records: int) -> None:
        self._batches.inc()
        self._batch_size.observe(records)
        self._next.batch_dispatched(records)

    def commit_finished(self, latency_s: float, ok: bool) -> None:
        self._commit_latency.observe(latency_s)
        avg = self._commit_avg_s
        self._commit_avg_s = latency_s if avg is None else avg + COMMIT_AVG_WEIGHT * (latency_s - avg)
        self._commit_avg.set(self._commit_avg_s)
        self._next.commit_finished(latency_s, ok)

    def commits_refused_in_rebalance(self, partitions: int) -> None:
        self._rebalance_refusals.inc(partitions)
        self._next.commits_refused_in_rebalance(partitions)

    def rebalanced(self, kind: str, partitions: int) -> None:
        self._rebalances.labels(kind).inc()
        self._rebalance_count.inc()
        self._next.rebalanced(kind, partitions)

    def error(self, kind: str) -> None:
        self._errors.labels(kind).inc()
        self._next.error(kind)

    def lifecycle_changed(self, state: str) -> None:
        self._set_state(state)
        self._next.lifecycle_changed(state)

    def _set_state(self, current: str) -> None:
        for state, gauge in self._states.items():
            gauge.set(1 if state == current else 0)


class RecordStats(Collector):
    """What each finished record adds, kept as plain numbers and turned into metrics at scrape time.

    A prometheus-client Counter and Histogram take a lock and walk the buckets in Python on every call,
    about a tenth of the engine's whole cost per record. Updates run on the event loop; a scrape copies the
    numbers (each read is atomic) and derives the count from the buckets, so the histogram is consistent.
    """

    def __init__(self) -> None:
        self._bounds = HANDLER_BUCKETS
        self._buckets = [0] * (len(HANDLER_BUCKETS) + 1)
        self._sum = 0.0
        self._by_outcome = dict.fromkeys(OUTCOMES, 0)

    def add(self, outcome: str, duration_s: float) -> None:
        self._by_outcome[outcome] = self._by_outcome.get(outcome, 0) + 1  # a custom policy brings its own label
        self._buckets[bisect.bisect_left(self._bounds, duration_s)] += 1
        self._sum += duration_s

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(dict.fromkeys(OUTCOMES, 0), [0] * len(self._buckets), 0.0))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(dict(self._by_outcome), list(self._buckets), self._sum))

    def _families(self, by_outcome: dict[str, int], buckets: list[int], total_s: float) -> list[Metric]:
        completed = CounterMetricFamily(
            "pyrallel_records_completed",
            "Records that left the in-flight set: success, retried (success after retries), failed or dlq.",
            labels=("outcome",),
        )
        for outcome, count in by_outcome.items():
            completed.add_metric((outcome,), count)
        cumulative = list(itertools.accumulate(buckets))
        bounds = [repr(float(b)) for b in self._bounds] + ["+Inf"]  # "0.005", "1.0": as prometheus-client writes them
        duration = HistogramMetricFamily("pyrallel_handler_duration_seconds",
                                         "Handler time per record, all attempts included.",
                                         buckets=list(zip(bounds, cumulative, strict=True)), sum_value=total_s)
        return [completed, duration]


class StateCollector(Collector):
    """Gauges read from ``snapshot()`` at scrape time, on the consumer's event loop that owns that state."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot], max_in_flight: int) -> None:
        self._snapshot = snapshot
        self._max_in_flight = max_in_flight
        self.loop: asyncio.AbstractEventLoop | None = None
        """The consumer's loop once started; a scrape from another thread hands the read over to it."""

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(None))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self._read()))

    def _read(self) -> MetricsSnapshot | None:
        loop = self.loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            return self._snapshot()
        try:
            return asyncio.run_coroutine_threadsafe(self._read_on_loop(), loop).result(SCRAPE_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as exc:  # loop blocked, or closed meanwhile
            log.warning("Scrape left out the consumer state: the event loop did not answer (%r)", exc)
            return None

    async def _read_on_loop(self) -> MetricsSnapshot:
        return self._snapshot()

    def _families(self, snapshot: MetricsSnapshot | None) -> list[Metric]:
        max_in_flight = GaugeMetricFamily("pyrallel_max_in_flight", "Configured max_in_flight: the capacity.",
                                          value=self._max_in_flight)
        consumer = [GaugeMetricFamily(name, help_text) for name, _, help_text in CONSUMER_GAUGES]
        partitions = [GaugeMetricFamily(name, help_text, labels=("topic", "partition"))
                      for name, _, help_text in PARTITION_GAUGES]
        if snapshot is not None:
            for family, (_, field, _) in zip(consumer, CONSUMER_GAUGES, strict=True):
                family.add_metric((), getattr(snapshot, field))
            for row in snapshot.partitions:
                labels = (row.topic, str(row.partition))
                for family, (_, field, _) in zip(partitions, PARTITION_GAUGES, strict=True):
                    value = getattr(row, field)
                    if value is not None:
                        family.add_metric(labels, value)
        return [max_in_flight, *consumer, *partitions]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
