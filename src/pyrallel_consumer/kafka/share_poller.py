"""SharePoller: the one thread that owns the confluent-kafka ShareConsumer of a share group (KIP-932).

The ShareConsumer refuses calls from two threads at once (ConcurrentModificationException) and, in explicit
acknowledgement mode, refuses to poll again before every record of the previous poll was acknowledged. So this
thread polls one batch, hands it to the event loop (``ShareSink.on_acquired``), then only runs the loop's
acknowledgements (a command queue) until the whole batch is acknowledged; the next poll sends them, and those
settled meanwhile go out on their own every 0.1 s (a poll may return far more records than ``max_in_flight``).
The broker's answers come back through the acknowledgement-commit callback, on this thread, and go to the loop
(``ShareSink.on_acknowledged``). Paused, it acquires nothing more and, once every acquired record is acknowledged,
leaves the group (closes the ShareConsumer): a member that stops polling would keep the partitions the group
assigned to it starved until ``max.poll.interval.ms`` expels it. A resume joins again with a new ShareConsumer.

PyrallelShareConsumer creates it and calls its public methods on the event loop; everything prefixed ``_`` runs
on the poller thread. docs/decisions.md, "Share groups", says what the client allows and why this shape.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from confluent_kafka import AcknowledgeType, KafkaException, Message, ShareConsumer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.deserialization import Deserialized
from pyrallel_consumer.kafka.clients import KafkaClients, close_quietly
from pyrallel_consumer.kafka.deserializing import RecordDeserializer, typed_record
from pyrallel_consumer.kafka.inbox import record_of
from pyrallel_consumer.kafka.poller_thread import PollerThread
from pyrallel_consumer.record import Record

log = logging.getLogger(__name__)

AckKind = Literal["accept", "release", "reject"]
ACK_KINDS: tuple[AckKind, ...] = ("accept", "release", "reject")
_ACK_TYPES = {"accept": AcknowledgeType.ACCEPT, "release": AcknowledgeType.RELEASE, "reject": AcknowledgeType.REJECT}
_POLL_TIMEOUT_S = 0.1
_COMMAND_WAIT_S = 0.05
_CLOSE_COMMIT_TIMEOUT_S = 10.0
_ACK_SEND_INTERVAL_S = 0.1
"""How often the acknowledgements of a batch still being handled are sent on their own (commit_async)."""
_SETTINGS_TIMEOUT_S = 10.0
RecordKey = tuple[str, int, int]
"""(topic, partition, offset): one acquired record."""


@dataclass(frozen=True, slots=True)
class ShareGroupSettings:
    """What the broker decides for the group and the library must respect: read once at start."""

    lock_duration_s: float
    """``share.record.lock.duration.ms``: how long an acquired record is this member's."""
    delivery_limit: int
    """``share.delivery.count.limit``: the delivery after which a released record is archived, never redelivered."""


@dataclass(frozen=True, slots=True)
class Acquired:
    """One record this member acquired, as the loop gets it."""

    record: Record
    delivery_count: int
    """1 on the first delivery; the broker counts every release and lock expiry."""
    lock_deadline: float
    """``time.monotonic()`` when the lock ends at the latest, counted from the start of the poll that returned the
    record."""
    deserialized: Deserialized = None


class ShareSink(Protocol):
    """The loop side (PyrallelShareConsumer); every method is called on the event loop."""

    def on_acquired(self, batch: list[Acquired]) -> None: ...

    def on_acknowledged(self, kind: AckKind, count: int, ok: bool) -> None:
        """The broker applied (ok) or refused (its lock had expired) ``count`` acknowledgements of ``kind``."""

    def on_poller_failed(self, error: BaseException) -> None: ...


def prepare_share_group(config: ConsumerConfig, clients: KafkaClients) -> ShareGroupSettings:
    """Set the group's ``share.auto.offset.reset`` to ``auto_offset_reset`` when it differs, and read its lock
    duration and delivery limit (the broker's defaults for a group that sets none).

    The broker's default is latest: a new group would never see the records produced before its first member
    joined. The setting only counts when a partition's share state is first made, so it is written before this
    member joins; an existing group's start point does not move. Called on an executor thread by
    PyrallelShareConsumer.start(); raises KafkaException when no broker answers or the group's configuration may
    not be altered (ALTER_CONFIGS on the group).
    """
    errors: list[Any] = []
    admin = clients.admin(config, errors.append)
    resource = ConfigResource(ResourceType.GROUP, config.group_id)
    entries = admin.describe_configs([resource], request_timeout=_SETTINGS_TIMEOUT_S)[resource].result(
        timeout=_SETTINGS_TIMEOUT_S)
    if entries["share.auto.offset.reset"].value != config.auto_offset_reset:
        change = ConfigResource(ResourceType.GROUP, config.group_id, incremental_configs=[
            ConfigEntry("share.auto.offset.reset", config.auto_offset_reset,
                        incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([change], request_timeout=_SETTINGS_TIMEOUT_S)[change].result(
            timeout=_SETTINGS_TIMEOUT_S)
        log.info("Share group %s: share.auto.offset.reset set to %s", config.group_id, config.auto_offset_reset)
    return ShareGroupSettings(lock_duration_s=int(entries["share.record.lock.duration.ms"].value) / 1000.0,
                              delivery_limit=int(entries["share.delivery.count.limit"].value))


class SharePoller:
    """Polls a batch, waits for its acknowledgements, sends them with the next poll."""

    def __init__(self, config: ConsumerConfig, clients: KafkaClients, sink: ShareSink,
                 loop: asyncio.AbstractEventLoop, settings: ShareGroupSettings,
                 deserializer: RecordDeserializer | None) -> None:
        self._config = config
        self._clients = clients
        self._sink = sink
        self._settings = settings
        self._deserializer = deserializer
        self._thread: PollerThread[ShareConsumer | None] = PollerThread(loop, "pyrallel-share-poller",
                                                                        sink.on_poller_failed)
        self._commands = self._thread.commands
        self._outstanding: dict[RecordKey, Message] = {}
        """Records of the last poll not acknowledged yet (poller thread)."""
        self._sent: dict[RecordKey, AckKind] = {}
        """Acknowledged records whose broker answer has not come (poller thread)."""
        self._unsent = False
        self._last_send = 0.0
        self._paused = threading.Event()
        self.out_of_group = asyncio.Event()
        """Set (on the loop) once a pause left the group, cleared once a resume joined it again."""

    # ---- loop side -------------------------------------------------------------------------------------

    def start(self, paused: bool) -> None:
        """Create the ShareConsumer here, so a bad property fails the caller, then hand it to the thread, which
        joins the group with it (``paused``: only at the first resume, with a new one)."""
        consumer: ShareConsumer | None = self._client()
        if paused and consumer is not None:
            close_quietly(consumer, "Kafka share consumer")
            consumer = None
            self._paused.set()
            self.out_of_group.set()
        self._thread.start(lambda: self._run(consumer))

    def acknowledge(self, record: Record, kind: AckKind) -> None:
        """Settle ``record``; its acknowledgement goes to the broker with the next poll or commit."""
        key = (record.topic, record.partition, record.offset)
        self._commands.put(lambda consumer: self._acknowledge(consumer, key, kind))

    def pause(self) -> None:
        """Acquire nothing more; what is acquired is still acknowledged (and sent) as it settles, then the member
        leaves the group (``out_of_group``)."""
        self._paused.set()

    def resume(self) -> None:
        """Join the group again (when a pause left it) and acquire records."""
        self._paused.clear()

    async def close(self) -> None:
        """Send the outstanding acknowledgements, leave the group and end the thread (gone on return)."""
        await self._thread.close()

    # ---- poller thread ---------------------------------------------------------------------------------

    def _client(self) -> ShareConsumer:
        consumer = self._clients.share_consumer(self._config)
        consumer.set_acknowledgement_commit_callback(self._on_commit)
        return consumer

    def _run(self, first: ShareConsumer | None) -> None:
        consumer = first
        stopping = self._thread.stopping
        try:
            if consumer is not None:
                consumer.subscribe(list(self._config.topics))
            while not stopping.is_set():
                if consumer is None:  # out of the group while paused
                    self._thread.run_commands(None)
                    if not self._paused.is_set():
                        consumer = self._client()
                        consumer.subscribe(list(self._config.topics))
                        self._thread.post(self.out_of_group.clear)
                    else:
                        stopping.wait(_COMMAND_WAIT_S)
                elif self._paused.is_set() and not self._outstanding:
                    self._leave(consumer)
                    consumer = None
                elif self._outstanding:
                    self._wait_for_commands(consumer)
                else:
                    self._poll(consumer)
            if consumer is not None:
                self._thread.run_commands(consumer)
                if self._outstanding:
                    # Only a stop that did not wait for its records leaves some: they go back to the group now.
                    for key in list(self._outstanding):
                        self._acknowledge(consumer, key, "release")
                consumer.commit_sync(_CLOSE_COMMIT_TIMEOUT_S)
        finally:
            if consumer is not None:
                close_quietly(consumer, "Kafka share consumer")

    def _leave(self, consumer: ShareConsumer) -> None:
        """Paused with every record acknowledged: send the acknowledgements and leave the group."""
        consumer.commit_sync(_CLOSE_COMMIT_TIMEOUT_S)
        close_quietly(consumer, "Kafka share consumer")
        log.info("Share group %s left while paused", self._config.group_id)
        self._thread.post(self.out_of_group.set)

    def _poll(self, consumer: ShareConsumer) -> None:
        self._unsent = False
        # The broker starts the locks while poll() waits for records: counted from the call, not from its return.
        deadline = time.monotonic() + self._settings.lock_duration_s
        messages = [m for m in consumer.poll(_POLL_TIMEOUT_S) if self._usable(m)]
        if not messages:
            return
        contents = self._deserializer.messages(messages) if self._deserializer is not None else None
        batch = []
        for index, msg in enumerate(messages):
            record = record_of(msg)
            result = contents[index] if contents is not None else None
            deserialized = typed_record(record, result) if isinstance(result, tuple) else result
            self._outstanding[(record.topic, record.partition, record.offset)] = msg
            batch.append(Acquired(record, msg.delivery_count() or 1, deadline, deserialized))
        self._thread.post(self._sink.on_acquired, batch)

    @staticmethod
    def _usable(msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.fatal():
            raise KafkaException(err)
        log.warning("Share fetch error: %s", err)
        return False

    def _wait_for_commands(self, consumer: ShareConsumer) -> None:
        try:
            command = self._commands.get(timeout=_COMMAND_WAIT_S)
        except queue.Empty:
            pass
        else:
            command(consumer)
        self._thread.run_commands(consumer)
        if self._unsent and (self._outstanding or self._paused.is_set()) \
                and time.monotonic() - self._last_send >= _ACK_SEND_INTERVAL_S:
            # No poll carries them before the whole batch is settled (or while paused): send them on their own, so
            # a member that dies mid-batch leaves only its unsettled records to be delivered again.
            self._unsent = False
            self._last_send = time.monotonic()
            consumer.commit_async()

    def _acknowledge(self, consumer: ShareConsumer | None, key: RecordKey, kind: AckKind) -> None:
        msg = self._outstanding.pop(key, None)
        if msg is None or consumer is None:
            return
        consumer.acknowledge(msg, _ACK_TYPES[kind])
        self._sent[key] = kind
        self._unsent = True

    def _on_commit(self, offsets: dict[Any, set[int]], exc: KafkaException | None) -> None:
        """The broker's answer to acknowledgements (poll, commit or close), on this thread."""
        counts: dict[AckKind, int] = {}
        for tp, partition_offsets in offsets.items():
            for offset in partition_offsets:
                kind = self._sent.pop((tp.topic, tp.partition, offset), None)
                if kind is not None:
                    counts[kind] = counts.get(kind, 0) + 1
        if exc is not None:
            log.warning("The broker refused %d acknowledgement(s) (their records' locks had expired; they are "
                        "delivered again): %s", sum(counts.values()), exc)
        for kind, count in counts.items():
            self._thread.post(self._sink.on_acknowledged, kind, count, exc is None)
