"""StuckGuard fails the in-flight record that blocks its partition's commit past max_blocking_ms."""

from __future__ import annotations

import asyncio

import pytest
from tests.support import wait_for

from pyrallel_consumer import ConsumerConfig, Ordering, Record
from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.control.exhaustion import Exhaustion
from pyrallel_consumer.control.stuck_guard import StuckGuard
from pyrallel_consumer.control.work_manager import QueuedRecord, WorkManager
from pyrallel_consumer.execution.engine import Completion
from pyrallel_consumer.kafka.events import Assignment

pytestmark = pytest.mark.unit


def test_the_blocking_record_is_failed_and_the_ones_behind_it_are_not() -> None:
    async def scenario() -> None:
        config = ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"], max_blocking_ms=100,
                                ordering=Ordering.UNORDERED)
        assignments, work = Assignments(100), WorkManager(config.ordering)
        assignments.assign(Assignment("t", 0, 1, -1, None))
        tracker = assignments.of(("t", 0))
        assert tracker is not None
        for offset in range(3):
            tracker.receive(offset)
            work.add(Record("t", 0, offset, None, b"v"), tracker)
        blocking, _second, third = work.next_ready(), work.next_ready(), work.next_ready()
        assert blocking is not None and third is not None
        work.finish(third)
        tracker.complete(2)
        failed: list[tuple[QueuedRecord, Completion]] = []
        exhaustion = Exhaustion(None, config, lambda item, completion: None)
        guard = asyncio.create_task(StuckGuard(config, assignments, work, exhaustion,
                                               lambda item, completion: failed.append((item, completion))).run())
        await wait_for(lambda: bool(failed), timeout_s=10, what="the guard to fail the blocking record")
        guard.cancel()
        assert failed and all(item is blocking for item, _ in failed)
        assert failed[0][1].error_type == "StuckRecordError" and not failed[0][1].ok

    asyncio.run(scenario())
