"""The control plane's wiring point: fetched records in, ordered dispatch out, safe commits.

PyrallelConsumer creates one Coordinator and calls it on the event loop; the BrokerPoller reports to it as its
sink (posted to the loop); the engine reports completions to it on the loop. Every method runs on the event
loop. It owns little itself (the life cycle, dispatch, completion and the counters) and wires the owners:
Assignments (is an assignment current), WorkManager (queued and in-flight records; with a batch handler a
BatchWorkManager, and a Batcher that decides when batches go), Backpressure (held
partitions and what the fetch gate sees), CommitSchedule, Exhaustion, StuckGuard, and the Kafka adapter
(KafkaClients, BrokerPoller). It talks to handlers only through the ExecutionEngine contract.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pyrallel_consumer.config import REVOKE_MARGIN_MS, ConsumerConfig
from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.control.backpressure import Backpressure
from pyrallel_consumer.control.batch_queues import BatchWorkManager
from pyrallel_consumer.control.batcher import Batcher
from pyrallel_consumer.control.commit_schedule import CommitSchedule
from pyrallel_consumer.control.exhaustion import Exhaustion, ExhaustionPolicy
from pyrallel_consumer.control.metrics_view import Counts, metrics_snapshot
from pyrallel_consumer.control.observer import ConsumerObserver
from pyrallel_consumer.control.offset_tracker import CommitPoint, PartitionOffsets, TopicPartitionKey
from pyrallel_consumer.control.positions import Position
from pyrallel_consumer.control.progress import Progress
from pyrallel_consumer.control.stuck_guard import StuckGuard
from pyrallel_consumer.control.work_manager import QueuedRecord, WorkManager
from pyrallel_consumer.deserialization import Deserialized, failed_field
from pyrallel_consumer.execution.engine import Completion, ExecutionEngine
from pyrallel_consumer.kafka.clients import KafkaClients
from pyrallel_consumer.kafka.deserializing import RecordDeserializer
from pyrallel_consumer.kafka.events import Assignment, CommitResult
from pyrallel_consumer.kafka.fetch_gate import FetchGate
from pyrallel_consumer.kafka.poller import BrokerPoller
from pyrallel_consumer.kafka.settings import warn_if_revocation_outlasts_poll_interval
from pyrallel_consumer.kafka.topic_check import check_topics_exist
from pyrallel_consumer.kafka.transactions import Transactions
from pyrallel_consumer.observability.log_events import CONSUMER_STOPPED, event_extra
from pyrallel_consumer.observability.snapshot import MetricsSnapshot
from pyrallel_consumer.record import Record

if TYPE_CHECKING:
    from pyrallel_consumer.observability.tracing import Tracing

log = logging.getLogger(__name__)


class Coordinator:
    """Runs one consumer's control plane; every method runs on the event loop."""

    def __init__(
        self,
        config: ConsumerConfig,
        engine: ExecutionEngine,
        on_exhausted: ExhaustionPolicy | None = None,
        observer: ConsumerObserver | None = None,
        on_stopped: Callable[[], None] | None = None,
        kafka_clients: KafkaClients | None = None,
        batch: bool = False,
        transactions: Transactions | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._config = config
        self._tracing = tracing
        """With ``tracing_enabled``: a span per record from dispatch until it leaves the in-flight set."""
        self._on_stopped = on_stopped
        self._observer = observer or ConsumerObserver()
        self._engine = engine
        self._clients = kafka_clients or KafkaClients()
        self._exhaustion = Exhaustion(on_exhausted, config, self._let_go, tracing)
        self._work = WorkManager(config.ordering)
        self._batcher: Batcher | None = None
        """With a batch handler (``batch=True``): forms the batches ``_dispatch`` submits."""
        if batch:
            self._work = batch_work = BatchWorkManager(config.ordering)
            self._batcher = Batcher(config, batch_work, engine, self._observer, self._dispatch, tracing)
        self._assignments = Assignments(config.max_pending_offsets)
        self._gate = FetchGate(config.queue_max_messages, config.queue_max_bytes)
        self._backpressure = Backpressure(config, self._assignments, self._work, self._gate)
        self._commits = CommitSchedule(config, self._assignments, self._observer)
        self._guard = StuckGuard(config, self._assignments, self._work, self._exhaustion, self._fail)
        self._progress = Progress()
        self._poller: BrokerPoller | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._guard_task: asyncio.Task[None] | None = None
        self._active = True
        self._released = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._failure: BaseException | None = None
        self._counts = Counts()
        self._lossy_warned = False
        self._transactions: Transactions | None = None
        """Exactly-once only: the transactional producer; commits go through it instead of the consumer."""
        if config.processing_guarantee == "exactly_once":
            self._transactions = transactions or Transactions(config, self._clients)

    # ---- life cycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start fetching; with ``start_paused`` come up PAUSED without processing anything."""
        loop = asyncio.get_running_loop()
        if self._config.missing_topic == "fail":
            await loop.run_in_executor(None, check_topics_exist, self._config, self._clients)
        await self._engine.start(self._on_complete)
        if self._transactions is not None:  # ready before any record can complete with outputs
            await self._transactions.start(self, self._group_metadata)
        warn_if_revocation_outlasts_poll_interval(self._config)
        paused = self._config.start_paused
        self._active = not paused
        self._released = paused and self._config.pause_mode == "release"
        config = self._config
        deserializer = None if self._engine.deserializes_records else RecordDeserializer.of(
            config.key_deserializer, config.value_deserializer)
        poller = BrokerPoller(config, self._clients, self, loop, self._gate,
                              revoke_timeout_s=(config.rebalance_grace_ms + REVOKE_MARGIN_MS) / 1000,
                              start_paused=paused, subscribe=not self._released, deserializer=deserializer)
        poller.start()
        self._poller = poller  # only once its thread runs: stop() sends it commands
        if self._transactions is not None:
            commits = self._commits.run_transactions(self._periodic_transaction)
        else:
            commits = self._commits.run(poller)
        self._commit_task = loop.create_task(commits, name="pyrallel-commit")
        if self._config.max_blocking_ms:
            self._guard_task = loop.create_task(self._guard.run(), name="pyrallel-stuck-guard")

    async def stop(self, drain: bool = True) -> None:
        """Stop fetching, finish (drain) or cancel in-flight records, commit what completed, leave the group."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        if self._batcher is not None:
            self._batcher.close()
        self._exhaustion.stop()
        self._backpressure.stop()
        poller = self._poller
        try:
            if self._commit_task is not None:
                self._commit_task.cancel()  # the stop commits once, at the end
            if poller is not None and not poller.finished.done():
                poller.pause_all()
            self._work.drop_partitions([o.topic_partition for o in self._assignments.trackers()])
            self._backpressure.publish()
            if drain:
                await self._progress.until(self._only_held_left, self._config.drain_timeout_ms / 1000)
            self._cancel_in_flight(self._work.in_flight_items())
            for task in (self._commit_task, self._guard_task):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if self._transactions is not None:
                if poller is not None and not poller.finished.done():
                    await self._end_transaction()
                await self._transactions.close()
            if poller is not None:
                if not poller.finished.done() and self._transactions is None:
                    await poller.commit_sync(self._commits.points())
                await poller.close()
            await self._engine.shutdown(drain=False, timeout_s=0)
        finally:
            self._stopped.set()
            log.info("Consumer stopped (%s)", "drained" if drain else "not drained",
                     extra=event_extra(CONSUMER_STOPPED, group_id=self._config.group_id, drained=drain,
                                       color=self._config.color, instance=self._config.instance_id))
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
        await self._progress.until(self._only_held_left, self._config.drain_timeout_ms / 1000)
        self._cancel_in_flight(self._work.in_flight_items(), requeue=True)
        if self._transactions is not None:
            await self._end_transaction()
        else:
            await poller.commit_sync(self._commits.points())
        if release:
            await poller.set_subscribed(False)
            self._released = True
            await self._progress.until(lambda: not self._assignments, self._config.rebalance_grace_ms / 1000 + 30)

    async def take_positions(self, positions: Sequence[Position]) -> None:
        """While suspended: commit handed-over ``positions`` and restart the held partitions from them (see
        ``BrokerPoller.take_positions``); the Lifecycle checks that this consumer is PAUSED and holds them."""
        poller = self._poller
        if poller is None or self._stopping:
            raise RuntimeError("the consumer is not running")
        if self._transactions is not None:
            raise RuntimeError("handed-over positions are not supported with processing_guarantee='exactly_once': "
                               "they would be committed outside the transactions")
        await poller.take_positions(positions)

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

    @property
    def assigned(self) -> list[TopicPartitionKey]:
        return [offsets.topic_partition for offsets in self._assignments.trackers()]

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

    def on_records(self, batch: list[tuple[Record, int]], deserialized: list[Deserialized] | None = None) -> None:
        if self._stopping:
            return
        touched: set[TopicPartitionKey] = set()
        accepted = skipped = 0
        for index, (record, epoch) in enumerate(batch):
            tp = (record.topic, record.partition)
            offsets = self._assignments.accepting(tp, epoch)
            if offsets is None:
                continue
            accepted += 1
            if offsets.receive(record.offset):
                self._work.add(record, offsets, deserialized[index] if deserialized is not None else None)
                touched.add(tp)
            else:
                skipped += 1
        self._counts.received += accepted
        self._counts.skipped += skipped
        if skipped:
            self._commits.progressed()  # done before (the restored offset map): the commit point moves over them
        if accepted:
            self._observer.records_received(accepted)
        self._dispatch()
        self._backpressure.update(touched)

    def on_assigned(self, assignments: list[Assignment]) -> None:
        for a in assignments:
            self._assignments.assign(a)
        self._counts.rebalances["assign"] += len(assignments)
        self._observer.rebalanced("assign", len(assignments))

    async def on_revoked(self, partitions: list[TopicPartitionKey]) -> list[CommitPoint]:
        """Stop dispatching these partitions, let their in-flight records finish within the grace, commit."""
        self._counts.rebalances["revoke"] += len(partitions)
        self._observer.rebalanced("revoke", len(partitions))
        revoking = self._assignments.begin_revoke(partitions)
        tps = [offsets.topic_partition for offsets in revoking]
        self._work.drop_partitions(tps)
        self._backpressure.publish()
        await self._progress.until(lambda: all(self._work.in_flight_of(tp) == 0 for tp in tps),
                                   self._config.rebalance_grace_ms / 1000)
        # The poller waits only so long for this; a loop blocked beyond that may find a partition lost or
        # assigned again by now, and leaves the newer assignment alone.
        ending = {offsets for offsets in revoking if offsets.current}
        leftovers = [q for q in self._work.in_flight_items() if q.offsets in ending]
        if leftovers:
            log.warning("%d record(s) of revoked partitions did not finish within rebalance_grace_ms; "
                        "cancelled, they will be handled again by the next owner", len(leftovers))
            self._cancel_in_flight(leftovers)
        if self._transactions is not None:
            # The transaction holding the revoked partitions' outputs ends (committed, or aborted: then every
            # partition restarts from the last committed transaction) before the poller releases them.
            if ending and self._transactions.usable:
                await self._end_transaction()
            self._end_assignments([offsets for offsets in ending if offsets.current])
            return []
        points = [point for offsets in ending if (point := offsets.commit_point()) is not None]
        self._end_assignments(ending)
        return points

    def on_lost(self, partitions: list[TopicPartitionKey]) -> None:
        self._counts.rebalances["lost"] += len(partitions)
        self._observer.rebalanced("lost", len(partitions))
        self._forget_partitions(partitions)
        if self._transactions is not None and self._transactions.usable:
            # The open transaction may hold outputs of the lost partitions' records, whose offsets can no longer be
            # committed: abort it (every other partition restarts from the last committed transaction).
            self._transactions.abort(f"partitions lost: {', '.join(f'{t}[{p}]' for t, p in partitions)}")

    def on_repositioned(self, assignments: list[Assignment]) -> None:
        """Held partitions restarted from handed-over positions: what was queued for them is dropped (it was
        fetched from the old position), and each gets a new tracker. Not a rebalance: nothing is counted."""
        self._forget_partitions([(a.topic, a.partition) for a in assignments])
        for a in assignments:
            self._assignments.assign(a)

    def _forget_partitions(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Drop everything of these partitions' current assignments without committing."""
        targets = set(partitions)
        self._work.drop_partitions(targets)
        self._cancel_in_flight([q for q in self._work.in_flight_items() if q.offsets.topic_partition in targets])
        self._end_assignments([o for tp in targets if (o := self._assignments.of(tp)) is not None])

    def _end_assignments(self, ending: Iterable[PartitionOffsets]) -> None:
        """Revoked or lost: forget the assignments, re-decide the held partitions (each one's share grew)."""
        ending = list(ending)
        self._assignments.end(ending)
        self._backpressure.forget(o.topic_partition for o in ending)
        self._backpressure.recheck()
        self._dispatch()
        self._progress.made()  # wakes suspend(), which waits for the partitions to be gone

    def on_committed(self, results: list[CommitResult]) -> None:
        self._commits.on_committed(results)

    def on_poller_failed(self, error: BaseException) -> None:
        self._observer.error("poller")
        if self._failure is None:
            self._failure = error
        if not self._stopping:
            asyncio.get_running_loop().create_task(self.stop(drain=False), name="pyrallel-stop-on-failure")

    # ---- exactly-once ---------------------------------------------------------------------------------------

    def _group_metadata(self) -> object:
        """The consumer's group metadata, for send_offsets_to_transaction; called on the transaction thread."""
        poller = self._poller
        if poller is None:
            raise RuntimeError("the consumer is not running")
        return poller.group_metadata()

    async def _periodic_transaction(self) -> None:
        """The CommitSchedule's commit under exactly-once: one transaction with every partition's commit point.

        A point whose offset map cannot carry every record done above it is not committed (those records would run
        again with their outputs visible): the transaction stays open until the map fits again, or the broker
        aborts it after transaction_timeout_ms and its records run again.
        """
        transactions = self._transactions
        if transactions is None or not transactions.usable:
            return
        points = self._commits.points()
        lossy = [o.topic_partition for o in self._assignments.trackers() if o.map_lossy]
        if lossy:
            if self._lossy_warned:
                return
            self._lossy_warned = True  # once until a transaction commits again: the size bound retries often
            log.warning("Not committing the transaction yet: the offset map of %s cannot hold every record done "
                        "above its committed offset (max_pending_offsets, or the 4,000-character map); it commits "
                        "once the blocking records finish, or is aborted after transaction_timeout_ms",
                        ", ".join(f"{t}[{p}]" for t, p in lossy))
            return
        self._lossy_warned = False
        outcome = await transactions.commit(points)
        self._commits.on_committed(outcome.results)

    async def _end_transaction(self) -> None:
        """Commit the open transaction now (revoke, pause, stop); abort it when a point cannot be exact."""
        transactions = self._transactions
        if transactions is None or not transactions.usable:
            return
        points = self._commits.points()
        if any(o.map_lossy for o in self._assignments.trackers()):
            await transactions.abort("an offset map cannot hold every record done above its committed offset")
            return
        outcome = await transactions.commit(points)
        self._commits.on_committed(outcome.results)

    def on_transaction_aborted(self, reason: str) -> None:
        """The transaction thread aborted a transaction: forget what every partition did since the last committed
        transaction and restart them from its position (the poller reads it back from the group and seeks).

        Called on the loop before the aborted commit's future resolves. The trackers end at once, so no record
        completed from now on under them produces outputs or moves a commit point; records fetched before the
        seek carry the old epoch and are dropped.
        """
        trackers = self._assignments.trackers()
        fallback = {o.topic_partition: o.start for o in trackers if o.start is not None}
        tps = [o.topic_partition for o in trackers]
        log.warning("Transaction aborted (%s): restarting %d partition(s) from the last committed transaction",
                    reason, len(tps))
        self._forget_partitions(tps)
        poller = self._poller
        if poller is not None and tps and not self._stopping:
            poller.rewind(tps, fallback)

    def on_transactions_failed(self, error: BaseException) -> None:
        """The exactly-once producer failed for good (fenced): stop without committing, like a fenced member."""
        self._observer.error("transactions")
        if self._failure is None:
            self._failure = error
        if not self._stopping:
            asyncio.get_running_loop().create_task(self.stop(drain=False), name="pyrallel-stop-on-failure")

    # ---- dispatch and completion -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand ready records to the engine up to max_in_flight; publish the queue's new level to the fetch gate."""
        transactions = self._transactions
        if transactions is not None and transactions.backlogged(self._dispatch):
            self._backpressure.publish()
            return  # outputs wait for the producer thread: dispatched again once it caught up
        if not self._stopping and self._active:
            if self._batcher is not None:
                self._batcher.dispatch()
            else:
                work, limit, tracing = self._work, self._config.max_in_flight, self._tracing
                while work.in_flight < limit and (item := work.next_ready()) is not None:
                    if tracing is not None:
                        tracing.record_started(item)
                    self._engine.submit(item)
        self._backpressure.publish()

    def _on_complete(self, completion: Completion) -> None:
        item = self._work.running(completion.item_id)
        if item is None:
            return  # cancelled (revoked or stopping): never counted, never committed
        if completion.outputs and completion.ok and item.offsets.current:
            completion = self._produce_outputs(item, completion)
            if completion.ok and self._work.running(completion.item_id) is None:
                return  # the producer is gone: left incomplete, handled again by the next owner
        self._observer.record_completed(item.record, completion)
        if self._tracing is not None and not completion.ok:
            self._tracing.record_failed(item.item_id, completion.error_type, completion.error_message)
        if completion.attempts > 1:
            self._counts.retries += completion.attempts - 1
        if completion.ok or not item.offsets.current:
            outcome = "failed" if not completion.ok else "retried" if completion.attempts > 1 else "success"
            self._observer.record_finished(outcome, completion.duration_s, completion.attempts)
            self._finish(item, completion.ok)
            return
        self._counts.exhausted += 1
        self._observer.error("deserialization" if failed_field(completion.error_type) else "handler")
        self._exhaustion.handle(item, completion)

    def _produce_outputs(self, item: QueuedRecord, completion: Completion) -> Completion:
        """Queue a completed record's outputs into the open transaction (before the record is marked complete);
        returns the completion to go on with: as it was once queued, a failure under at_least_once, or as it was
        with the record already taken out of flight when the producer has failed (left unfinished)."""
        transactions = self._transactions
        if transactions is None:
            return dataclasses.replace(
                completion, ok=False, outputs=(), error_type="OutputsNeedExactlyOnceError",
                error_message="the handler returned outputs, which the library produces only with "
                              "processing_guarantee='exactly_once'")
        if not transactions.usable:
            self._work.finish(item)
            if self._tracing is not None:
                self._tracing.record_cancelled(item.item_id, item.record)
            self._progress.made()
            return completion
        transactions.produce(completion.outputs)
        if transactions.produced >= self._config.transaction_max_records:
            self._commits.commit_early()
        return completion

    def _let_go(self, item: QueuedRecord, completion: Completion) -> None:
        """The exhaustion policy let the record go: its offset may be committed."""
        if self._work.running(item.item_id) is item:
            self._observer.record_finished(self._exhaustion.outcome, completion.duration_s, completion.attempts)
            self._finish(item, False)

    def _fail(self, item: QueuedRecord, completion: Completion) -> None:
        """The stuck-record guard gave up on a running record: stop it and complete it as failed."""
        self._engine.cancel([item.item_id])
        self._on_complete(completion)

    def _finish(self, item: QueuedRecord, ok: bool) -> None:
        self._work.finish(item)
        if self._tracing is not None:
            self._tracing.record_finished(item.item_id)
        if ok:
            self._counts.succeeded += 1
        else:
            self._counts.failed += 1
        if item.offsets.current:
            item.offsets.complete(item.record.offset)
            self._commits.progressed()
        self._progress.made()
        self._dispatch()
        self._backpressure.recheck(item.offsets.topic_partition)

    def _cancel_in_flight(self, items: Iterable[QueuedRecord], requeue: bool = False) -> None:
        """Stop in-flight records without completing them: their offsets stay uncommitted.

        requeue=True puts them back at the head of their key's queue, to run again first when processing
        resumes (a suspension that keeps the partitions); otherwise they are forgotten (their partition is
        gone, or the consumer stops).
        """
        doomed = list(items)
        if requeue:
            doomed.sort(key=lambda q: q.item_id, reverse=True)  # back at the head newest first: order kept
        self._engine.cancel(q.item_id for q in doomed)
        for item in doomed:
            self._exhaustion.cancel(item.item_id)
            if self._work.running(item.item_id) is item:
                if self._tracing is not None:
                    self._tracing.record_cancelled(item.item_id, item.record)
                if requeue:
                    self._work.requeue(item)
                else:
                    self._work.finish(item)
        self._backpressure.publish()
        self._progress.made()

    def _only_held_left(self) -> bool:
        """Nothing in flight but records the exhaustion policy keeps back (waiting to try again), which waiting
        would not finish; a policy call under way (a dead-letter write awaiting its ack) is waited for."""
        return self._work.in_flight == self._exhaustion.backing_off

    def lifecycle_status(self) -> dict[str, Any]:
        """The records and partitions part of ``GET /lifecycle/status`` (``Lifecycle.status``)."""
        snapshot = self.metrics()
        return {
            "assigned_partitions": [f"{t}[{p}]" for t, p in self.assigned],
            "in_flight": snapshot.in_flight,
            "queued": snapshot.queued,
            "records_succeeded": snapshot.records_succeeded,
            "handler_failures": snapshot.records_exhausted,
            "rebalances": snapshot.rebalances,
            "committed_offsets": {f"{p.topic}[{p.partition}]": p.committed_offset for p in snapshot.partitions},
        }

    def metrics(self) -> MetricsSnapshot:
        return metrics_snapshot(self._counts, self._assignments, self._work, self._commits, self._poller)
