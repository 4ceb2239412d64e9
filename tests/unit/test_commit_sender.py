"""CommitSender measures a commit's latency from the first time its point was sent."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from pyrallel_consumer.control.offset_tracker import PartitionOffsets
from pyrallel_consumer.kafka import commits
from pyrallel_consumer.kafka.commits import CommitSender
from pyrallel_consumer.kafka.events import CommitResult

pytestmark = pytest.mark.unit


class NoBroker:
    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        return None


def test_a_point_sent_again_before_its_acknowledgement_keeps_its_first_send_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(commits.time, "monotonic", lambda: now[0])
    results: list[CommitResult] = []
    sender = CommitSender({("t", 0): 1}, results.extend)
    tracker = PartitionOffsets(("t", 0), 1, 5, max_window=100)
    tracker.receive(5)
    tracker.complete(5)
    point = tracker.commit_point()
    assert point is not None
    sender.send(NoBroker(), [point], sync=False)
    now[0] = 0.2
    sender.send(NoBroker(), [point], sync=False)  # the periodic commit, before the first was acknowledged
    now[0] = 0.5
    sender.on_commit(None, [TopicPartition("t", 0, 6)])
    assert [(r.point, r.error, r.latency_s) for r in results] == [(point, None, 0.5)]
