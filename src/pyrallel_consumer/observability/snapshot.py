"""The public metrics types: what ``PyrallelConsumer.metrics()`` returns.

Built on the event loop by ``Coordinator.metrics()``; read by the application, the lifecycle status, the
Prometheus collector (which asks the loop for one per scrape) and the tooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PartitionMetrics:
    topic: str
    partition: int
    committed_offset: int | None
    high_watermark: int | None
    true_lag: int | None
    """Records at or above the committed offset that are not completed yet (up to the high-water mark)."""
    incomplete: int
    blocking_offset: int | None
    blocking_age_s: float
    metadata_bytes: int
    queued: int
    in_flight: int
    gap_offsets: int
    """Offsets never delivered (transaction markers, compacted or expired records); not waited for."""


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    partitions: tuple[PartitionMetrics, ...]
    in_flight: int
    queued: int
    paused_partitions: int
    """Partitions whose fetching is paused by backpressure."""
    records_received: int
    records_skipped: int
    records_succeeded: int
    records_failed: int
    records_exhausted: int
    """Records that failed every attempt, including those still held by the exhaustion policy."""
    retries: int
    commits: int
    commit_failures: int
    rebalances: dict[str, int] = field(default_factory=dict)
