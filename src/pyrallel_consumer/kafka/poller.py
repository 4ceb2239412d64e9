"""BrokerPoller: the one thread that owns the confluent-kafka Consumer.

librdkafka calls the rebalance callbacks from inside ``consume()``, so fetching, pausing, committing and
the callbacks all run on this thread, in one order. Everything else (bookkeeping, dispatch) runs on the
asyncio loop; the two sides talk through ``call_soon_threadsafe`` (thread -> loop, FIFO, so an
assignment always reaches the loop before its records), a command queue (loop -> thread) and the FetchGate
(the loop publishes its queue level and the partitions backpressure holds; the thread reads them).

The Coordinator creates the poller and calls its public methods on the event loop; everything prefixed
``_`` runs on the poller thread. Each assignment of a partition gets a new epoch; records carry it to the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.control.offset_tracker import CommitPoint, TopicPartitionKey
from pyrallel_consumer.control.positions import Position
from pyrallel_consumer.kafka.assignment_table import AssignmentTable
from pyrallel_consumer.kafka.clients import KafkaClients, close_quietly
from pyrallel_consumer.kafka.commits import CommitSender, is_rebalancing
from pyrallel_consumer.kafka.deserializing import RecordDeserializer
from pyrallel_consumer.kafka.events import PollerSink, partition_names
from pyrallel_consumer.kafka.fetch_gate import FetchGate
from pyrallel_consumer.kafka.inbox import Inbox
from pyrallel_consumer.kafka.poller_thread import PollerThread
from pyrallel_consumer.observability.log_events import (
    PARTITIONS_ASSIGNED,
    PARTITIONS_LOST,
    PARTITIONS_REVOKED,
    event_extra,
    partition_list,
)

log = logging.getLogger(__name__)

_WATERMARK_PERIOD_S = 1.0
_GATE_WAIT_S = 0.002
_PROBE_TIMEOUT_S = 0.5
_PROBE_PERIOD_S = 1.0
"""Until a broker has answered: how long one metadata request may wait, and how often one is sent."""

_WAKE_TIMEOUT_S = 2.0
_GROUP_METADATA_PERIOD_S = 0.5
_POSITIONS_TIMEOUT_S = 30.0


class _RebalancingError(Exception):
    """A commit of handed-over positions was refused while the group rebalanced."""


Command = Callable[[Consumer], None]
"""A step the poller thread runs with its Consumer (the loop queues them)."""


class BrokerPoller:
    """Fetches while the FetchGate allows, serves the rebalance callbacks, pauses and commits on request."""

    def __init__(
        self,
        config: ConsumerConfig,
        clients: KafkaClients,
        sink: PollerSink,
        loop: asyncio.AbstractEventLoop,
        gate: FetchGate,
        revoke_timeout_s: float,
        start_paused: bool = False,
        subscribe: bool = True,
        deserializer: RecordDeserializer | None = None,
    ) -> None:
        self._config = config
        self._deserializer = deserializer
        """Deserializes each fetched batch on this thread before the loop gets it (None: records stay bytes)."""
        self._clients = clients
        self._topics = list(config.topics)
        self._sink = sink
        self._loop = loop
        self._gate = gate
        self._revoke_timeout_s = revoke_timeout_s
        self._thread: PollerThread[Consumer] = PollerThread(loop, "pyrallel-poller", sink.on_poller_failed)
        self._post = self._thread.post
        self._commands = self._thread.commands
        self._inbox = Inbox(sink, gate, loop, on_fatal=self._thread.stopping.set)
        self.backpressure_paused = 0
        """Assigned partitions paused by backpressure (gate or hold), not by pause_all; read by metrics."""
        self._table = AssignmentTable()
        self._assigned = self._table.epochs
        self._labels = {"color": config.color, "instance": config.instance_id}
        """``color`` and ``instance`` of every event line logged here."""
        self._commits = CommitSender(self._assigned, lambda results: self._post(sink.on_committed, results),
                                     labels=self._labels)
        self._paused: set[TopicPartitionKey] | frozenset[TopicPartitionKey] = set()  # what librdkafka has paused now
        self._held: frozenset[TopicPartitionKey] = frozenset()  # the gate's level.held last applied to librdkafka
        self._pause_all = start_paused
        self._subscribe_at_start = subscribe
        self._group_metadata: object | None = None
        """The Consumer's consumer_group_metadata() as the poller thread read it last (see group_metadata)."""
        self._group_metadata_read = 0.0
        self.high_watermarks: dict[TopicPartitionKey, int] = {}
        self._last_watermark_poll = 0.0
        self.broker_answered = False
        """Set by the poller thread once a broker answered; read on the loop for readiness (/readyz)."""
        self._next_probe = 0.0
        self._wake_after_assign = False

    # ---- loop side -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the Kafka consumer here, so a bad property fails the caller, then hand it to the poller thread."""
        consumer = self._clients.consumer(self._config, self._commits.on_commit)
        self._thread.start(lambda: self._run(consumer))

    def commit(self, points: list[CommitPoint]) -> None:
        """Asynchronous commit; results come back through ``on_committed``."""
        if points:
            self._commands.put(lambda consumer: self._commits.send(consumer, points, sync=False))

    async def commit_sync(self, points: list[CommitPoint]) -> None:
        if points:
            await self._call(lambda consumer: self._commits.send(consumer, points, sync=True))

    def pause_all(self) -> None:
        """Stop fetching every assigned partition, and any assigned later, until ``resume_all``."""
        self._commands.put(lambda consumer: self._set_pause_all(consumer, True))

    def resume_all(self) -> None:
        """Undo ``pause_all``; partitions held by backpressure stay paused."""
        self._commands.put(lambda consumer: self._set_pause_all(consumer, False))

    async def set_subscribed(self, subscribed: bool) -> None:
        """Join the group (subscribe) or leave it so that other members take every partition (unsubscribe).

        Leaving hands the partitions over through the usual revoke callback, so in-flight records settle
        and their offsets are committed first.
        """
        await self._call(self._subscribe if subscribed else self._unsubscribe)

    async def take_positions(self, positions: Sequence[Position]) -> None:
        """Commit ``positions`` into this consumer's group, then restart the partitions it holds from them.

        Called by the Coordinator while the consumer is PAUSED (fetching paused). Every position is committed (not only
        those of held partitions), so a partition assigned to any member later starts there too. The held ones
        get a new assignment epoch (the loop drops what it queued under the old one) and a seek, which makes
        librdkafka discard what it fetched before. A commit refused because the group is rebalancing is tried
        again (the thread serves the rebalance in between) for up to ``_POSITIONS_TIMEOUT_S``; then, or on any
        other failure, KafkaException.
        """
        deadline = time.monotonic() + _POSITIONS_TIMEOUT_S
        while True:
            try:
                await self._call(lambda consumer: self._take_positions(consumer, positions))
                return
            except _RebalancingError as exc:
                if time.monotonic() > deadline:
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                                    f"{exc} (for {_POSITIONS_TIMEOUT_S:g}s)")) from None
                await asyncio.sleep(0.05)

    def group_metadata(self) -> object:
        """The consumer's group metadata (member id, generation) for send_offsets_to_transaction.

        Called on the exactly-once transaction thread at every commit. It returns what the poller thread read last
        (``_refresh_group_metadata``): asking the Consumer from another thread blocks while this thread is inside a
        rebalance callback (measured: > 15 s, until the callback returns), which is exactly when a revocation's
        transaction must commit. The poller reads it in every assign and revoke callback (a new generation is
        always announced by one) and every ``_GROUP_METADATA_PERIOD_S``; a stale one makes the broker refuse the
        offsets, and the transaction is aborted: never a wrong commit.
        """
        metadata = self._group_metadata
        if metadata is None:
            raise RuntimeError("the consumer has not joined its group yet")
        return metadata

    def rewind(self, partitions: Sequence[TopicPartitionKey], fallback: dict[TopicPartitionKey, int]) -> None:
        """Exactly-once, after an aborted transaction: restart these partitions from what the group committed.

        On the thread, each still assigned partition gets a new epoch (the loop drops what it queued under the old
        one and gets a new tracker from ``on_repositioned``, with the committed offset map) and a seek to the
        committed offset; a partition with no committed offset goes back to ``fallback`` (the first offset the
        aborted assignment received), else to where auto_offset_reset points. A seek that fails stops the poller:
        fetching on past records whose outputs were aborted would lose them.
        """
        targets, starts = list(partitions), dict(fallback)
        self._commands.put(lambda consumer: self._rewind(consumer, targets, starts))

    async def close(self) -> None:
        """Leave the group (the revoke callback commits) and end the thread; the thread is gone on return."""
        await self._thread.close()

    @property
    def finished(self) -> asyncio.Future[None]:
        return self._thread.finished

    async def _call(self, command: Command) -> None:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run(consumer: Consumer) -> None:
            try:
                command(consumer)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                done.set_exception(exc)
            else:
                done.set_result(None)

        self._commands.put(run)
        await asyncio.wrap_future(done)

    # ---- poller thread ---------------------------------------------------------------------------------

    def _run(self, consumer: Consumer) -> None:
        try:
            if self._subscribe_at_start:
                self._subscribe(consumer)
            while not self._thread.stopping.is_set():
                self._thread.run_commands(consumer)
                if not self.broker_answered:
                    self._probe_broker(consumer)
                wanted = self._fetch_size(consumer)
                if not wanted:
                    # No consume() here: every call hands out records, and a dropped record is a gap
                    # that the tracker would commit past. Callbacks wait until the gate opens.
                    time.sleep(_GATE_WAIT_S)
                    continue
                # Wait for the first record only, then take what is already there: consume(n, timeout) alone
                # would hold every record until n are there or the timeout passes (100 ms of latency at low rates).
                first = consumer.poll(0.1)
                if first is not None:
                    fetched_under = dict(self._assigned)  # rebalance callbacks may run again inside consume()
                    rest = consumer.consume(num_messages=wanted - 1, timeout=0) if wanted > 1 else []
                    self._deliver([first, *rest], self._table.epochs_of(rest, fetched_under))
                if self._wake_after_assign:
                    self._wake_after_assign = False
                    self._wake_fetchers(consumer)
                self._refresh_watermarks(consumer)
                self._refresh_group_metadata(consumer)
            self._thread.run_commands(consumer)
        finally:
            close_quietly(consumer, "Kafka consumer")

    def _fetch_size(self, consumer: Consumer) -> int:
        """The gate's answer; librdkafka's paused set follows the gate's pause and the partitions held."""
        gate = self._gate
        was_paused = gate.paused
        wanted = gate.next_fetch()
        if gate.paused != was_paused or gate.level.held is not self._held:
            self._sync_paused(consumer)
        return wanted

    def _probe_broker(self, consumer: Consumer) -> None:
        """Ask for the first topic's metadata, at most once per ``_PROBE_PERIOD_S``, until a broker answers.

        librdkafka connects (and reconnects) on its own and reports failures only, so without asking, a consumer
        whose bootstrap servers are unreachable would look ready. A topic that does not exist still gets an
        answer (and is not created). While no broker answers this blocks the thread for up to
        ``_PROBE_TIMEOUT_S``, when there is nothing to fetch anyway.
        """
        if time.monotonic() < self._next_probe:
            return
        try:
            consumer.list_topics(self._topics[0], timeout=_PROBE_TIMEOUT_S)
        except KafkaException:
            self._next_probe = time.monotonic() + _PROBE_PERIOD_S
            return
        self.broker_answered = True
        log.info("A broker at %s answered", self._config.bootstrap_servers)

    def _subscribe(self, consumer: Consumer) -> None:
        consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _unsubscribe(self, consumer: Consumer) -> None:
        consumer.unsubscribe()

    def _deliver(self, messages: list[Message], epochs: dict[TopicPartitionKey, int]) -> None:
        """Hand the raw batch to the loop's Inbox, which converts it there; deserialize it first, here, when
        deserializers are configured (not on the loop: see ``kafka/deserializing.py``)."""
        self._gate.fetched(len(messages), sum(map(len, messages)))  # len(message) is its value's length
        contents = self._deserializer.messages(messages) if self._deserializer is not None else None
        self._post(self._inbox.put, messages, epochs, contents)

    def _refresh_watermarks(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now - self._last_watermark_poll < _WATERMARK_PERIOD_S:
            return
        self._last_watermark_poll = now
        for topic, partition in list(self._assigned):
            try:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                self.high_watermarks[(topic, partition)] = high

    def _refresh_group_metadata(self, consumer: Consumer, now: bool = False) -> None:
        """Read the group metadata for the exactly-once transactions (on this thread only; see group_metadata)."""
        if self._config.processing_guarantee != "exactly_once":
            return
        moment = time.monotonic()
        if not now and moment - self._group_metadata_read < _GROUP_METADATA_PERIOD_S:
            return
        self._group_metadata_read = moment
        try:
            self._group_metadata = consumer.consumer_group_metadata()
        except (KafkaException, RuntimeError) as exc:
            log.debug("Reading the group metadata failed: %s", exc)

    def _take_positions(self, consumer: Consumer, positions: Sequence[Position]) -> None:
        offsets = [TopicPartition(p.topic, p.partition, p.offset, p.metadata) for p in positions]
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False)
            errors = [tp.error for tp in results or [] if tp.error is not None]
        except KafkaException as exc:
            errors = [exc.args[0]]
        if errors:
            message = "committing the handed-over positions failed: " + "; ".join(map(str, errors))
            if all(is_rebalancing(e) for e in errors):
                raise _RebalancingError(message)
            raise KafkaException(KafkaError(KafkaError._STATE, message))
        held = [TopicPartition(p.topic, p.partition) for p in positions if (p.topic, p.partition) in self._assigned]
        log.info("Took %d handed-over position(s); restarting %s from them", len(positions),
                 partition_names([(tp.topic, tp.partition) for tp in held]) or "no held partition")
        if not held:
            return
        assignments, starts = self._table.assign(consumer, held)  # reads back what was just committed
        self._post(self._sink.on_repositioned, assignments)
        for tp in starts:
            if tp.offset >= 0:
                consumer.seek(tp)

    def _rewind(self, consumer: Consumer, partitions: list[TopicPartitionKey],
                fallback: dict[TopicPartitionKey, int]) -> None:
        held = [TopicPartition(t, p) for t, p in partitions if (t, p) in self._assigned]
        if not held:
            return
        assignments, starts = self._table.assign(consumer, held)
        self._post(self._sink.on_repositioned, assignments)
        reset = OFFSET_BEGINNING if self._config.auto_offset_reset == "earliest" else OFFSET_END
        for tp in starts:
            offset = tp.offset if tp.offset >= 0 else fallback.get((tp.topic, tp.partition), reset)
            consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        log.info("Restarted %s from the last committed transaction",
                 partition_names([(tp.topic, tp.partition) for tp in held]))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._refresh_group_metadata(consumer, now=True)
        assignments, to_assign = self._table.assign(consumer, partitions)
        keys = [(a.topic, a.partition) for a in assignments]
        log.info("Assigned %s%s", partition_list(keys, [a.committed_offset for a in assignments]),
                 " (kept paused: the consumer is PAUSED)" if self._pause_all and keys else "",
                 extra=event_extra(PARTITIONS_ASSIGNED, partitions=partition_list(keys), partition_count=len(keys),
                                   paused=self._pause_all, **self._labels))
        self._post(self._sink.on_assigned, assignments)
        consumer.incremental_assign(to_assign)
        if not to_assign:
            return
        self._wake_after_assign = True  # once the callback returned and librdkafka applied the assignment
        # librdkafka keeps a partition's pause flag across assignments: set it explicitly either way.
        consumer.resume(to_assign)
        self._paused = self._paused - {(tp.topic, tp.partition) for tp in to_assign}
        self._sync_paused(consumer)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._refresh_group_metadata(consumer, now=True)  # the revocation's transaction commits with it
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.info("Revoking %s", partition_names(keys),
                 extra=event_extra(PARTITIONS_REVOKED, partitions=partition_list(keys), partition_count=len(keys),
                                   **self._labels))
        points: list[CommitPoint] = []
        try:
            future = asyncio.run_coroutine_threadsafe(self._sink.on_revoked(keys), self._loop)
            points = future.result(timeout=self._revoke_timeout_s)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("Could not settle revoked partitions in time (%r); committing nothing for them", exc)
        self._commits.send(consumer, points, sync=True)
        self._forget(keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.warning("Lost %s (no commit: another member may own them already)", partition_names(keys),
                    extra=event_extra(PARTITIONS_LOST, partitions=partition_list(keys), partition_count=len(keys),
                                      **self._labels))
        self._forget(keys)
        self._post(self._sink.on_lost, keys)

    def _forget(self, keys: list[TopicPartitionKey]) -> None:
        self._table.forget(keys)
        self._paused = self._paused - set(keys)
        for key in keys:
            self.high_watermarks.pop(key, None)

    def _set_pause_all(self, consumer: Consumer, value: bool) -> None:
        self._pause_all = value
        self._sync_paused(consumer)
        if not value:
            self._wake_fetchers(consumer)

    def _wake_fetchers(self, consumer: Consumer) -> None:
        """Make each leader's fetcher notice resumed or newly assigned partitions now, not up to a second later.

        librdkafka's broker thread re-decides what to fetch when it wakes; with nothing to fetch (every partition
        paused, or none assigned before) it sleeps up to 1 s, and neither a resume nor an assignment wakes it
        (measured: the first record came 1.0 s after the resume, with or without a seek, and 1.0 s after a new
        assignment in a blue/green switch). Any request to that broker does: one ListOffsets per leader of the
        fetchable partitions (1 ms on loopback), after one metadata request. Only the lifecycle resume and a new
        assignment do this; a partition resumed by backpressure has busy fetchers beside it. Best effort.
        """
        fetchable = sorted(set(self._assigned) - self._paused)
        if not fetchable:
            return
        deadline = time.monotonic() + _WAKE_TIMEOUT_S  # one budget for the whole nudge: the poller waits meanwhile
        try:
            topics = {t for t, _ in fetchable}
            only = next(iter(topics)) if len(topics) == 1 else None  # the usual case: one topic's metadata only
            metadata = consumer.list_topics(only, timeout=_WAKE_TIMEOUT_S).topics
        except KafkaException as exc:
            log.debug("Waking the fetchers failed (they wake within 1 s anyway): %s", exc)
            return
        leaders: dict[int, TopicPartition] = {}
        for t, p in fetchable:
            partition = metadata[t].partitions.get(p) if t in metadata else None
            if partition is not None and partition.leader >= 0:
                leaders.setdefault(partition.leader, TopicPartition(t, p))
        for tp in leaders.values():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                consumer.get_watermark_offsets(tp, timeout=left, cached=False)
            except KafkaException as exc:
                log.debug("Waking the fetcher of %s[%d] failed: %s", tp.topic, tp.partition, exc)

    def _sync_paused(self, consumer: Consumer) -> None:
        """Make librdkafka's paused set match: everything under pause_all or a long-closed gate, else the
        partitions backpressure holds (the gate's published ``level.held``)."""
        self._held = self._gate.level.held
        assigned = set(self._assigned)
        backpressure = assigned if self._gate.paused else self._held & assigned
        wanted = assigned if self._pause_all else backpressure
        self.backpressure_paused = len(backpressure)
        to_pause = [TopicPartition(t, p) for (t, p) in wanted - self._paused]
        to_resume = [TopicPartition(t, p) for (t, p) in (self._paused - wanted) if (t, p) in self._assigned]
        if to_pause:
            consumer.pause(to_pause)
        if to_resume:
            consumer.resume(to_resume)
        self._paused = wanted
