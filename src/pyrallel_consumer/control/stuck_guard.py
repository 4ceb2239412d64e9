"""StuckGuard: fails an in-flight record that has blocked its partition's commit longer than max_blocking_ms.

Started by Coordinator.start() as a task on the event loop when ``max_blocking_ms`` is set, cancelled by
stop(); it reads the assignments' trackers and the work manager's in-flight records and hands the record it
gives up on to ``fail`` (the Coordinator cancels it in the engine and completes it as failed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.control.assignments import Assignments
from pyrallel_consumer.control.exhaustion import Exhaustion
from pyrallel_consumer.control.work_manager import QueuedRecord, WorkManager
from pyrallel_consumer.execution.engine import Completion

log = logging.getLogger(__name__)


class StuckGuard:
    def __init__(self, config: ConsumerConfig, assignments: Assignments, work: WorkManager, exhaustion: Exhaustion,
                 fail: Callable[[QueuedRecord, Completion], None]) -> None:
        self._limit_ms = config.max_blocking_ms
        self._assignments = assignments
        self._work = work
        self._exhaustion = exhaustion
        self._fail = fail

    async def run(self) -> None:
        limit_s = self._limit_ms / 1000
        while True:
            await asyncio.sleep(min(1.0, max(limit_s / 4, 0.05)))
            for offsets in self._assignments.trackers():
                blocking = offsets.blocking()
                if blocking is None or blocking[1] <= limit_s:
                    continue
                offset, age = blocking
                item = next((q for q in self._work.in_flight_items()
                             if q.offsets is offsets and q.record.offset == offset
                             and not self._exhaustion.handling(q.item_id)), None)
                if item is None:
                    continue  # not running (waiting for capacity) or already in the exhaustion policy
                topic, partition = offsets.topic_partition
                log.warning("%s[%d]@%d has blocked the commit for %.1fs (max_blocking_ms=%d); failing it",
                            topic, partition, offset, age, self._limit_ms)
                self._fail(item, Completion(
                    item.item_id, False, 1, age, "StuckRecordError",
                    f"blocked the commit of {topic}[{partition}] for {age:.1f}s (max_blocking_ms={self._limit_ms})",
                ))
