"""CommitSchedule: what to commit and when, and what the broker acknowledged.

The Coordinator starts ``run`` as a task at start() and cancels it when stopping; it calls ``progressed()`` each
time a commit point moves, asks ``points()`` for the commits of a suspension, a revocation and the stop, and hands
the poller's results to ``on_committed``. All of it runs on the event loop; the commits themselves are sent by the
BrokerPoller on its thread. When the next asynchronous commit is due is decided by a CommitCadence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.control.observer import ConsumerObserver
from pyrallel_consumer.control.offset_tracker import CommitPoint
from pyrallel_consumer.event_wait import wait_event
from pyrallel_consumer.kafka.events import CommitResult
from pyrallel_consumer.kafka.poller import BrokerPoller
from pyrallel_consumer.observability.log_events import (
    COMMIT_FAILED,
    COMMIT_REFUSED_IN_REBALANCE,
    event_extra,
    partition_list,
)

log = logging.getLogger(__name__)

WORK_SHARE = 0.05
"""At most this share of the event loop's time goes to computing commit points: a commit that took t seconds to
compute is followed by the next one no sooner than t / WORK_SHARE. Computing a point walks the partition's tracked
offsets to encode the offset map (measured: 0.05 ms with a few hundred, 42 ms with 100,000 behind a blocked record),
which at 100 commits a second would take the whole loop."""


class CommitCadence:
    """When the next asynchronous commit is due (at_least_once): soon after progress, never too often.

    A throttle, not a timer: the first progress after a quiet spell is committed at once, more progress within
    ``min_interval_s`` of the last commit waits for that interval to end and goes out with it (coalesced). Without
    progress a commit is still due ``interval_s`` after the last one: it retries a failed commit and carries the
    moves nothing reports (over offsets the fetcher never hands out: transaction markers, compacted records). On
    top of this the poller keeps at most one commit in flight (CommitSender), and a commit whose points took long
    to compute spaces the next one out (WORK_SHARE). Pure bookkeeping on times the caller passes:
    CommitSchedule.run feeds it the loop's clock, the unit tests a fake one.
    """

    __slots__ = ("_gap_s", "_interval_s", "_last_s", "_min_interval_s", "progressed")

    def __init__(self, min_interval_s: float, interval_s: float, now: float) -> None:
        self._min_interval_s = min_interval_s
        self._interval_s = interval_s
        self._last_s = now
        self._gap_s = min_interval_s
        """The shortest time from the last commit to the next: the min interval, or longer after a costly one."""
        self.progressed = False
        """A commit point moved since the last commit."""

    def delay(self, now: float) -> float:
        """Seconds until the next commit is due; 0 when it is due now."""
        wait = self._gap_s if self.progressed else max(self._gap_s, self._interval_s)
        return max(0.0, self._last_s + wait - now)

    def committed(self, now: float, took_s: float) -> None:
        """A commit of everything progressed so far was handed to the poller at ``now``; computing its points took
        ``took_s`` seconds of the loop."""
        self._last_s = now
        self._gap_s = max(self._min_interval_s, took_s / WORK_SHARE)
        self.progressed = False


class CommitSchedule:
    """Commits the assigned partitions' commit points when a CommitCadence says so; counts the results."""

    def __init__(self, config: ConsumerConfig, assignments: Assignments, observer: ConsumerObserver) -> None:
        self._interval_s = config.commit_interval_ms / 1000
        self._min_interval_s = config.commit_min_interval_ms / 1000
        self._cadence: CommitCadence | None = None
        """Created by ``run`` (at_least_once only): exactly-once commits in transactions, see run_transactions."""
        self._wake = asyncio.Event()
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

    def progressed(self) -> None:
        """A commit point or offset map moved: a record completed, or records done before a restart were skipped on
        arrival. Called by the Coordinator on the loop for every completion, so it costs a flag check; the first
        call after a commit wakes ``run``."""
        cadence = self._cadence
        if cadence is not None and not cadence.progressed:
            cadence.progressed = True
            self._wake.set()

    async def run(self, poller: BrokerPoller) -> None:
        """At-least-once: hand the changed commit points to the poller whenever the CommitCadence says so."""
        loop = asyncio.get_running_loop()
        cadence = self._cadence = CommitCadence(self._min_interval_s, self._interval_s, loop.time())
        while True:
            delay = cadence.delay(loop.time())
            if delay > 0:
                if cadence.progressed:
                    await asyncio.sleep(delay)  # more completions within it only set the flag again
                else:
                    self._wake.clear()
                    await wait_event(self._wake, delay)
                continue
            started = loop.time()
            points = self.points()
            cadence.committed(started, loop.time() - started)
            poller.commit(points)

    async def run_transactions(self, commit: Callable[[], Awaitable[None]]) -> None:
        """Exactly-once: ``commit()`` one transaction each ``commit_interval_ms``, or as soon as ``commit_early`` was
        called (the size bound); one at a time, so the next transaction starts when the last one has committed."""
        while True:
            await wait_event(self._early, self._interval_s)
            self._early.clear()
            await commit()

    def commit_early(self) -> None:
        """Exactly-once: the open transaction reached transaction_max_records; commit it without waiting."""
        self._early.set()

    def on_committed(self, results: list[CommitResult]) -> None:
        """Count each partition's result, mark acknowledged points committed, log what went wrong.

        A commit refused because the group is rebalancing (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, ...) is
        expected: the partitions the member keeps are committed again by the first asynchronous commit after
        the rebalance (their points stay unacknowledged, so ``points()`` offers them again), the revoked ones by the
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
