"""BrokerPoller: the one thread that owns the confluent-kafka Consumer.

librdkafka calls the rebalance callbacks from inside ``consume()``, so fetching, pausing, committing and
the callbacks all run on this thread, in one order. Everything else (bookkeeping, dispatch) runs on the
asyncio loop; the two sides talk through ``call_soon_threadsafe`` (thread -> loop, FIFO, so an
assignment always reaches the loop before its records) and a command queue (loop -> thread).

Each assignment of a partition gets a new epoch. Commits carry the epoch they were computed for and are
dropped here when the partition has since been revoked, so a stale commit can never reach the broker.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from pyrallel_consumer.control.offset_tracker import CommitPoint, TopicPartitionKey
from pyrallel_consumer.record import Header, Record

log = logging.getLogger(__name__)

_COMMITTED_TIMEOUT_S = 10.0
_WATERMARK_PERIOD_S = 1.0
_GATE_WAIT_S = 0.002
_CONVERT_SLICE = 100
"""Messages converted per loop callback: about half a millisecond of loop time."""
_GATE_PAUSE_AFTER_S = 1.0
"""How long fetching may stay gated before every partition is paused so consume() can run again."""
_PROBE_TIMEOUT_S = 0.5
_PROBE_PERIOD_S = 1.0
"""Until a broker has answered: how long one metadata request may wait, and how often one is sent."""


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


class PollerSink(Protocol):
    """What the poller reports to the loop side. All methods run on the event loop."""

    def on_records(self, batch: list[tuple[Record, int]]) -> None: ...

    def on_assigned(self, assignments: list[Assignment]) -> None: ...

    def on_revoked(self, partitions: list[TopicPartitionKey]) -> Coroutine[Any, Any, list[CommitPoint]]: ...

    def on_lost(self, partitions: list[TopicPartitionKey]) -> None: ...

    def on_committed(self, results: list[CommitResult]) -> None: ...

    def on_poller_failed(self, error: BaseException) -> None: ...


Command = Callable[[Consumer], None]


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _headers(raw: object) -> tuple[Header, ...]:
    """Headers as (name, bytes) pairs, whatever shape librdkafka hands them over in."""
    if not raw:
        return ()
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((str(name), _as_bytes(value)) for name, value in cast("list[tuple[str, Any]]", items))


class BrokerPoller:
    """Fetches in batches while the records fetched and not yet dispatched leave room in the queue.

    Backpressure is a gate first: while ``room`` says the queue is full, ``consume()`` is not called
    and librdkafka's own pre-fetch buffer stays intact. Pausing partitions instead would make librdkafka
    discard what it had pre-fetched and wait for a new fetch round trip after the resume, starving the
    handlers every time. A gate closed for longer than ``_GATE_PAUSE_AFTER_S`` pauses every partition
    and polls on, since a member that stops calling ``consume()`` for ``max.poll.interval.ms`` is
    evicted from the group; fetching resumes once half of the queue has drained.
    """

    def __init__(
        self,
        conf: dict[str, Any],
        topics: Sequence[str],
        sink: PollerSink,
        loop: asyncio.AbstractEventLoop,
        revoke_timeout_s: float,
        room: Callable[[int, int], tuple[float, int]],
        batch_size: int = 500,
        start_paused: bool = False,
        subscribe: bool = True,
    ) -> None:
        self._conf = conf
        self._topics = list(topics)
        self._sink = sink
        self._loop = loop
        self._revoke_timeout_s = revoke_timeout_s
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._batch_size = batch_size
        self._room = room
        """(how full the loop's queue is, 1.0 = full; bytes left in it), given what was fetched but not taken in."""
        self._avg_bytes: float | None = None
        """Average record value size seen, to size fetches against the bytes left; None before the first fetch."""
        self._inbox: collections.deque[tuple[list[Message], dict[TopicPartitionKey, int]]] = collections.deque()
        self._inbox_pos = 0
        self._converting = False
        self._gate_closed_since: float | None = None
        self._gate_paused = False
        self.backpressure_paused = 0
        """Assigned partitions paused by backpressure (gate or hold), not by pause_all; read by metrics."""
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._assigned: dict[TopicPartitionKey, int] = {}
        self._epoch = 0
        self._paused: set[TopicPartitionKey] = set()  # what librdkafka has paused now
        self._held: set[TopicPartitionKey] = set()  # paused by backpressure, per partition
        self._pause_all = start_paused
        self._subscribe_at_start = subscribe
        self._uningested = 0
        self._uningested_bytes = 0
        self._uningested_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished: asyncio.Future[None] = loop.create_future()
        self._pending_async_commits: dict[tuple[str, int, int], tuple[float, CommitPoint]] = {}
        self.high_watermarks: dict[TopicPartitionKey, int] = {}
        self._last_watermark_poll = 0.0
        self.commit_delay: Callable[[], float] | None = None
        self.broker_answered = False
        """Set by the poller thread once a broker answered; read on the loop for readiness (/readyz)."""
        self._next_probe = 0.0
        """Fault injection: seconds to hold back each commit, counted in its latency (async ones do not block)."""

    # ---- loop side -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the Kafka consumer here, so a bad property fails the caller, then hand it to the poller thread."""
        conf = dict(self._conf)
        conf["on_commit"] = self._on_commit
        consumer = Consumer(conf)
        self._thread = threading.Thread(target=self._run, args=(consumer,), name="pyrallel-poller", daemon=True)
        self._thread.start()

    def ingested(self, count: int, size: int) -> None:
        """The loop has taken ``count`` fetched records of ``size`` bytes into its own bookkeeping."""
        with self._uningested_lock:
            self._uningested -= count
            self._uningested_bytes -= size

    def commit(self, points: list[CommitPoint]) -> None:
        """Asynchronous commit; results come back through ``on_committed``."""
        if points:
            self._commands.put(lambda consumer: self._commit(consumer, points, sync=False))

    async def commit_sync(self, points: list[CommitPoint]) -> None:
        if points:
            await self._call(lambda consumer: self._commit(consumer, points, sync=True))

    def pause_all(self) -> None:
        """Stop fetching every assigned partition, and any assigned later, until ``resume_all``."""
        self._commands.put(lambda consumer: self._set_pause_all(consumer, True))

    def resume_all(self) -> None:
        """Undo ``pause_all``; partitions held by backpressure stay paused."""
        self._commands.put(lambda consumer: self._set_pause_all(consumer, False))

    def stall(self, seconds: float) -> None:
        """Fault injection: block the poll loop (past max.poll.interval.ms the group evicts this member)."""
        self._commands.put(lambda _consumer: time.sleep(seconds))

    def hold(self, partitions: list[TopicPartitionKey], held: bool) -> None:
        """Pause (held=True) or resume fetching of single partitions, for backpressure."""
        self._commands.put(lambda consumer: self._set_held(consumer, partitions, held))

    async def set_subscribed(self, subscribed: bool) -> None:
        """Join the group (subscribe) or leave it so that other members take every partition (unsubscribe).

        Leaving hands the partitions over through the usual revoke callback, so in-flight records settle
        and their offsets are committed first.
        """
        await self._call(self._subscribe if subscribed else self._unsubscribe)

    @property
    def assigned_count(self) -> int:
        return len(self._assigned)

    async def close(self) -> None:
        """Leave the group (the revoke callback commits) and end the thread."""
        self._stopping.set()
        await asyncio.shield(self._finished)

    @property
    def finished(self) -> asyncio.Future[None]:
        return self._finished

    async def _call(self, command: Callable[[Consumer], None]) -> None:
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

    def _post(self, fn: Callable[..., object], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            log.debug("Event loop closed; dropping %s", getattr(fn, "__name__", fn))

    def _run(self, consumer: Consumer) -> None:
        error: BaseException | None = None
        try:
            if self._subscribe_at_start:
                self._subscribe(consumer)
            while not self._stopping.is_set():
                self._run_commands(consumer)
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
                    self._deliver([first, *rest], self._epochs_of(rest, fetched_under))
                self._refresh_watermarks(consumer)
            self._run_commands(consumer)
        except BaseException as exc:  # noqa: BLE001 - reported to the loop, which stops the consumer
            error = exc
            log.error("Kafka poller failed: %r", exc)
        finally:
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("Closing the Kafka consumer failed: %s", exc)
            self._post(self._finish, error)

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
        log.info("A broker at %s answered", self._conf.get("bootstrap.servers"))

    def _subscribe(self, consumer: Consumer) -> None:
        consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _unsubscribe(self, consumer: Consumer) -> None:
        consumer.unsubscribe()

    def _finish(self, error: BaseException | None) -> None:
        if error is not None:
            self._sink.on_poller_failed(error)
        if not self._finished.done():
            self._finished.set_result(None)

    def _fetch_size(self, consumer: Consumer) -> int:
        """How many records the next fetch may take; 0 while the loop's queue of records not dispatched is full.

        Large records shrink the batch so that one fetch cannot overrun queue_max_bytes by much.
        """
        with self._uningested_lock:
            uningested, uningested_bytes = self._uningested, self._uningested_bytes
        fill, bytes_left = self._room(uningested, uningested_bytes)
        if self._gate_paused:
            if fill <= 0.5:
                self._gate_paused = False
                self._sync_paused(consumer)
                log.debug("Backpressure gate open again: fetching resumed")
            return self._batch_size  # everything is paused: consume() hands out no records, but serves callbacks
        if uningested >= 2 * self._batch_size:
            return 0  # the loop has not seen the last fetches: a partition it is about to hold could pile up
        if fill < 1.0:
            self._gate_closed_since = None
            if self._avg_bytes is None:
                return 1  # sizes unknown yet: one record, then batches sized by what it weighed
            if self._avg_bytes < 1.0:
                return self._batch_size
            return max(1, min(self._batch_size, int(bytes_left / self._avg_bytes)))
        now = time.monotonic()
        if self._gate_closed_since is None:
            self._gate_closed_since = now
        elif now - self._gate_closed_since >= _GATE_PAUSE_AFTER_S:
            self._gate_closed_since = None
            self._gate_paused = True
            self._sync_paused(consumer)
            log.debug("Backpressure gate closed for %.1fs: every partition paused", _GATE_PAUSE_AFTER_S)
            return self._batch_size
        return 0

    def _run_commands(self, consumer: Consumer) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command(consumer)

    def _epochs_of(
        self, rest: list[Message], fetched_under: dict[TopicPartitionKey, int]
    ) -> dict[TopicPartitionKey, int]:
        """The assignment epoch of each partition in a batch whose tail came from ``consume()``.

        A record is tagged with the epoch its partition had when it was fetched: a record of an assignment
        revoked meanwhile must be dropped, never counted by the next assignment of the same partition (whose
        tracker would take the offsets below it for a gap and commit past them). A partition assigned during
        ``consume()`` has only records of that assignment. A partition revoked and assigned again within one
        ``consume()`` call may have records of both in the tail, which nothing tells apart: the poller then
        stops, failing closed, rather than risk committing past a record.
        """
        now = self._assigned
        if now == fetched_under:
            return fetched_under
        reassigned = {tp for tp, epoch in fetched_under.items() if tp in now and now[tp] != epoch}
        mixed = sorted({tp for m in rest if (tp := (m.topic(), m.partition())) in reassigned})
        if mixed:
            raise KafkaException(KafkaError(
                KafkaError._STATE,
                f"{partition_names(mixed)} revoked and assigned again within one fetch: cannot tell which "
                "assignment its records belong to; stopping without committing past them",
            ))
        return {**now, **fetched_under}

    def _deliver(self, messages: list[Message], epochs: dict[TopicPartitionKey, int]) -> None:
        """Hand the raw batch to the loop, which converts it: this thread then holds the GIL only briefly,
        so the loop is not kept waiting for the interpreter lock while handlers' timers are due."""
        size = sum(map(len, messages))  # len(message) is its value's length
        average = size / len(messages)
        self._avg_bytes = average if self._avg_bytes is None else 0.8 * self._avg_bytes + 0.2 * average
        with self._uningested_lock:
            self._uningested += len(messages)
            self._uningested_bytes += size
        self._post(self._enqueue, messages, epochs)

    def _enqueue(self, messages: list[Message], epochs: dict[TopicPartitionKey, int]) -> None:
        """On the loop: queue a fetched batch behind the ones not converted yet (offsets stay in order)."""
        self._inbox.append((messages, epochs))
        if not self._converting:
            self._converting = True
            self._convert()

    def _convert(self) -> None:
        """On the loop: turn up to ``_CONVERT_SLICE`` messages into (Record, epoch) pairs for the sink, then yield.

        Converting a whole fetch at once would hold the loop for milliseconds and make every handler's timer
        late; slices let due timers run in between.
        """
        inbox = self._inbox
        batch: list[tuple[Record, int]] = []
        taken = taken_bytes = 0
        while inbox and taken < _CONVERT_SLICE:
            messages, epochs = inbox[0]
            start = self._inbox_pos
            end = min(len(messages), start + _CONVERT_SLICE - taken)
            for msg in messages[start:end]:
                taken_bytes += len(msg)
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        self._stopping.set()
                        self._sink.on_poller_failed(KafkaException(err))
                        inbox.clear()
                        self._converting = False
                        return
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("Fetch error: %s", err)
                    continue
                topic, partition = msg.topic(), msg.partition()
                epoch = epochs.get((topic, partition))  # type: ignore[arg-type]
                if epoch is None:
                    continue
                ts_type, ts = msg.timestamp()
                batch.append((Record(topic, partition, msg.offset(), _as_bytes(msg.key()),  # type: ignore[arg-type]
                                     _as_bytes(msg.value()), _headers(msg.headers()), ts if ts_type else -1), epoch))
            taken += end - start
            if end == len(messages):
                inbox.popleft()
                self._inbox_pos = 0
            else:
                self._inbox_pos = end
        self.ingested(taken, taken_bytes)
        if batch:
            self._sink.on_records(batch)
        if inbox:
            self._loop.call_soon(self._convert)
        else:
            self._converting = False

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

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = self._committed(consumer, partitions)
        assignments = []
        to_assign = []
        for tp in committed:
            self._epoch += 1
            key = (tp.topic, tp.partition)
            self._assigned[key] = self._epoch
            end = self._partition_end(consumer, tp) if tp.metadata and tp.offset >= 0 else None
            assignments.append(Assignment(tp.topic, tp.partition, self._epoch, tp.offset, tp.metadata, end))
            to_assign.append(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_INVALID))
        log.info("Assigned %s", ", ".join(f"{a.topic}[{a.partition}]@{a.committed_offset}" for a in assignments))
        self._post(self._sink.on_assigned, assignments)
        consumer.incremental_assign(to_assign)
        if not to_assign:
            return
        # librdkafka keeps a partition's pause flag across assignments: set it explicitly either way.
        consumer.resume(to_assign)
        self._paused.difference_update((tp.topic, tp.partition) for tp in to_assign)
        self._sync_paused(consumer)

    def _committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets and metadata; without them the assignment cannot start safely."""
        last: Exception | None = None
        for _ in range(3):
            try:
                result: list[TopicPartition] = consumer.committed(partitions, timeout=_COMMITTED_TIMEOUT_S)
                return result
            except KafkaException as exc:
                last = exc
                log.warning("Reading committed offsets failed (%s); retrying", exc)
        raise RuntimeError(f"could not read committed offsets for the new assignment: {last}")

    def _partition_end(self, consumer: Consumer, tp: TopicPartition) -> int | None:
        """The partition's high watermark from the broker, to judge a committed offset map; None if unreadable."""
        try:
            _low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                        timeout=_COMMITTED_TIMEOUT_S, cached=False)
        except KafkaException as exc:
            log.warning("Reading the end of %s[%d] failed: %s", tp.topic, tp.partition, exc)
            return None
        return int(high) if high is not None and high >= 0 else None

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.info("Revoking %s", ", ".join(f"{t}[{p}]" for t, p in keys))
        points: list[CommitPoint] = []
        try:
            future = asyncio.run_coroutine_threadsafe(self._sink.on_revoked(keys), self._loop)
            points = future.result(timeout=self._revoke_timeout_s)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("Could not settle revoked partitions in time (%r); committing nothing for them", exc)
        self._commit(consumer, points, sync=True)
        self._forget(keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.warning("Lost %s (no commit: another member may own them already)",
                    ", ".join(f"{t}[{p}]" for t, p in keys))
        self._forget(keys)
        self._post(self._sink.on_lost, keys)

    def _forget(self, keys: list[TopicPartitionKey]) -> None:
        for key in keys:
            self._assigned.pop(key, None)
            self._paused.discard(key)
            self._held.discard(key)
            self.high_watermarks.pop(key, None)

    def _set_pause_all(self, consumer: Consumer, value: bool) -> None:
        self._pause_all = value
        self._sync_paused(consumer)

    def _set_held(self, consumer: Consumer, partitions: list[TopicPartitionKey], held: bool) -> None:
        if held:
            self._held.update(partitions)
        else:
            self._held.difference_update(partitions)
        self._sync_paused(consumer)

    def _sync_paused(self, consumer: Consumer) -> None:
        """Make librdkafka's paused set match: everything under pause_all or a long-closed gate, else the held
        partitions."""
        assigned = set(self._assigned)
        backpressure = assigned if self._gate_paused else self._held & assigned
        wanted = assigned if self._pause_all else backpressure
        self.backpressure_paused = len(backpressure)
        to_pause = [TopicPartition(t, p) for (t, p) in wanted - self._paused]
        to_resume = [TopicPartition(t, p) for (t, p) in (self._paused - wanted) if (t, p) in self._assigned]
        if to_pause:
            consumer.pause(to_pause)
        if to_resume:
            consumer.resume(to_resume)
        self._paused = wanted

    def _commit(self, consumer: Consumer, points: list[CommitPoint], sync: bool, started: float | None = None) -> None:
        valid = [p for p in points if self._assigned.get((p.topic, p.partition)) == p.epoch]
        if not valid:
            return
        offsets = [TopicPartition(p.topic, p.partition, p.offset, p.metadata) for p in valid]
        if started is None:
            started = time.monotonic()
            delay = self.commit_delay() if self.commit_delay is not None else 0.0
            if delay > 0 and not sync:  # resent by a timer (epochs checked again then); polling goes on meanwhile
                resend = functools.partial(self._commit, points=points, sync=False, started=started)
                timer = threading.Timer(delay, self._commands.put, [resend])
                timer.daemon = True
                timer.start()
                return
            if delay > 0:
                time.sleep(delay)  # a synchronous commit blocks this thread anyway
        if not sync:
            for p in valid:
                self._pending_async_commits[(p.topic, p.partition, p.offset)] = (started, p)
            consumer.commit(offsets=offsets, asynchronous=True)
            return
        error: str | None = None
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = str(exc)
            results = None
        errors = {(tp.topic, tp.partition): str(tp.error) for tp in results or [] if tp.error is not None}
        latency = time.monotonic() - started
        self._post(self._sink.on_committed, [
            CommitResult(p, error or errors.get((p.topic, p.partition)), latency) for p in valid
        ])

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's result of a commit; synchronous commits were reported already and match nothing."""
        now = time.monotonic()
        results = []
        for tp in partitions:
            entry = self._pending_async_commits.pop((tp.topic, tp.partition, tp.offset), None)
            if entry is None:
                continue
            started, point = entry
            error = err if err is not None else tp.error
            results.append(CommitResult(point, str(error) if error is not None else None, now - started))
        if results:
            self._post(self._sink.on_committed, results)
