"""CommitSchedule: what to commit and when, and what the broker acknowledged.

The Coordinator starts ``run`` as a task at start() and cancels it when stopping; it asks ``points()`` for the
commits of a suspension, a revocation and the stop, and hands the poller's results to ``on_committed``. All
of it runs on the event loop; the commits themselves are sent by the BrokerPoller on its thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.control.observer import ConsumerObserver
from pyrallel_consumer.control.offset_tracker import CommitPoint
from pyrallel_consumer.kafka.events import CommitResult
from pyrallel_consumer.kafka.poller import BrokerPoller
from pyrallel_consumer.observability.log_events import (
    COMMIT_FAILED,
    COMMIT_REFUSED_IN_REBALANCE,
    event_extra,
    partition_list,
)

log = logging.getLogger(__name__)


class CommitSchedule:
    """Commits every assigned partition's commit point each ``commit_interval_ms``; counts the results."""

    def __init__(self, config: ConsumerConfig, assignments: Assignments, observer: ConsumerObserver) -> None:
        self._interval_s = config.commit_interval_ms / 1000
        self._assignments = assignments
        self._observer = observer
        self._labels = {"color": config.color, "instance": config.instance_id}
        self.commits = 0
        self.failures = 0
        """Refused or failed partition commits, those refused during a rebalance included."""
        self._refused_since_ack = False
        """A commit was refused for a rebalance and none acknowledged since: the rebalance's INFO line was logged."""
        self._early = asyncio.Event()

    def points(self) -> list[CommitPoint]:
        """The commit point of each current assignment that changed since its last acknowledged commit."""
        return [p for offsets in self._assignments.trackers() if (p := offsets.commit_point()) is not None]

    async def run(self, poller: BrokerPoller) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            poller.commit(self.points())

    async def run_transactions(self, commit: Callable[[], Awaitable[None]]) -> None:
        """Exactly-once: ``commit()`` one transaction each ``commit_interval_ms``, or as soon as ``commit_early`` was
        called (the size bound); one at a time, so the next transaction starts when the last one has committed."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._early.wait(), self._interval_s)
            self._early.clear()
            await commit()

    def commit_early(self) -> None:
        """Exactly-once: the open transaction reached transaction_max_records; commit it without waiting."""
        self._early.set()

    def on_committed(self, results: list[CommitResult]) -> None:
        """Count each partition's result, mark acknowledged points committed, log what went wrong.

        A commit refused because the group is rebalancing (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, ...) is
        expected: the partitions the member keeps are committed again by the first periodic commit after the
        rebalance (their points stay unacknowledged, so ``points()`` offers them again), the revoked ones by the
        revocation's synchronous commit. Those refusals are counted and logged once per rebalance at INFO (until a
        commit is acknowledged again); any other failure is a WARNING line each and counts as an error.
        """
        refused: list[CommitResult] = []
        acknowledged = False
        for result in results:
            point = result.point
            self._observer.commit_finished(result.latency_s, result.error is None)
            if result.error is None:
                self.commits += 1
                acknowledged = True
                point.tracker.mark_committed(point)
                continue
            self.failures += 1
            if result.rebalancing:
                refused.append(result)
                continue
            self._observer.error("commit")
            log.warning("Commit of %s[%d]@%d failed: %s", point.topic, point.partition, point.offset,
                        result.error,
                        extra=event_extra(COMMIT_FAILED, topic=point.topic, partition=point.partition,
                                          offset=point.offset, error=result.error, **self._labels))
        if refused:
            self._observer.commits_refused_in_rebalance(len(refused))
            if not self._refused_since_ack:
                keys = [(r.point.topic, r.point.partition) for r in refused]
                log.info("Commit of %s refused while the group rebalances (%s): expected; the first commit after "
                         "the rebalance covers this progress", partition_list(keys), refused[0].error,
                         extra=event_extra(COMMIT_REFUSED_IN_REBALANCE, partitions=partition_list(keys),
                                           partition_count=len(keys), error=refused[0].error, **self._labels))
            self._refused_since_ack = True
        elif acknowledged:
            self._refused_since_ack = False
