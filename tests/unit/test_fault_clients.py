"""The consume app's fault-injecting consumer: late commits are sent when due unless their partition went."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from pyrallel_consumer.kafka.clients import KafkaClients
from pyrallel_tools.bluegreen import fault_clients
from pyrallel_tools.bluegreen.fault_clients import FaultInjectingClients

pytestmark = pytest.mark.unit


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[list[tuple[str, int, int]], bool]] = []
        self.callbacks: dict[str, Any] = {}

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(([(tp.topic, tp.partition, tp.offset) for tp in offsets], asynchronous))

    def poll(self, timeout: float) -> None:
        return None

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks


def _consumer(monkeypatch: pytest.MonkeyPatch, delay_s: float,
              clients: FaultInjectingClients | None = None) -> tuple[Any, FakeConsumer, list[float]]:
    """The wrapper around a fake consumer, on a clock that sleeping moves on."""
    now, fake = [0.0], FakeConsumer()
    monkeypatch.setattr(fault_clients.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(fault_clients.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    monkeypatch.setattr(KafkaClients, "new_consumer", lambda self, conf: fake)
    clients = clients or FaultInjectingClients(lambda: delay_s)
    return clients.new_consumer({}), fake, now


def test_a_late_commit_is_sent_from_a_poll_once_due(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, fake, now = _consumer(monkeypatch, 2.0)
    consumer.commit(offsets=[TopicPartition("t", 0, 5)], asynchronous=True)
    consumer.poll(0.1)
    assert fake.commits == []
    now[0] = 2.0
    consumer.poll(0.1)
    assert fake.commits == [([("t", 0, 5)], True)]


def test_a_late_commit_of_a_revoked_partition_is_dropped_and_sync_commits_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, fake, now = _consumer(monkeypatch, 2.0)
    seen: list[Any] = []
    consumer.subscribe(["t"], on_assign=lambda c, p: None, on_revoke=lambda c, p: seen.append(c),
                       on_lost=lambda c, p: None)
    consumer.commit(offsets=[TopicPartition("t", 0, 5), TopicPartition("t", 1, 7)], asynchronous=True)
    fake.callbacks["on_revoke"](fake, [TopicPartition("t", 0)])
    assert seen == [consumer], "the library's callback commits through the wrapper"
    consumer.commit(offsets=[TopicPartition("t", 1, 8)], asynchronous=False)
    assert now[0] == 2.0 and fake.commits == [([("t", 1, 8)], False)]
    consumer.poll(0.1)
    assert fake.commits[1:] == [([("t", 1, 7)], True)], "t[0] was revoked: its late commit is not sent"


def test_a_stall_blocks_the_next_poll_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clients = FaultInjectingClients(lambda: 0.0)
    consumer, _fake, now = _consumer(monkeypatch, 0.0, clients)
    clients.stall(8.0)
    consumer.poll(0.1)
    consumer.poll(0.1)
    assert now[0] == 8.0
