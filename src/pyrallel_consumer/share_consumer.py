"""PyrallelShareConsumer: a share group's records (KIP-932) handled by the chosen engine, acknowledged one by one.

The SharePoller thread acquires a batch; this class, on the event loop, runs each record with the engine (the
retries with backoff of ``max_retries`` are the engine's), at most ``max_in_flight`` at once, and settles it:

* success -> ACCEPT;
* failure after the local retries -> RELEASE while the broker will deliver it again (delivery count below the
  group's ``share.delivery.count.limit``); at the last delivery -> the dead-letter copy, acknowledged by the broker,
  then ACCEPT (``dlq_enabled``), else REJECT (archived, logged);
* a record that cannot be deserialized -> straight to that last step (it would fail at every delivery);
* its lock about to expire (``share.record.lock.duration.ms``, read from the group at start) before it settled ->
  the engine's work is cancelled, RELEASE, counted as a lock expiry; a late result is never acknowledged.

Pause / resume / status are the consumer group's ``Lifecycle`` (and HTTP control server, ``control_port``), driving
``_Intake``: a pause acquires nothing more, settles what is held and leaves the group; a resume joins again.

docs/decisions.md ("Share groups ...") argues the shape; README "Share groups" shows the use.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from pyrallel_consumer.config import ConfigError, ConsumerConfig
from pyrallel_consumer.control.lifecycle import Lifecycle, PositionsRefusedError
from pyrallel_consumer.control.positions import Position
from pyrallel_consumer.control_server import HttpServer, create_control_server
from pyrallel_consumer.deserialization import DeserializationError
from pyrallel_consumer.event_wait import wait_event
from pyrallel_consumer.execution import create_engine
from pyrallel_consumer.execution.engine import Completion, ExecutionEngine, WorkItem, poisoned
from pyrallel_consumer.kafka.clients import KafkaClients
from pyrallel_consumer.kafka.dead_letter import DeadLetterPublisher
from pyrallel_consumer.kafka.deserializing import RecordDeserializer
from pyrallel_consumer.kafka.share_poller import (
    AckKind,
    Acquired,
    ShareGroupSettings,
    SharePoller,
    prepare_share_group,
)
from pyrallel_consumer.observability import tracing_for
from pyrallel_consumer.observability.metrics_server import MetricsServer
from pyrallel_consumer.observability.share_metrics import ShareMetricsSnapshot, ShareStats

log = logging.getLogger(__name__)

LOCK_MARGIN_S = 0.5
"""A record not settled this long before its lock ends is released: the RELEASE must reach the broker in time."""
_DLQ_RETRY_S = 0.5
_LEAVE_TIMEOUT_S = 30.0
"""How long a pause waits for the member to leave the group once its records settled."""


@dataclass(slots=True)
class _Held:
    """One acquired record until it is acknowledged."""

    acquired: Acquired
    expiry: asyncio.TimerHandle | None = None
    running: bool = False
    settling: asyncio.Task[None] | None = field(default=None)


class PyrallelShareConsumer:
    """Consume ``config.topics`` as a member of the share group ``config.group_id`` (``group_type="share"``).

    ``async with PyrallelShareConsumer(config, handle) as consumer:`` starts on enter and drains on exit; the
    handler is the same as PyrallelConsumer's (``async def handle(record)``, or an importable function for
    ``engine="process"``). Many instances, and more instances than partitions, share the records.
    """

    def __init__(self, config: ConsumerConfig, handler: Any = None, *, engine: ExecutionEngine | None = None,
                 kafka_clients: KafkaClients | None = None) -> None:
        if not isinstance(config, ConsumerConfig):
            raise TypeError("config must be a ConsumerConfig")
        if config.group_type != "share":
            raise ConfigError("PyrallelShareConsumer needs group_type='share' (a consumer group is PyrallelConsumer's)")
        if handler is None and engine is None:
            raise TypeError("PyrallelShareConsumer needs a handler: PyrallelShareConsumer(config, handle)")
        self.config = config
        self._tracing = tracing_for(config)
        """With ``tracing_enabled``: a span per delivery of a record, from dispatch until it is settled."""
        self._engine = engine if engine is not None else create_engine(config, handler, tracing=self._tracing)
        self._clients = kafka_clients or KafkaClients()
        self._dead_letters = (DeadLetterPublisher(config, self._clients, tracing=self._tracing) if config.dlq_enabled
                              else None)
        self._stats = ShareStats(config)
        self.metrics_registry = CollectorRegistry()
        """This consumer's own Prometheus registry (served on ``metrics_port`` when set)."""
        self.metrics_registry.register(self._stats)
        self._metrics_server = MetricsServer(self.metrics_registry, config.metrics_port, config.metrics_host)
        self._deserializer = (None if self._engine.deserializes_records
                              else RecordDeserializer.of(config.key_deserializer, config.value_deserializer))
        self._poller: SharePoller | None = None
        self._settings: ShareGroupSettings | None = None
        self._held: dict[int, _Held] = {}
        self._waiting: collections.deque[int] = collections.deque()
        self._running = 0
        """Held records the engine is handling now (at most max_in_flight)."""
        self._ids = itertools.count()
        self._settled = asyncio.Event()
        self._failure: BaseException | None = None
        self._stopped = asyncio.Event()
        self._started = False
        self.lifecycle = Lifecycle(_Intake(self), config, self._stats)
        """Pause, resume and status, as PyrallelConsumer's (``await consumer.lifecycle.pause()``)."""
        self.control_server: HttpServer | None = None
        """The HTTP lifecycle API when ``config.control_port`` is set."""
        if config.control_port is not None:
            self.control_server = create_control_server(config, self.lifecycle)

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Set where a new group starts (``auto_offset_reset``), read the group's lock duration and delivery limit,
        start the engine, then acquire records."""
        if self._started:
            raise RuntimeError("PyrallelShareConsumer.start() was called twice; create a new consumer")
        self._started = True
        loop = asyncio.get_running_loop()
        try:
            self._settings = await loop.run_in_executor(None, prepare_share_group, self.config, self._clients)
            await self._engine.start(self._on_complete)
            self._metrics_server.start()
            self._poller = SharePoller(self.config, self._clients, self, loop, self._settings, self._deserializer)
            self._poller.start(paused=self.config.start_paused)
            self.lifecycle.started()
            if self.control_server is not None:
                await self.control_server.start()
        except BaseException:
            await self.stop(drain=False)  # what started so far: poller thread, engine, metrics server
            raise
        log.info("Share consumer started: group %s, topics %s, %s, lock %gs, delivery limit %d",
                 self.config.group_id, ", ".join(self.config.topics), self.lifecycle.state.value,
                 self._settings.lock_duration_s, self._settings.delivery_limit)

    async def stop(self, drain: bool = True) -> None:
        """drain=True: acquire nothing more and settle what is held (up to ``drain_timeout_ms``); what is left,
        or everything with drain=False, is released to the group. Then leave the group."""
        if self._stopped.is_set():
            return
        poller = self._poller
        try:
            if poller is not None:
                await self._give_back(drain)
                await poller.close()
            await self._engine.shutdown(drain=False, timeout_s=0.0)
        finally:
            if self.control_server is not None:
                await self.control_server.close()
            if self._dead_letters is not None:
                self._dead_letters.close()
            self.lifecycle.stopped()
            self._metrics_server.stop()
            self._stopped.set()

    async def _give_back(self, drain: bool) -> None:
        """Acquire nothing more; ``drain``: wait up to ``drain_timeout_ms`` for what is held to settle. What is
        still held is released to the group."""
        if self._poller is None:
            raise RuntimeError("the share consumer has not started")
        self._poller.pause()
        if drain and self._held:
            self._settled.clear()
            if not await wait_event(self._settled, self.config.drain_timeout_ms / 1000.0):
                log.warning("%d record(s) still unsettled after the drain timeout: released", len(self._held))
        for item_id in list(self._held):
            self._release(item_id, expired=False)

    async def wait_stopped(self) -> None:
        """Wait until the consumer stopped; raise the error that stopped it, if any."""
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on (the one the OS picked for metrics_port=0), None when not serving."""
        return self._metrics_server.port

    def metrics(self) -> ShareMetricsSnapshot:
        """Counts since start and what is held now; also served as ``pyrallel_share_*`` metrics."""
        self._stats.in_flight = len(self._held)
        return self._stats.snapshot()

    async def __aenter__(self) -> PyrallelShareConsumer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop(drain=True)

    # ---- ShareSink (event loop) ----------------------------------------------------------------------------

    def on_acquired(self, batch: list[Acquired]) -> None:
        loop = asyncio.get_running_loop()
        for acquired in batch:
            item_id = next(self._ids)
            held = self._held[item_id] = _Held(acquired)
            self._stats.record_acquired(acquired.delivery_count)
            held.expiry = loop.call_at(self._loop_time(acquired.lock_deadline - LOCK_MARGIN_S),
                                       self._release, item_id, True)
            if isinstance(acquired.deserialized, DeserializationError):
                self._on_failed(item_id, poisoned(item_id, acquired.deserialized))
            else:
                self._waiting.append(item_id)
        self._dispatch()

    def on_acknowledged(self, kind: AckKind, count: int, ok: bool) -> None:
        if ok:
            self._stats.acknowledged[kind] += count
        else:
            self._stats.refused += count

    def on_poller_failed(self, error: BaseException) -> None:
        log.error("The share consumer stops: %r", error)
        self._failure = error
        asyncio.get_running_loop().create_task(self.stop(drain=False))

    # ---- settling ----------------------------------------------------------------------------------------

    @staticmethod
    def _loop_time(monotonic_deadline: float) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + (monotonic_deadline - time.monotonic())

    def _dispatch(self) -> None:
        """Start waiting records while fewer than ``max_in_flight`` run. A poll may return far more records than
        ``max.poll.records`` (the broker keeps its record batches whole: 10,000 were seen), so nothing here walks
        the held records."""
        while self._waiting and self._running < self.config.max_in_flight:
            item_id = self._waiting.popleft()
            held = self._held.get(item_id)
            if held is None:
                continue
            held.running = True
            self._running += 1
            acquired = held.acquired
            item = WorkItem(item_id, acquired.record, deserialized=acquired.deserialized)
            if self._tracing is not None:
                self._tracing.record_started(item)
            self._engine.submit(item)

    def _on_complete(self, completion: Completion) -> None:
        held = self._held.get(completion.item_id)
        if held is None:
            return  # released when its lock was about to expire: the late result is not acknowledged
        held.running = False
        self._running -= 1
        if completion.ok:
            self._settle(completion.item_id, "accept")
        else:
            self._on_failed(completion.item_id, completion)
        self._dispatch()

    def _on_failed(self, item_id: int, completion: Completion) -> None:
        held = self._held[item_id]
        if self._tracing is not None:
            self._tracing.record_failed(item_id, completion.error_type, completion.error_message)
        last_delivery = held.acquired.delivery_count >= self._delivery_limit()
        poison = completion.error_type in ("KeyDeserializationError", "ValueDeserializationError")
        if not (last_delivery or poison):
            self._settle(item_id, "release")
        elif self._dead_letters is not None:
            context = self._tracing.task_context(item_id) if self._tracing is not None else None
            held.settling = asyncio.get_running_loop().create_task(self._dead_letter(item_id, completion),
                                                                   context=context)
        else:
            record = held.acquired.record
            log.warning("Rejected %s[%d]@%d after delivery %d (%s: %s); no dead-letter topic: the broker archives "
                        "it", record.topic, record.partition, record.offset, held.acquired.delivery_count,
                        completion.error_type, completion.error_message)
            self._settle(item_id, "reject")

    async def _dead_letter(self, item_id: int, completion: Completion) -> None:
        """Write the copy until the broker acknowledges it (the lock expiry releases the record if it never
        does), then accept the record."""
        publisher = self._dead_letters
        if publisher is None:
            raise RuntimeError("dead-lettering without a publisher")
        while item_id in self._held:
            if await publisher(self._held[item_id].acquired.record, completion):
                self._stats.dead_lettered += 1
                self._settle(item_id, "accept")
                return
            await asyncio.sleep(_DLQ_RETRY_S)

    def _delivery_limit(self) -> int:
        if self._settings is None:
            raise RuntimeError("the share consumer has not started")
        return self._settings.delivery_limit

    def _release(self, item_id: int, expired: bool) -> None:
        """Give the record back to the group; ``expired``: its lock was about to run out (counted)."""
        held = self._held.get(item_id)
        if held is None:
            return
        if held.running:
            self._engine.cancel([item_id])
            if self._tracing is not None:
                self._tracing.record_cancelled(item_id, held.acquired.record)
        if held.settling is not None:
            held.settling.cancel()
        if expired:
            self._stats.lock_expired += 1
            record = held.acquired.record
            log.warning("The lock of %s[%d]@%d runs out before it settled: released (delivery %d)", record.topic,
                        record.partition, record.offset, held.acquired.delivery_count)
        self._settle(item_id, "release")
        self._dispatch()

    def _settle(self, item_id: int, kind: AckKind) -> None:
        held = self._held.pop(item_id)
        if held.running:  # released while the engine handled it (cancelled)
            self._running -= 1
        if self._tracing is not None:
            self._tracing.record_finished(item_id)
        if held.expiry is not None:
            held.expiry.cancel()
        if self._poller is not None:
            self._poller.acknowledge(held.acquired.record, kind)
        if not self._held:
            self._settled.set()


class _Intake:
    """The share consumer as its Lifecycle drives it (``control.lifecycle.Suspendable``), on the event loop.

    A paused share member leaves the group: the group assigns partitions to members, and one that stopped polling
    would keep its partitions' records from the others until ``max.poll.interval.ms`` expelled it (so
    ``pause_mode='hold'`` is refused for share groups). Nothing is handed over: the broker keeps the group's
    progress, so a share group has no positions.
    """

    def __init__(self, consumer: PyrallelShareConsumer) -> None:
        self._consumer = consumer

    async def suspend(self, release: bool) -> None:
        consumer = self._consumer
        poller = consumer._poller
        if poller is None or consumer._stopped.is_set():
            return
        await consumer._give_back(drain=True)
        if not await wait_event(poller.out_of_group, _LEAVE_TIMEOUT_S):
            log.warning("The paused share consumer has not left group %s after %gs", consumer.config.group_id,
                        _LEAVE_TIMEOUT_S)

    async def activate(self) -> None:
        poller = self._consumer._poller
        if poller is not None and not self._consumer._stopped.is_set():
            poller.resume()

    async def take_positions(self, positions: Sequence[Position]) -> None:
        raise PositionsRefusedError("a share group has no positions to hand over: the broker keeps its progress")

    @property
    def broker_answered(self) -> bool:
        """start() read the group's settings from a broker."""
        return self._consumer._settings is not None

    def lifecycle_status(self) -> dict[str, Any]:
        snapshot = self._consumer.metrics()
        return {
            "in_flight": snapshot.in_flight,
            "records_acquired": snapshot.acquired,
            "records_succeeded": snapshot.acknowledged["accept"] - snapshot.dead_lettered,
            "acknowledgements": snapshot.acknowledged,
            "lock_expiries": snapshot.lock_expired,
            "dead_lettered": snapshot.dead_lettered,
        }
