"""Exhaustion calls a refusing policy again with a backoff, and lets go of a record only when the policy does."""

from __future__ import annotations

import asyncio

import pytest

from pyrallel_consumer import ConsumerConfig, Record
from pyrallel_consumer.control.exhaustion import Exhaustion
from pyrallel_consumer.control.offset_tracker import PartitionOffsets
from pyrallel_consumer.control.work_manager import QueuedRecord
from pyrallel_consumer.execution.engine import Completion

pytestmark = pytest.mark.unit

CONFIG = ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"], retry_backoff_ms=1,
                        max_retry_backoff_ms=1)


class RefuseTwice:
    outcome = "parked"

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, record: Record, completion: Completion) -> bool:
        self.calls += 1
        return self.calls > 2


def _item() -> QueuedRecord:
    return QueuedRecord(1, Record("t", 0, 0, b"k", b"v"), PartitionOffsets(("t", 0), 1, None, max_window=100))


def test_a_refusing_policy_is_called_again_until_it_lets_the_record_go() -> None:
    async def scenario() -> None:
        policy, released = RefuseTwice(), []
        exhaustion = Exhaustion(policy, CONFIG, lambda item, completion: released.append(item))
        item = _item()
        exhaustion.handle(item, Completion(1, False, 3, 0.1))
        assert exhaustion.handling(1)
        await asyncio.gather(*exhaustion._tasks.values())
        assert not exhaustion.handling(1)
        assert (policy.calls, released, exhaustion.outcome) == (3, [item], "parked")

    asyncio.run(scenario())


def test_a_record_whose_assignment_ended_is_left_incomplete() -> None:
    async def scenario() -> None:
        released: list[QueuedRecord] = []
        exhaustion = Exhaustion(RefuseTwice(), CONFIG, lambda item, completion: released.append(item))
        item = _item()
        item.offsets.current = False  # revoked while the policy refused
        exhaustion.handle(item, Completion(1, False, 3, 0.1))
        await asyncio.gather(*exhaustion._tasks.values())
        assert released == [], "the next owner handles it again"

    asyncio.run(scenario())

