"""What the BrokerPoller reports to the event loop, and the sink that receives it.

The poller thread creates these and posts them to the loop (``call_soon_threadsafe``); the Coordinator is the
sink, and every sink method runs on the event loop.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pyrallel_consumer.control.offset_tracker import CommitPoint, TopicPartitionKey
from pyrallel_consumer.deserialization import Deserialized
from pyrallel_consumer.record import Record


def partition_names(partitions: Sequence[TopicPartitionKey]) -> str:
    """``topic[partition], ...`` for log lines and errors."""
    return ", ".join(f"{t}[{p}]" for t, p in partitions)


@dataclass(frozen=True, slots=True)
class Assignment:
    """A partition newly assigned to this member, with what the group committed for it."""

    topic: str
    partition: int
    epoch: int
    committed_offset: int
    committed_metadata: str | None
    partition_end: int | None = None
    """The high watermark read at assignment when an offset map was committed (to judge the map); else None."""


@dataclass(frozen=True, slots=True)
class CommitResult:
    point: CommitPoint
    error: str | None
    latency_s: float
    rebalancing: bool = False
    """The broker refused the commit because the group is rebalancing (``commits.REBALANCING``): expected, and the
    next commit after the rebalance sends the same progress again."""


class PollerSink(Protocol):
    """What the poller reports to the loop side. All methods run on the event loop."""

    def on_records(self, batch: list[tuple[Record, int]], deserialized: list[Deserialized] | None = None) -> None:
        """Fetched records with their epochs; ``deserialized``, when the poller deserialized them, goes with
        ``batch`` one for one (``WorkItem.deserialized``)."""

    def on_assigned(self, assignments: list[Assignment]) -> None: ...

    def on_revoked(self, partitions: list[TopicPartitionKey]) -> Coroutine[Any, Any, list[CommitPoint]]: ...

    def on_lost(self, partitions: list[TopicPartitionKey]) -> None: ...

    def on_repositioned(self, assignments: list[Assignment]) -> None: ...

    def on_committed(self, results: list[CommitResult]) -> None: ...

    def on_poller_failed(self, error: BaseException) -> None: ...
