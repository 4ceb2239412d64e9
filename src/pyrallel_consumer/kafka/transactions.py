"""Transactions: the exactly-once producer and its cycle (``processing_guarantee="exactly_once"``).

One transactional producer per consumer. Its calls block (``init_transactions``, ``send_offsets_to_transaction``,
``commit_transaction``, ``abort_transaction`` wait for the broker), so they all run on one dedicated thread,
``pyrallel-transactions``, which owns the producer: every call on it, produce() included, happens there, in the
order the event loop asked for them. The loop never blocks on it: it queues commands and gets futures back.

The cycle, as the loop sees it (the Coordinator and the CommitSchedule call these, on the event loop):

- ``produce(outputs)`` when a record completed with outputs, *before* the record is marked complete in its
  offset tracker. The thread begins a transaction at the first produce after a commit.
- ``commit(points)`` with the commit points computed from the trackers at that moment: the thread sends them
  with ``send_offsets_to_transaction`` (the consumer's group metadata: KIP-447 fencing) and commits. Because the
  queue is FIFO, the transaction holds the outputs of exactly the records completed (in the trackers) between
  the previous commit's points and these: a transaction commits the outputs of exactly the records it marks
  complete. Records keep running meanwhile; their outputs queue behind the commit and go into the next
  transaction, which begins as soon as the commit returns.
- An error that needs an abort (a delivery failure, a timeout, a refusal of the group metadata after a
  rebalance: the zombie case) aborts the transaction; nothing of it becomes visible to read_committed readers.
  The thread then moves to a new *generation* and drops every command of the old one still queued, and the loop
  is told (``on_transaction_aborted``): it forgets every partition's in-memory state and restarts them from the
  last committed transaction's position, so the records of the aborted transaction run again.
- A fatal error (the producer fenced by another with the same transactional.id, or an unrecoverable state) ends
  the thread; the loop is told (``on_transactions_failed``) and stops the consumer: nothing more is committed,
  the next owner starts from the last committed transaction.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.control.offset_tracker import CommitPoint
from pyrallel_consumer.kafka.clients import KafkaClients
from pyrallel_consumer.kafka.events import CommitResult
from pyrallel_consumer.kafka.settings import transactional_id
from pyrallel_consumer.output import Output

log = logging.getLogger(__name__)

_INIT_TIMEOUT_S = 60.0
_IDLE_POLL_S = 0.05
_ABORT_MIN_S = 60.0
_RECOVERY_PERIOD_S = 60.0
"""At most one new producer per this period: a producer that keeps failing stops the consumer."""
_FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                           KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED})

class TransactionSink(Protocol):
    """What the transaction thread reports to the loop (the Coordinator); called on the event loop."""

    def on_transaction_aborted(self, reason: str) -> None: ...

    def on_transactions_failed(self, error: BaseException) -> None: ...


@dataclass(frozen=True, slots=True)
class TransactionOutcome:
    """How one ``commit`` ended: committed (``results`` acknowledge its points), aborted, or not attempted."""

    committed: bool
    aborted: bool = False
    error: str | None = None
    results: list[CommitResult] = field(default_factory=list)


_STALE = TransactionOutcome(False, error="an earlier transaction was aborted; these records run again")


@dataclass(frozen=True, slots=True)
class _Produce:
    generation: int
    outputs: tuple[Output, ...]


@dataclass(frozen=True, slots=True)
class _Commit:
    generation: int
    points: list[CommitPoint]
    done: asyncio.Future[TransactionOutcome]
    asked: float


@dataclass(frozen=True, slots=True)
class _Abort:
    generation: int
    reason: str
    done: asyncio.Future[TransactionOutcome]


@dataclass(frozen=True, slots=True)
class _Stop:
    done: asyncio.Future[TransactionOutcome]


_Command = _Produce | _Commit | _Abort | _Stop


class _FatalError(Exception):
    """The producer cannot go on. ``fenced``: another producer took its transactional.id (the consumer stops);
    otherwise a new producer may take over (``Transactions._recover``)."""

    def __init__(self, message: str, error: object = None) -> None:
        super().__init__(message)
        code = error.code() if isinstance(error, KafkaError) else None
        self.fenced = code in _FENCED_CODES


class Transactions:
    """The exactly-once producer and its thread; public methods run on the event loop, ``_`` ones on the thread."""

    def __init__(self, config: ConsumerConfig, clients: KafkaClients) -> None:
        self._config = config
        self._clients = clients
        self._timeout_s = config.transaction_timeout_ms / 1000
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: TransactionSink | None = None
        self._group_metadata: Callable[[], Any] | None = None
        self._thread: threading.Thread | None = None
        self.generation = 0
        """The loop's generation: produce and commit commands carry it; raised when the thread reports an abort."""
        self.produced = 0
        """Outputs queued since the last commit was asked for (the size bound of a transaction)."""
        self.usable = False
        """Started and neither failed nor closed: commits may be asked for."""
        self.committed_transactions = 0
        self.aborted_transactions = 0
        self._backlog_limit = config.transaction_max_records
        self._queued_total = 0
        """Outputs the loop queued (written on the loop only)."""
        self._taken_total = 0
        """Outputs the thread took off the queue, produced or dropped (written on the thread only)."""
        self._wake: Callable[[], None] | None = None
        """Set by the loop while dispatch waits for the backlog to shrink; the thread posts it once it has."""
        self._pending: list[Output] = []
        """Outputs queued on the loop this iteration, handed to the thread as one command (``_flush``): one queue
        operation and one wake-up of the thread per loop iteration instead of per record."""
        # Thread-side state.
        self._producer: Producer | None = None
        self._thread_generation = 0
        self._in_transaction = False
        self._transaction_error: str | None = None
        self._dead = False
        self._recovered_at = -_RECOVERY_PERIOD_S

    # ---- loop side -------------------------------------------------------------------------------------------

    async def start(self, sink: TransactionSink, group_metadata: Callable[[], Any]) -> None:
        """Create the producer (a bad property fails here), start the thread and wait for ``init_transactions``.

        ``group_metadata`` returns the consumer's ``consumer_group_metadata()``; the thread calls it at every commit.
        ``init_transactions`` also aborts what a predecessor with the same transactional.id left open.
        """
        loop = asyncio.get_running_loop()
        self._loop, self._sink, self._group_metadata = loop, sink, group_metadata
        self._producer = self._clients.transactional_producer(self._config)
        ready: asyncio.Future[TransactionOutcome] = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="pyrallel-transactions", daemon=True)
        self._thread.start()
        outcome = await ready
        if not outcome.committed:
            raise KafkaException(KafkaError(KafkaError._FATAL, f"init_transactions of transactional.id "
                                            f"{transactional_id(self._config)!r} failed: {outcome.error}"))
        self.usable = True
        log.info("Exactly-once producer ready (transactional.id %s)", transactional_id(self._config))

    def produce(self, outputs: Iterable[Output]) -> None:
        """Queue outputs for the current transaction; call it before marking their record complete."""
        batch = tuple(outputs)
        if batch and self.usable:
            self.produced += len(batch)
            self._queued_total += len(batch)
            if not self._pending and self._loop is not None:
                self._loop.call_soon(self._flush)
            self._pending.extend(batch)

    def _flush(self) -> None:
        """Hand the outputs queued on the loop to the thread, in order (before any later commit or abort)."""
        if self._pending:
            self._commands.put(_Produce(self.generation, tuple(self._pending)))
            self._pending = []

    def backlogged(self, wake: Callable[[], None]) -> bool:
        """Whether more than ``transaction_max_records`` outputs wait for the thread (a slow broker): dispatch then
        waits, and ``wake`` is posted to the loop once half of them were taken. Called by the Coordinator's dispatch.

        Each counter has one writer; the flag is set before the backlog is read again, so either this re-read or the
        thread (which reads the flag after counting) sees the other side's update: no wake-up is missed.
        """
        if self._queued_total - self._taken_total <= self._backlog_limit:
            return False
        self._wake = wake
        if self._queued_total - self._taken_total <= self._backlog_limit // 2 or not self.usable:
            self._wake = None
            return False
        return True

    def commit(self, points: list[CommitPoint]) -> asyncio.Future[TransactionOutcome]:
        """Commit the open transaction with these points (of the same moment on the loop); see the module text."""
        done = self._future()
        if not self.usable:
            done.set_result(TransactionOutcome(False, error="the exactly-once producer is not running"))
            return done
        self.produced = 0
        self._flush()
        self._commands.put(_Commit(self.generation, points, done, time.monotonic()))
        return done

    def abort(self, reason: str) -> asyncio.Future[TransactionOutcome]:
        """Abort the open transaction (e.g. partitions were lost: their outputs must not be committed)."""
        done = self._future()
        if not self.usable:
            done.set_result(TransactionOutcome(False, error="the exactly-once producer is not running"))
            return done
        self._flush()
        self._commands.put(_Abort(self.generation, reason, done))
        return done

    async def close(self) -> None:
        """Abort what is still open (nothing, after the stop's last commit) and end the thread (joined on an
        executor thread: the abort may wait for the broker). A thread that ended already (init failed) is joined."""
        self.usable = False
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._commands.put(_Stop(self._future()))
        await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _future(self) -> asyncio.Future[TransactionOutcome]:
        loop = self._loop or asyncio.get_running_loop()
        return loop.create_future()

    def _aborted(self, generation: int, reason: str) -> None:
        """On the loop: the thread aborted a transaction and moved to ``generation``."""
        self._queued_total -= len(self._pending)  # never handed over: outputs of the records being forgotten
        self._pending = []
        self.generation = generation
        self.aborted_transactions += 1
        self.produced = 0
        if self._sink is not None:
            self._sink.on_transaction_aborted(reason)

    def _failed(self, error: BaseException) -> None:
        self.usable = False
        if self._sink is not None:
            self._sink.on_transactions_failed(error)

    def _settle(self, done: asyncio.Future[TransactionOutcome], outcome: TransactionOutcome) -> None:
        if outcome.committed and outcome.results:
            self.committed_transactions += 1
        if not done.done():
            done.set_result(outcome)

    # ---- thread side -----------------------------------------------------------------------------------------

    def _post(self, fn: Callable[..., object], *args: object) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            log.debug("Event loop closed; dropping %s", getattr(fn, "__name__", fn))

    def _run(self, ready: asyncio.Future[TransactionOutcome]) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            producer.init_transactions(_INIT_TIMEOUT_S)
        except KafkaException as exc:
            self._post(self._settle, ready, TransactionOutcome(False, error=str(exc.args[0])))
            return
        self._post(self._settle, ready, TransactionOutcome(True))
        while True:
            try:
                command = self._commands.get(timeout=_IDLE_POLL_S)
            except queue.Empty:
                producer.poll(0)
                continue
            if isinstance(command, _Stop):
                self._stop(producer, command)
                return
            if self._dead:
                if isinstance(command, _Produce):
                    self._taken(len(command.outputs))
                else:
                    self._post(self._settle, command.done, TransactionOutcome(False, error="producer failed"))
                continue
            try:
                self._serve(producer, command)
            except _FatalError as exc:
                if not exc.fenced and self._recover(str(exc)):
                    producer = self._producer or producer
                    if isinstance(command, _Produce):
                        self._taken(len(command.outputs))
                    else:
                        self._post(self._settle, command.done, TransactionOutcome(False, aborted=True, error=str(exc)))
                    continue
                self._fail(command, exc)
            except Exception as exc:  # noqa: BLE001 - a bug: nothing more may be committed, the consumer stops
                self._fail(command, exc)

    def _fail(self, command: _Produce | _Commit | _Abort, exc: Exception) -> None:
        """The producer is done for: settle the command, tell the loop (which stops the consumer)."""
        self._dead = True
        if isinstance(command, _Produce):
            self._taken(len(command.outputs))
        log.error("Exactly-once producer failed: %s; the consumer stops (nothing more is committed)", exc,
                  exc_info=not isinstance(exc, _FatalError))
        if not isinstance(command, _Produce):
            self._post(self._settle, command.done, TransactionOutcome(False, error=str(exc)))
        self._post(self._failed, KafkaException(KafkaError(KafkaError._FATAL, str(exc))))

    def _recover(self, reason: str) -> bool:
        """A fatal producer state that is not fencing (e.g. ``INVALID_TXN_STATE`` after a coordinator's crash): a new
        producer with the same transactional.id takes over. Its ``init_transactions`` bumps the epoch, which aborts
        what the old one left open and fences it; the loop restarts every partition from the last committed
        transaction, as after any abort. At most once per ``_RECOVERY_PERIOD_S``; False when it cannot."""
        now = time.monotonic()
        if now - self._recovered_at < _RECOVERY_PERIOD_S:
            return False
        self._recovered_at = now
        log.warning("The exactly-once producer failed (%s); creating it again, its records run again from the last "
                    "committed transaction", reason)
        try:
            producer = self._clients.transactional_producer(self._config)
            producer.init_transactions(_INIT_TIMEOUT_S)
        except (KafkaException, ValueError) as exc:
            log.error("Creating the exactly-once producer again failed: %s", exc)
            return False
        self._producer = producer
        self._in_transaction = False
        self._transaction_error = None
        self._thread_generation += 1
        self._post(self._aborted, self._thread_generation, f"the producer was created again: {reason}")
        return True

    def _taken(self, count: int) -> None:
        """Count outputs off the queue; post the loop's wake-up once the backlog is down to half its limit."""
        self._taken_total += count
        wake = self._wake
        if wake is not None and self._queued_total - self._taken_total <= self._backlog_limit // 2:
            self._wake = None
            self._post(wake)

    def _serve(self, producer: Producer, command: _Produce | _Commit | _Abort) -> None:
        if command.generation != self._thread_generation:
            if isinstance(command, _Produce):
                self._taken(len(command.outputs))
            else:  # queued before the abort: its transaction is gone
                self._post(self._settle, command.done, _STALE)
            return
        if isinstance(command, _Produce):
            self._produce(producer, command.outputs)
            self._taken(len(command.outputs))
        elif isinstance(command, _Commit):
            self._commit(producer, command)
        else:
            self._abort(producer, command.reason)
            self._post(self._settle, command.done, TransactionOutcome(False, aborted=True, error=command.reason))
        if self._commands.empty():
            producer.poll(0)  # delivery reports, between bursts of commands

    def _begin(self, producer: Producer) -> None:
        if not self._in_transaction:
            try:
                producer.begin_transaction()
            except KafkaException as exc:
                raise _FatalError(f"begin_transaction failed: {exc.args[0]}", exc.args[0]) from exc
            self._in_transaction = True

    def _produce(self, producer: Producer, outputs: tuple[Output, ...]) -> None:
        self._begin(producer)
        if self._transaction_error is not None:
            return  # this transaction aborts at its commit; producing more is pointless
        for output in outputs:
            # No delivery callback per output: a transaction with an undelivered output fails its commit with an
            # abortable error anyway (librdkafka), and a Python call per output would cost the thread the GIL.
            plain = not output.headers and output.partition is None
            while True:
                try:
                    if plain:
                        producer.produce(output.topic, output.value, output.key)
                    else:
                        producer.produce(output.topic, output.value, output.key,
                                         partition=-1 if output.partition is None else output.partition,
                                         headers=list(output.headers) or None)
                    break
                except BufferError:
                    producer.poll(0.1)  # the local queue is full: serve delivery reports, then try again
                except KafkaException as exc:
                    self._transaction_error = f"producing to {output.topic} failed: {exc.args[0]}"
                    return

    def _commit(self, producer: Producer, command: _Commit) -> None:
        started = time.monotonic()
        points = command.points
        if not self._in_transaction and not points:
            self._post(self._settle, command.done, TransactionOutcome(True))
            return
        if self._transaction_error is not None:
            reason = self._transaction_error
            self._abort(producer, reason)
            self._post(self._settle, command.done, TransactionOutcome(False, aborted=True, error=reason))
            return
        self._begin(producer)
        deadline = started + self._timeout_s
        try:
            if points:
                offsets = [TopicPartition(p.topic, p.partition, p.offset, p.metadata) for p in points]
                metadata = self._group_metadata() if self._group_metadata is not None else None
                self._retrying(lambda left: producer.send_offsets_to_transaction(offsets, metadata, left), deadline)
            # A commit that timed out may still be under way on the coordinator (an abort would then conflict with
            # it): librdkafka's advice is to call commit_transaction again, so it gets as long as an abort does.
            commit_deadline = started + max(3 * self._timeout_s, _ABORT_MIN_S)
            self._retrying(lambda left: producer.commit_transaction(left), commit_deadline)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.fatal():
                raise _FatalError(str(error), error) from exc
            reason = f"committing the transaction failed: {error}"
            self._abort(producer, reason)
            self._post(self._settle, command.done, TransactionOutcome(False, aborted=True, error=reason))
            return
        self._in_transaction = False
        latency = time.monotonic() - command.asked
        results = [CommitResult(p, None, latency) for p in points]
        self._post(self._settle, command.done, TransactionOutcome(True, results=results))

    def _retrying(self, call: Callable[[float], object], deadline: float) -> None:
        """``call(timeout)`` again while it fails with a retriable error and the deadline has not passed."""
        while True:
            left = max(deadline - time.monotonic(), 0.5)
            try:
                call(left)
                return
            except KafkaException as exc:
                error = exc.args[0]
                retriable = isinstance(error, KafkaError) and error.retriable() and not error.txn_requires_abort()
                if not retriable or time.monotonic() >= deadline:
                    raise
                log.debug("Transactional call failed with a retriable error (%s); trying again", error)

    def _abort(self, producer: Producer, reason: str) -> None:
        """Abort the open transaction, move to a new generation and tell the loop; _FatalError when even that fails."""
        log.warning("Aborting the transaction: %s; its records run again from the last committed transaction",
                    reason)
        if self._in_transaction:
            try:
                # An abort that times out (the coordinator moving to another broker) may be tried again; give it
                # longer than a commit: giving up here stops the consumer.
                deadline = time.monotonic() + max(3 * self._timeout_s, _ABORT_MIN_S)
                self._retrying(lambda left: producer.abort_transaction(left), deadline)
            except KafkaException as exc:
                raise _FatalError(f"aborting the transaction failed: {exc.args[0]}", exc.args[0]) from exc
        self._in_transaction = False
        self._transaction_error = None
        self._thread_generation += 1
        self._post(self._aborted, self._thread_generation, reason)

    def _stop(self, producer: Producer, command: _Stop) -> None:
        if self._in_transaction and not self._dead:
            try:
                producer.abort_transaction(self._timeout_s)
            except KafkaException as exc:
                log.warning("Aborting the last transaction at stop failed: %s", exc)
        try:
            producer.flush(1.0)
        except KafkaException as exc:  # pragma: no cover - flush reports through callbacks
            log.debug("Flushing the exactly-once producer failed: %s", exc)
        self._post(self._settle, command.done, TransactionOutcome(True))
