"""FaultInjectingClients: the consume app's Kafka clients, whose consumer stalls its poll loop once on request
and sends commits late - two faults of a blue/green validation run.

ConsumeApp creates one and passes it to ``PyrallelConsumer(kafka_clients=...)``; it calls ``stall`` on the
event loop (start-up fault, ``PUT /faults``) and the ``commit_delay_s`` it was given is read at every commit.
The consumer it creates wraps the real confluent-kafka Consumer and is called by the library's BrokerPoller on
the poller thread only, so both faults act there: a stall blocks the next ``poll()`` (past
``max.poll.interval.ms`` the group evicts the member); a delayed asynchronous commit is kept back and sent from
a later ``poll()`` once due, unless its partition was revoked or lost meanwhile (a newer assignment must not
get an older one's commit); a synchronous commit sleeps first. The delay counts in the commit latency the
library reports, as its timer starts before the commit reaches this wrapper.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pyrallel_consumer import KafkaClients

RebalanceCallback = Callable[[Any, list[Any]], None]


class FaultInjectingClients(KafkaClients):
    """KafkaClients whose consumer can be stalled once (``stall``) and whose commits wait ``commit_delay_s()``."""

    def __init__(self, commit_delay_s: Callable[[], float]) -> None:
        self.commit_delay_s = commit_delay_s
        self._stall_s = 0.0
        self._lock = threading.Lock()

    def new_consumer(self, conf: dict[str, Any]) -> Any:
        return _FaultyConsumer(super().new_consumer(conf), self)

    def stall(self, seconds: float) -> None:
        """Block the consumer's next poll() for ``seconds`` (event loop)."""
        with self._lock:
            self._stall_s = seconds

    def take_stall(self) -> float:
        """The stall asked for, once (poller thread)."""
        with self._lock:
            seconds, self._stall_s = self._stall_s, 0.0
        return seconds


class _FaultyConsumer:
    """The real Consumer with the faults in poll() and commit(); everything else is the real one's."""

    def __init__(self, inner: Any, faults: FaultInjectingClients) -> None:
        self._inner = inner
        self._faults = faults
        self._late: list[tuple[float, list[Any]]] = []
        """Asynchronous commits kept back: (when due, their TopicPartitions)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def poll(self, timeout: float) -> Any:
        stall = self._faults.take_stall()
        if stall > 0:
            time.sleep(stall)
        self._send_due()
        return self._inner.poll(timeout)

    def commit(self, offsets: list[Any], asynchronous: bool) -> Any:
        delay = self._faults.commit_delay_s()
        if delay > 0 and asynchronous:
            self._late.append((time.monotonic() + delay, offsets))
            return None
        if delay > 0:
            time.sleep(delay)
        return self._inner.commit(offsets=offsets, asynchronous=asynchronous)

    def subscribe(self, topics: list[str], on_assign: RebalanceCallback, on_revoke: RebalanceCallback,
                  on_lost: RebalanceCallback) -> None:
        """Subscribe with callbacks that see this wrapper (their commits are delayed too) and drop the late
        commits of the partitions that go."""
        def revoked(_consumer: Any, partitions: list[Any]) -> None:
            self._drop(partitions)
            on_revoke(self, partitions)

        def lost(_consumer: Any, partitions: list[Any]) -> None:
            self._drop(partitions)
            on_lost(self, partitions)

        self._inner.subscribe(topics, on_assign=lambda _consumer, partitions: on_assign(self, partitions),
                              on_revoke=revoked, on_lost=lost)

    def _drop(self, partitions: list[Any]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._late = [(due, [tp for tp in offsets if (tp.topic, tp.partition) not in gone])
                      for due, offsets in self._late]

    def _send_due(self) -> None:
        now = time.monotonic()
        due = [offsets for when, offsets in self._late if when <= now and offsets]
        if due:
            self._late = [(when, offsets) for when, offsets in self._late if when > now]
            for offsets in due:
                self._inner.commit(offsets=offsets, asynchronous=True)
