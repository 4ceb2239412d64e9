"""The fetch gate sizes each fetch from the level the loop published and what the poller fetched meanwhile."""

from __future__ import annotations

import pytest

from pyrallel_consumer.kafka import fetch_gate
from pyrallel_consumer.kafka.fetch_gate import FetchGate, QueueLevel

pytestmark = pytest.mark.unit


def test_one_record_first_then_batches_sized_by_the_bytes_left() -> None:
    gate = FetchGate(queue_max_messages=1000, queue_max_bytes=10_000, batch_size=50)
    assert gate.next_fetch() == 1, "record sizes are unknown before the first fetch"
    gate.fetched(1, 100)
    gate.ingested(1, 100)
    assert gate.next_fetch() == 50
    gate.publish(QueueLevel(10, 9_000, frozenset()))
    assert gate.next_fetch() == 10, "1,000 bytes left, records of about 100 bytes"


def test_the_gate_closes_on_a_full_queue_counting_what_the_loop_has_not_taken_in() -> None:
    gate = FetchGate(queue_max_messages=100, queue_max_bytes=10**9, batch_size=10)
    gate.fetched(1, 0)
    gate.publish(QueueLevel(99, 0, frozenset()))
    assert gate.next_fetch() == 0
    gate.ingested(1, 0)
    assert gate.next_fetch() == 10
    gate.fetched(20, 0)
    gate.publish(QueueLevel(0, 0, frozenset()))
    assert gate.next_fetch() == 0, "two batches fetched and not taken in: wait for the loop"


def test_a_gate_closed_too_long_pauses_everything_until_half_the_queue_drained(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(fetch_gate.time, "monotonic", lambda: now[0])
    gate = FetchGate(queue_max_messages=100, queue_max_bytes=10**9, batch_size=10)
    gate.publish(QueueLevel(100, 0, frozenset()))
    assert gate.next_fetch() == 0
    now[0] = 1.0
    assert gate.next_fetch() == 10 and gate.paused, "poll on (every partition paused) to stay in the group"
    gate.publish(QueueLevel(51, 0, frozenset()))
    assert gate.next_fetch() == 10 and gate.paused
    gate.publish(QueueLevel(50, 0, frozenset()))
    assert gate.next_fetch() == 10 and not gate.paused
