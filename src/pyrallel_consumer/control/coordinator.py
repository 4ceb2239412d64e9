"""The control plane on the event loop: fetched records in, ordered dispatch out, safe commits.

It owns the offset trackers and the work manager, talks to Kafka only through the BrokerPoller and to
handlers only through the ExecutionEngine contract, so it never knows which engine runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from pyrallel_consumer.config import REVOKE_MARGIN_MS, ConsumerConfig, librdkafka_config_error
from pyrallel_consumer.control.observer import ConsumerObserver
from pyrallel_consumer.control.offset_tracker import CommitPoint, PartitionOffsets, TopicPartitionKey, restore_map
from pyrallel_consumer.control.poller import Assignment, BrokerPoller, CommitResult, partition_names
from pyrallel_consumer.control.work_manager import QueuedRecord, WorkManager
from pyrallel_consumer.execution.engine import Completion, ExecutionEngine
from pyrallel_consumer.observability.logging import librdkafka_logger
from pyrallel_consumer.record import Record

log = logging.getLogger(__name__)

TOPIC_CHECK_TIMEOUT_S = 15.0
"""missing_topic='fail': how long start() waits for a broker to list the topics before BrokerUnreachableError."""

class MissingTopicError(RuntimeError):
    """A subscribed topic does not exist and missing_topic is 'fail'."""


class BrokerUnreachableError(RuntimeError):
    """No broker of bootstrap_servers answered at start (missing_topic='fail' asks for the topics first)."""


class ExhaustionPolicy(Protocol):
    """What happens to a record that failed every attempt.

    Returns True to let the record's offset be committed, False to keep it incomplete; the policy is
    then called again after a backoff (e.g. while a dead-letter topic cannot be written) and the
    record's key stays blocked meanwhile. ``outcome`` labels such records in metrics.
    """

    outcome: str

    async def __call__(self, record: Record, completion: Completion) -> bool: ...


class LogAndSkip:
    """Default exhaustion policy: log the failure, count it, and let the record's offset be committed."""

    outcome = "failed"

    async def __call__(self, record: Record, completion: Completion) -> bool:
        log.error(
            "Giving up on %s[%d]@%d after %d attempt(s): %s: %s",
            record.topic, record.partition, record.offset, completion.attempts,
            completion.error_type, completion.error_message,
        )
        return True


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


FETCH_DEFAULTS: dict[str, str] = {
    "fetch.queue.backoff.ms": "10",
    "fetch.wait.max.ms": "100",
}
"""librdkafka defaults the library changes (``kafka`` overrides them). A partition that backpressure paused
drops its pre-fetched records and is fetched again after the resume; with librdkafka's defaults that next
fetch can wait up to 1 s (queue backoff) or 500 ms (a long-poll of other partitions) while handlers idle."""


def kafka_conf(config: ConsumerConfig) -> dict[str, Any]:
    """The librdkafka configuration: the library's settings and fetch defaults, then the user's passthrough."""
    conf: dict[str, Any] = {
        **FETCH_DEFAULTS,
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": config.auto_offset_reset,
        "group.protocol": config.group_protocol,
        "logger": librdkafka_logger(),
    }
    if config.group_protocol == "classic":
        conf["partition.assignment.strategy"] = "cooperative-sticky"
    if config.group_instance_id:
        conf["group.instance.id"] = config.group_instance_id
    conf.update(config.kafka)
    return conf


class Coordinator:
    """Runs one consumer's control plane; every method runs on the event loop."""

    def __init__(
        self,
        config: ConsumerConfig,
        engine: ExecutionEngine,
        on_exhausted: ExhaustionPolicy | None = None,
        observer: ConsumerObserver | None = None,
        on_stopped: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._on_stopped = on_stopped
        self._observer = observer or ConsumerObserver()
        self._engine = engine
        self._on_exhausted: ExhaustionPolicy = on_exhausted or LogAndSkip()
        outcome = getattr(self._on_exhausted, "outcome", None)
        if not isinstance(outcome, str) or not outcome:
            raise TypeError("on_exhausted needs an 'outcome' attribute: the non-empty label its records get in "
                            "pyrallel_records_completed_total (e.g. outcome = \"parked\")")
        self._work = WorkManager(config.ordering)
        self._partitions: dict[TopicPartitionKey, PartitionOffsets] = {}
        self._revoking: set[TopicPartitionKey] = set()
        self._in_flight: dict[int, QueuedRecord] = {}
        self._failure_tasks: dict[int, asyncio.Task[None]] = {}
        self._backing_off: set[int] = set()
        """Records whose exhaustion policy refused to let them go, waiting to be tried again."""
        self._progress = asyncio.Event()
        self._poller: BrokerPoller | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._guard_task: asyncio.Task[None] | None = None
        self._commit_delay: Callable[[], float] | None = None
        self._active = True
        self._released = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._failure: BaseException | None = None
        self._counts = dict.fromkeys(
            ("received", "skipped", "succeeded", "failed", "exhausted", "retries", "commits", "commit_failures"), 0
        )
        self._rebalances = {"assign": 0, "revoke": 0, "lost": 0}

    # ---- life cycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start fetching; with ``start_paused`` come up PAUSED without processing anything."""
        loop = asyncio.get_running_loop()
        if self._config.missing_topic == "fail":
            await loop.run_in_executor(None, self._check_topics_exist)
        await self._engine.start(self._on_complete)
        grace_s = self._config.rebalance_grace_ms / 1000
        poll_interval = self._config.kafka.get("max.poll.interval.ms", "300000")
        if poll_interval.isdigit() and self._config.rebalance_grace_ms + REVOKE_MARGIN_MS >= int(poll_interval):
            log.warning("rebalance_grace_ms (%d) + %d ms reaches max.poll.interval.ms (%s): a revocation that "
                        "waits that long for in-flight records gets this member evicted from the group",
                        self._config.rebalance_grace_ms, REVOKE_MARGIN_MS, poll_interval)
        paused = self._config.start_paused
        self._active = not paused
        self._released = paused and self._config.pause_mode == "release"
        poller = BrokerPoller(
            kafka_conf(self._config), self._config.topics, self, loop,
            revoke_timeout_s=grace_s + REVOKE_MARGIN_MS / 1000,
            room=self._fetch_room,
            start_paused=paused,
            subscribe=not self._released,
        )
        poller.commit_delay = self._commit_delay
        try:
            poller.start()
        except (KafkaException, TypeError, ValueError) as exc:  # e.g. after model_copy(update=...): not validated
            raise librdkafka_config_error("kafka", self._config.kafka, exc) from exc
        self._poller = poller  # only once its thread runs: stop() sends it commands
        self._commit_task = loop.create_task(self._commit_periodically(), name="pyrallel-commit")
        if self._config.max_blocking_ms:
            self._guard_task = loop.create_task(self._guard_stuck_records(), name="pyrallel-stuck-guard")

    def _check_topics_exist(self) -> None:
        """missing_topic='fail': ask the broker for the topics; runs on an executor thread during start().

        A broker that does not answer is reported as BrokerUnreachableError with librdkafka's reason
        (connection refused, name not resolved, authentication failed), not as a missing topic.
        """
        errors: list[KafkaError] = []
        conf = {k: v for k, v in kafka_conf(self._config).items() if k in ("bootstrap.servers", "logger")}
        conf.update({k: v for k, v in self._config.kafka.items() if k.startswith(("security.", "sasl.", "ssl."))})
        conf["error_cb"] = errors.append
        try:
            admin = AdminClient(conf)
        except (KafkaException, TypeError, ValueError) as exc:
            raise librdkafka_config_error("kafka", self._config.kafka, exc) from exc
        try:
            topics = admin.list_topics(timeout=TOPIC_CHECK_TIMEOUT_S).topics
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb: what librdkafka met while it tried
            reasons = [e.str() for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
            reason = reasons[-1] if reasons else exc.args[0].str()
            raise BrokerUnreachableError(
                f"no broker at {self._config.bootstrap_servers} answered within {TOPIC_CHECK_TIMEOUT_S:g} s: {reason}"
            ) from exc
        missing = [t for t in self._config.topics if t not in topics]
        if missing:
            raise MissingTopicError(
                f"topic(s) {', '.join(missing)} do not exist; create them, or set missing_topic='wait' to wait"
            )

    async def stop(self, drain: bool = True) -> None:
        """Stop fetching, finish (drain) or cancel in-flight records, commit what completed, leave the group."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        poller = self._poller
        try:
            if poller is not None and not poller.finished.done():
                poller.pause_all()
            self._work.drop_partitions(list(self._partitions))
            if drain:
                await self._wait_idle(self._only_held_left, self._config.drain_timeout_ms / 1000)
            self._cancel_in_flight(list(self._in_flight.values()))
            for task in (self._commit_task, self._guard_task):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if poller is not None:
                if not poller.finished.done():
                    await poller.commit_sync(self._commit_points())
                await poller.close()
            await self._engine.shutdown(drain=False, timeout_s=0)
        finally:
            self._stopped.set()
            log.info("Consumer stopped (%s)", "drained" if drain else "not drained")
            if self._on_stopped is not None:
                self._on_stopped()

    async def suspend(self, release: bool) -> None:
        """Stop processing: no new dispatch, fetching paused, in-flight records finished, offsets committed.

        release=True then leaves the group so other members take the partitions; release=False keeps
        them assigned (their records wait here). Queued records are kept: their offsets were fetched
        already, and dropping them without handing the partitions over would leave a gap.
        """
        poller = self._poller
        if poller is None or self._stopping:
            return
        self._active = False
        poller.pause_all()
        await self._wait_idle(self._only_held_left, self._config.drain_timeout_ms / 1000)
        self._cancel_in_flight(list(self._in_flight.values()), requeue=True)
        await poller.commit_sync(self._commit_points())
        if release:
            await poller.set_subscribed(False)
            self._released = True
            await self._wait_idle(lambda: not self._partitions, self._config.rebalance_grace_ms / 1000 + 30)

    async def activate(self) -> None:
        """Process again: rejoin the group if it was left, resume fetching, dispatch what is queued."""
        poller = self._poller
        if poller is None or self._stopping:
            return
        poller.resume_all()
        if self._released:
            await poller.set_subscribed(True)
            self._released = False
        self._active = True
        self._dispatch()

    def stall(self, seconds: float) -> None:
        """Fault injection: block the poll loop for ``seconds`` (see ``BrokerPoller.stall``)."""
        if self._poller is not None:
            self._poller.stall(seconds)

    def set_commit_delay(self, delay_s: Callable[[], float] | None) -> None:
        """Fault injection: hold back every commit by ``delay_s()`` seconds (see ``BrokerPoller.commit_delay``)."""
        self._commit_delay = delay_s
        if self._poller is not None:
            self._poller.commit_delay = delay_s

    @property
    def assigned(self) -> list[TopicPartitionKey]:
        return sorted(self._partitions)

    @property
    def broker_answered(self) -> bool:
        """Whether a broker has answered this consumer's client since start(); Lifecycle.ready (/readyz) needs it."""
        return self._poller is not None and self._poller.broker_answered

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    @property
    def stopping(self) -> bool:
        return self._stopping

    # ---- poller sink -----------------------------------------------------------------------------------

    def on_records(self, batch: list[tuple[Record, int]]) -> None:
        if self._stopping:
            return
        partitions = self._partitions
        touched: set[TopicPartitionKey] = set()
        accepted = 0
        for record, epoch in batch:
            tp = (record.topic, record.partition)
            state = partitions.get(tp)
            if state is None or state.epoch != epoch or tp in self._revoking:
                continue
            self._counts["received"] += 1
            accepted += 1
            if state.receive(record.offset):
                self._work.add(record, epoch)
                touched.add(tp)
            else:
                self._counts["skipped"] += 1
        if accepted:
            self._observer.records_received(accepted)
        self._dispatch()
        self._apply_backpressure(touched)

    def on_assigned(self, assignments: list[Assignment]) -> None:
        for a in assignments:
            tp = (a.topic, a.partition)
            start = a.committed_offset if a.committed_offset >= 0 else None
            window = self._config.max_pending_offsets
            restored = restore_map(tp, a.committed_offset, a.committed_metadata, a.partition_end, window)
            if restored is not None:
                log.info("Restored offset map of %s[%d]: %d record(s) above offset %d are done already",
                         a.topic, a.partition, restored.completed_count, a.committed_offset)
            self._partitions[tp] = PartitionOffsets(tp, a.epoch, start, restored, max_window=window,
                                                    end_at_assignment=a.partition_end)
            self._revoking.discard(tp)  # a revocation still settling on the loop belongs to the older assignment
            self._rebalances["assign"] += 1
        self._observer.rebalanced("assign", len(assignments))

    async def on_revoked(self, partitions: list[TopicPartitionKey]) -> list[CommitPoint]:
        """Stop dispatching these partitions, let their in-flight records finish within the grace, commit."""
        self._rebalances["revoke"] += len(partitions)
        self._observer.rebalanced("revoke", len(partitions))
        states = {tp: self._partitions[tp] for tp in partitions if tp in self._partitions}
        self._revoking.update(states)
        self._work.drop_partitions(states)
        await self._wait_idle(
            lambda: all(self._work.in_flight_of(tp) == 0 for tp in states),
            self._config.rebalance_grace_ms / 1000,
        )
        # The poller waits only so long for this; a loop blocked beyond that may find a partition lost or
        # assigned again by now, and leaves the newer assignment alone.
        targets = {tp for tp, state in states.items() if self._partitions.get(tp) is state}
        leftovers = [q for q in self._in_flight.values()
                     if (tp := (q.record.topic, q.record.partition)) in targets and q.epoch == states[tp].epoch]
        if leftovers:
            log.warning("%d record(s) of revoked partitions did not finish within rebalance_grace_ms; "
                        "cancelled, they will be handled again by the next owner", len(leftovers))
            self._cancel_in_flight(leftovers)
        points = []
        for tp in targets:
            point = self._partitions.pop(tp).commit_point()
            if point is not None:
                points.append(point)
        self._revoking.difference_update(targets)
        self._work.release(targets)
        self._apply_backpressure(list(self._work.held))  # fewer partitions: each one's share grew
        self._dispatch()
        self._progress.set()  # wakes suspend(), which waits for the partitions to be gone
        return points

    def on_lost(self, partitions: list[TopicPartitionKey]) -> None:
        self._rebalances["lost"] += len(partitions)
        self._observer.rebalanced("lost", len(partitions))
        targets = set(partitions)
        self._work.drop_partitions(targets)
        self._cancel_in_flight([q for q in self._in_flight.values()
                                if (q.record.topic, q.record.partition) in targets])
        for tp in targets:
            self._partitions.pop(tp, None)
        self._work.release(targets)
        self._apply_backpressure(list(self._work.held))
        self._dispatch()
        self._progress.set()

    def on_committed(self, results: list[CommitResult]) -> None:
        for result in results:
            point = result.point
            self._observer.commit_finished(result.latency_s, result.error is None)
            if result.error is not None:
                self._counts["commit_failures"] += 1
                self._observer.error("commit")
                log.warning("Commit of %s[%d]@%d failed: %s", point.topic, point.partition, point.offset,
                            result.error)
                continue
            self._counts["commits"] += 1
            state = self._partitions.get((point.topic, point.partition))
            if state is not None and state.epoch == point.epoch:
                state.mark_committed(point)

    def on_poller_failed(self, error: BaseException) -> None:
        self._observer.error("poller")
        if self._failure is None:
            self._failure = error
        if not self._stopping:
            asyncio.get_running_loop().create_task(self.stop(drain=False), name="pyrallel-stop-on-failure")

    # ---- dispatch and completion -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self._stopping or not self._active:
            return
        work = self._work
        limit = self._config.max_in_flight
        while work.in_flight < limit:
            item = work.next_ready()
            if item is None:
                return
            self._in_flight[item.item_id] = item
            self._engine.submit(item)

    def _on_complete(self, completion: Completion) -> None:
        item = self._in_flight.get(completion.item_id)
        if item is None:
            return  # cancelled (revoked or stopping): never counted, never committed
        if completion.attempts > 1:
            self._counts["retries"] += completion.attempts - 1
        state = self._partitions.get((item.record.topic, item.record.partition))
        if completion.ok or state is None or state.epoch != item.epoch:
            outcome = "failed" if not completion.ok else "retried" if completion.attempts > 1 else "success"
            self._observer.record_finished(outcome, completion.duration_s, completion.attempts)
            self._finish(item, completion.ok)
            return
        self._counts["exhausted"] += 1
        self._observer.error("handler")
        self._failure_tasks[item.item_id] = asyncio.get_running_loop().create_task(
            self._resolve_failure(item, completion), name=f"pyrallel-exhausted-{item.item_id}"
        )

    async def _resolve_failure(self, item: QueuedRecord, completion: Completion) -> None:
        """Apply the exhaustion policy until it lets the record go; its key stays blocked meanwhile."""
        failures = 0
        try:
            while not await self._on_exhausted(item.record, completion):
                failures += 1
                delay = min(self._config.max_retry_backoff_ms, self._config.retry_backoff_ms * 2**failures) / 1000
                self._backing_off.add(item.item_id)
                try:
                    await asyncio.sleep(max(delay, 0.05))
                finally:
                    self._backing_off.discard(item.item_id)
                state = self._partitions.get((item.record.topic, item.record.partition))
                if state is None or state.epoch != item.epoch or self._stopping:
                    return  # left incomplete: the next owner (or the next run) handles it again
        finally:
            self._failure_tasks.pop(item.item_id, None)
        if item.item_id in self._in_flight:
            self._observer.record_finished(self._on_exhausted.outcome, completion.duration_s, completion.attempts)
            self._finish(item, False)

    def _finish(self, item: QueuedRecord, ok: bool) -> None:
        del self._in_flight[item.item_id]
        self._work.finish(item)
        self._counts["succeeded" if ok else "failed"] += 1
        state = self._partitions.get((item.record.topic, item.record.partition))
        if state is not None and state.epoch == item.epoch:
            state.complete(item.record.offset)
        self._progress.set()
        self._dispatch()
        tp = (item.record.topic, item.record.partition)
        if tp in self._work.held:
            self._apply_backpressure((tp,))

    def _cancel_in_flight(self, items: Iterable[QueuedRecord], requeue: bool = False) -> None:
        """Stop in-flight records without completing them: their offsets stay uncommitted.

        requeue=True puts them back at the head of their key's queue, to run again first when processing
        resumes (a suspension that keeps the partitions); otherwise they are forgotten (their partition is
        gone, or the consumer stops).
        """
        doomed = list(items)
        self._engine.cancel(q.item_id for q in doomed)
        for item in doomed:
            task = self._failure_tasks.pop(item.item_id, None)
            if task is not None:
                task.cancel()
            if self._in_flight.pop(item.item_id, None) is not None:
                if requeue:
                    self._work.requeue(item)
                else:
                    self._work.finish(item)
        self._progress.set()

    def _only_held_left(self) -> bool:
        """Nothing in flight but records the exhaustion policy keeps back (waiting to try again), which waiting
        would not finish; a policy call under way (a dead-letter write awaiting its ack) is waited for."""
        return len(self._in_flight) == len(self._backing_off)

    async def _wait_idle(self, idle: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not idle():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), timeout=min(remaining, 0.5))

    def _fetch_room(self, uningested: int, uningested_bytes: int) -> tuple[float, int]:
        """For the poller thread's fetch gate: how full the queue is (1.0 = full) and how many bytes are left.

        Counted are the records of partitions not held plus what the poller fetched and the loop has not taken
        in yet, against queue_max_messages and queue_max_bytes, whichever is fuller.
        """
        work, config = self._work, self._config
        size = work.queued_bytes - work.held_queued_bytes + uningested_bytes
        records = (work.queued - work.held_queued + uningested) / config.queue_max_messages
        return max(records, size / config.queue_max_bytes), config.queue_max_bytes - size

    def _apply_backpressure(self, touched: Iterable[TopicPartitionKey]) -> None:
        """Pause a partition holding 1.5x its share of queue_max_messages or queue_max_bytes; resume it when it is
        down to its share of both.

        A fetch hands out one partition's records in long runs (a whole record batch), so a queue filled by
        one or two partitions offers only their keys and the handlers starve. Holding such a partition takes
        it out of the poller's gate, which bounds the other partitions' queued records, so their records
        come in and the handlers see every partition's keys. Balanced partitions reach the gate before
        1.5x their share and are not paused, so librdkafka rarely drops pre-fetched data on a pause. Resuming
        at the full share leaves the fetch after the resume time to arrive before the partition's keys run dry
        (at half a share, a 100-key run lost 250-400 ms per partition now and then).

        A partition whose lowest incomplete record blocks while later ones complete is held too once it tracks
        more than max_pending_offsets offsets, until that record is done: otherwise its bookkeeping, and the
        walk over it at every commit, would grow for as long as the record blocks.
        """
        poller = self._poller
        if poller is None or self._stopping:
            return
        count = len(self._partitions)
        share = max(1, self._config.queue_max_messages // max(1, count))
        byte_share = max(1, self._config.queue_max_bytes // max(1, count))
        window = self._config.max_pending_offsets
        work = self._work
        to_hold, to_release = [], []
        for tp in touched:
            state = self._partitions.get(tp)
            wide = state is not None and state.tracked_offsets > window
            queued, size = work.queued_of(tp), work.queued_bytes_of(tp)
            if tp not in work.held:
                if wide or (count >= 2 and (queued >= share + share // 2 or size >= byte_share + byte_share // 2)):
                    to_hold.append(tp)
            elif not wide and queued <= share and size <= byte_share:
                to_release.append(tp)
        if to_hold:
            for tp in to_hold:
                work.hold(tp)
            poller.hold(to_hold, True)
            log.info("Backpressure: pausing fetch of %s (1.5x its share of the queue, or max_pending_offsets "
                     "tracked behind a blocking record)", partition_names(to_hold))
        if to_release:
            work.release(to_release)
            poller.hold(to_release, False)
            log.info("Backpressure released: resuming fetch of %s", partition_names(to_release))

    # ---- commits and metrics ---------------------------------------------------------------------------

    def _commit_points(self) -> list[CommitPoint]:
        return [p for s in self._partitions.values() if (p := s.commit_point()) is not None]

    async def _guard_stuck_records(self) -> None:
        """Fail an in-flight record that has blocked its partition's commit longer than max_blocking_ms."""
        limit_s = self._config.max_blocking_ms / 1000
        while True:
            await asyncio.sleep(min(1.0, max(limit_s / 4, 0.05)))
            for tp, state in list(self._partitions.items()):
                blocking = state.blocking()
                if blocking is None or blocking[1] <= limit_s:
                    continue
                offset, age = blocking
                item = next((q for q in self._in_flight.values()
                             if q.record.offset == offset and (q.record.topic, q.record.partition) == tp
                             and q.item_id not in self._failure_tasks), None)
                if item is None:
                    continue  # not running (waiting for capacity) or already in the exhaustion policy
                log.warning("%s[%d]@%d has blocked the commit for %.1fs (max_blocking_ms=%d); failing it",
                            tp[0], tp[1], offset, age, self._config.max_blocking_ms)
                self._engine.cancel([item.item_id])
                self._on_complete(Completion(
                    item.item_id, False, 1, age, "StuckRecordError",
                    f"blocked the commit of {tp[0]}[{tp[1]}] for {age:.1f}s (max_blocking_ms="
                    f"{self._config.max_blocking_ms})",
                ))

    async def _commit_periodically(self) -> None:
        interval = self._config.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if self._poller is not None and not self._stopping:
                self._poller.commit(self._commit_points())

    def metrics(self) -> MetricsSnapshot:
        watermarks = self._poller.high_watermarks if self._poller is not None else {}
        rows = []
        for (topic, partition), state in sorted(self._partitions.items()):
            committed = state.commit_offset()
            high = watermarks.get((topic, partition))
            lag = None
            if high is not None and committed is not None:
                # The watermark is refreshed about once a second; what was received is newer.
                high = max(high, state.last_received + 1)
                lag = max(0, high - committed - state.completed_above_count)
            blocking = state.blocking()
            rows.append(PartitionMetrics(
                topic, partition, state.last_committed_offset, high, lag, state.incomplete_count,
                blocking[0] if blocking else None, blocking[1] if blocking else 0.0, state.metadata_bytes,
                self._work.queued_of((topic, partition)), self._work.in_flight_of((topic, partition)),
                state.gap_offsets,
            ))
        c = self._counts
        return MetricsSnapshot(
            tuple(rows), len(self._in_flight), self._work.queued,
            self._poller.backpressure_paused if self._poller is not None else 0, c["received"], c["skipped"],
            c["succeeded"], c["failed"], c["exhausted"], c["retries"], c["commits"], c["commit_failures"],
            dict(self._rebalances),
        )
