"""The coordinator's counters and the MetricsSnapshot built from them and from the owners' state.

Coordinator counts into a Counts on the event loop and calls ``metrics_snapshot`` there for
``PyrallelConsumer.metrics()`` (the application, the lifecycle status, the Prometheus collector).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.control.commit_schedule import CommitSchedule
from pyrallel_consumer.control.work_manager import WorkManager
from pyrallel_consumer.kafka.poller import BrokerPoller
from pyrallel_consumer.observability.snapshot import MetricsSnapshot, PartitionMetrics


@dataclass(slots=True)
class Counts:
    """Records and rebalances seen since start; commits are counted by the CommitSchedule."""

    received: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    exhausted: int = 0
    retries: int = 0
    rebalances: dict[str, int] = field(default_factory=lambda: {"assign": 0, "revoke": 0, "lost": 0})


def metrics_snapshot(counts: Counts, assignments: Assignments, work: WorkManager, commits: CommitSchedule,
                     poller: BrokerPoller | None) -> MetricsSnapshot:
    watermarks = poller.high_watermarks if poller is not None else {}
    rows = []
    for offsets in assignments.trackers():
        tp = offsets.topic_partition
        committed = offsets.commit_offset()
        high = watermarks.get(tp)
        lag = None
        if high is not None and committed is not None:
            # The watermark is refreshed about once a second; what was received is newer.
            high = max(high, offsets.last_received + 1)
            lag = max(0, high - committed - offsets.completed_above_count)
        blocking = offsets.blocking()
        rows.append(PartitionMetrics(
            tp[0], tp[1], offsets.last_committed_offset, high, lag, offsets.incomplete_count,
            blocking[0] if blocking else None, blocking[1] if blocking else 0.0, offsets.metadata_bytes,
            work.queued_of(tp), work.in_flight_of(tp), offsets.gap_offsets,
        ))
    c = counts
    return MetricsSnapshot(
        tuple(rows), work.in_flight, work.queued, poller.backpressure_paused if poller is not None else 0,
        c.received, c.skipped, c.succeeded, c.failed, c.exhausted, c.retries, commits.commits, commits.failures,
        dict(c.rebalances),
    )
