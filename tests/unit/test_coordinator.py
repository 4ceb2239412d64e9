"""Coordinator bookkeeping in orders of events the broker produces only by chance.

No poller runs here: what backpressure holds is read from the fetch gate's published level, which the
poller would pause; the engine keeps what it is given until the test completes it; the same paths against
the real broker are in tests/integration/.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from pyrallel_consumer import ConsumerConfig, Ordering, Record
from pyrallel_consumer.control.coordinator import Coordinator
from pyrallel_consumer.execution.engine import Completion, ExecutionEngine, WorkItem
from pyrallel_consumer.kafka.events import Assignment

pytestmark = pytest.mark.unit


class HeldEngine(ExecutionEngine):
    """Keeps what it is given until the test completes it."""

    def __init__(self) -> None:
        self.running: list[WorkItem] = []

    async def start(self, on_complete: object) -> None:
        return None

    def submit(self, item: WorkItem) -> None:
        self.running.append(item)

    def cancel(self, item_ids: Iterable[int]) -> None:
        return None

    def in_flight(self) -> int:
        return len(self.running)

    async def shutdown(self, drain: bool, timeout_s: float) -> None:
        return None


class PausedView:
    """What the poller thread reads: the partitions the fetch gate's published level names as held."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._gate = coordinator._gate

    @property
    def held(self) -> frozenset[tuple[str, int]]:
        return self._gate.level.held


def _coordinator(**config: object) -> tuple[Coordinator, HeldEngine, PausedView]:
    engine = HeldEngine()
    coordinator = Coordinator(ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"],
                                             **config), engine)  # type: ignore[arg-type]
    return coordinator, engine, PausedView(coordinator)


def test_held_partition_resumes_after_the_other_partitions_were_revoked() -> None:
    """A partition paused by backpressure is resumed once its queue drains, however many partitions are left."""

    async def scenario() -> None:
        coordinator, engine, poller = _coordinator(ordering=Ordering.PARTITION, max_in_flight=1,
                                                   queue_max_messages=10)
        coordinator.on_assigned([Assignment("t", 0, 1, -1, None), Assignment("t", 1, 2, -1, None)])
        coordinator.on_records([(Record("t", 0, offset, b"k", b"v"), 1) for offset in range(20)])
        assert poller.held == {("t", 0)}, "19 queued is over 1.5x the share of 5"
        await coordinator.on_revoked([("t", 1)])
        for _ in range(20):
            item = engine.running.pop(0)
            coordinator._on_complete(Completion(item.item_id, True, 1, 0.0))
        assert poller.held == set(), "p0 drained to its share (now all 10): it must fetch again"

    asyncio.run(scenario())


def test_a_revocation_settling_late_leaves_the_next_assignment_of_the_partition_alone() -> None:
    """The poller gives up waiting for a blocked loop and the partition comes back before the loop catches up."""

    async def scenario() -> None:
        coordinator, engine, _poller = _coordinator(rebalance_grace_ms=60_000)
        coordinator.on_assigned([Assignment("t", 0, 1, -1, None)])
        coordinator.on_records([(Record("t", 0, 0, b"k", b"v"), 1)])
        revoking = asyncio.create_task(coordinator.on_revoked([("t", 0)]))
        await asyncio.sleep(0)  # the revocation now waits for offset 0 to finish
        coordinator.on_assigned([Assignment("t", 0, 2, 0, None)])
        old = engine.running.pop(0)
        coordinator._on_complete(Completion(old.item_id, True, 1, 0.0))
        await revoking
        coordinator.on_records([(Record("t", 0, offset, b"k", b"v"), 2) for offset in range(3)])
        assert coordinator.assigned == [("t", 0)]
        assert [item.record.offset for item in engine.running] == [0], "the new assignment handles offset 0 again"

    asyncio.run(scenario())


def test_partition_blocked_by_one_record_stops_fetching_at_max_pending_offsets() -> None:
    """Other keys keep completing behind the blocking record; the partition's bookkeeping must not grow forever."""

    async def scenario() -> None:
        coordinator, engine, poller = _coordinator(max_pending_offsets=100)
        coordinator.on_assigned([Assignment("t", 0, 1, -1, None)])
        blocking = None
        for offset in range(150):
            coordinator.on_records([(Record("t", 0, offset, f"k{offset}".encode(), b"v"), 1)])
            for item in list(engine.running):
                if item.record.offset == 0:
                    blocking = item
                    continue
                engine.running.remove(item)
                coordinator._on_complete(Completion(item.item_id, True, 1, 0.0))
        assert poller.held == {("t", 0)}, "101 offsets tracked from the blocking offset 0"
        assert blocking is not None
        coordinator._on_complete(Completion(blocking.item_id, True, 1, 0.0))
        assert poller.held == set(), "the blocking record is done: fetch again"

    asyncio.run(scenario())
