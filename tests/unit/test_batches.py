"""Batch handlers in the control plane: which records a batch holds, when it goes, what gets committed, misuse.

The engines' side (one call per batch, retries, partial failures) is the batch contract in tests/contract; the
same behaviour against the real broker is in tests/integration/test_batches_kafka.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrallel_consumer import BatchResult, ConfigError, ConsumerConfig, Ordering, PyrallelConsumer, Record
from pyrallel_consumer.batch import InvalidBatchResultError, batch_failures
from pyrallel_consumer.control.batch_queues import BatchWorkManager
from pyrallel_consumer.control.coordinator import Coordinator
from pyrallel_consumer.control.offset_tracker import PartitionOffsets
from pyrallel_consumer.control.work_manager import QueuedRecord, slot_of
from pyrallel_consumer.execution.async_engine import AsyncExecutionEngine
from pyrallel_consumer.execution.engine import Completion, EngineError, ExecutionEngine, RetryPolicy, WorkItem
from pyrallel_consumer.kafka.events import Assignment

pytestmark = pytest.mark.unit

TRACKERS = {p: PartitionOffsets(("t", p), 1, None, max_window=100_000) for p in range(3)}


def rec(partition: int, offset: int, key: bytes | None, value: bytes = b"") -> Record:
    return Record("t", partition, offset, key, value)


def config(**extra: object) -> ConsumerConfig:
    return ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"], missing_topic="wait",
                          **extra)


# ---- BatchResult --------------------------------------------------------------------------------------------------

def test_a_batch_result_names_failed_records_by_position_matching_copies() -> None:
    records = [rec(0, o, b"k") for o in range(4)]
    assert batch_failures(records, None) == {}
    assert batch_failures(records, BatchResult()) == {}
    named = batch_failures(records, BatchResult([rec(0, 2, b"k"), records[0]]))
    assert named == {2: ("BatchRecordError", "the batch handler named this record failed"),
                     0: ("BatchRecordError", "the batch handler named this record failed")}
    assert batch_failures(records, BatchResult({records[3]: KeyError("gone"), records[1]: "no row"})) == {
        3: ("KeyError", "'gone'"), 1: ("BatchRecordError", "no row")}


@pytest.mark.parametrize("returned", [[], "ok", True, BatchResult([rec(1, 0, b"k")])])
def test_anything_but_none_or_a_result_about_the_batch_is_refused(returned: object) -> None:
    with pytest.raises(InvalidBatchResultError):
        batch_failures([rec(0, 0, b"k")], returned)


# ---- which records a batch holds ----------------------------------------------------------------------------------

def takeable_by_hand(wm: BatchWorkManager, queued: list[QueuedRecord], in_flight: Iterable[QueuedRecord],
                     ordering: Ordering) -> tuple[int, int]:
    """What ``takeable`` must say: queued records whose slot has nothing in flight."""
    if ordering is Ordering.UNORDERED:
        return len(queued), sum(q.size for q in queued)
    busy = {slot_of(q.record, ordering) for q in in_flight}
    free = [q for q in queued if slot_of(q.record, ordering) not in busy]
    return len(free), sum(q.size for q in free)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(Ordering)),
       st.lists(st.tuples(st.integers(0, 2), st.sampled_from([b"a", b"b", b"c", b"d", None]), st.integers(0, 50)),
                min_size=1, max_size=150),
       st.integers(1, 12), st.integers(1, 200), st.integers(0, 2**32))
def test_batches_take_each_record_once_in_order_and_never_overlap_a_slot(
        ordering: Ordering, spec: list[tuple[int, bytes | None, int]], max_records: int, max_bytes: int,
        seed: int) -> None:
    rnd = random.Random(seed)
    wm = BatchWorkManager(ordering)
    next_offset = [0, 0, 0]
    queued: list[QueuedRecord] = []
    pending = list(spec)
    in_flight: dict[int, QueuedRecord] = {}
    ran: list[Record] = []
    while pending or wm.queued or in_flight:
        action = rnd.random()
        if pending and action < 0.4:
            count = rnd.randint(1, 10)
            for partition, key, size in pending[:count]:
                record = rec(partition, next_offset[partition], key, b"x" * size)
                next_offset[partition] += 1
                wm.add(record, TRACKERS[partition])
            del pending[:count]
        elif action < 0.7 or not in_flight:
            batch = wm.take_batch(max_records, max_bytes)
            assert len(batch) <= max_records
            assert len(batch) == 1 or sum(q.size for q in batch) <= max_bytes
            if ordering is not Ordering.UNORDERED:
                busy = {slot_of(q.record, ordering) for q in in_flight.values()}
                assert not busy & {slot_of(q.record, ordering) for q in batch}, "a slot's next batch waits"
                for slot in {slot_of(q.record, ordering) for q in batch}:
                    offsets = [q.record.offset for q in batch if slot_of(q.record, ordering) == slot]
                    assert offsets == sorted(offsets)
            for item in batch:
                in_flight[item.item_id] = item
                ran.append(item.record)
        else:
            for item_id in rnd.sample(sorted(in_flight), rnd.randint(1, len(in_flight))):
                wm.finish(in_flight.pop(item_id))
        queued = _queued(wm)
        assert (wm.takeable, wm.takeable_bytes) == takeable_by_hand(wm, queued, in_flight.values(), ordering)
        assert wm.in_flight == len(in_flight)
    assert sorted((r.partition, r.offset) for r in ran) == sorted(
        (p, o) for p in range(3) for o in range(next_offset[p]))
    if ordering is not Ordering.UNORDERED:
        for slot in {slot_of(r, ordering) for r in ran}:
            offsets = [r.offset for r in ran if slot_of(r, ordering) == slot]
            assert offsets == sorted(offsets), "each key's records run in offset order across batches"


def _queued(wm: BatchWorkManager) -> list[QueuedRecord]:
    return [*wm._fifo, *(q for queue in wm._queues.values() for q in queue)]


def test_a_batch_holds_the_oldest_records_of_many_keys_and_a_larger_record_goes_alone() -> None:
    wm = BatchWorkManager(Ordering.KEY)
    for offset, key in enumerate([b"a", b"b", b"a", b"c", b"b", b"a"]):
        wm.add(rec(0, offset, key, b"xx"), TRACKERS[0])
    wm.add(rec(0, 6, b"d", b"x" * 100), TRACKERS[0])
    first = wm.take_batch(4, 1000)
    assert [(q.record.key, q.record.offset) for q in first] == [(b"a", 0), (b"b", 1), (b"a", 2), (b"c", 3)]
    assert wm.takeable == 1, "b@4 and a@5 wait for the batch holding their keys' earlier records"
    assert [q.record.offset for q in wm.take_batch(4, 50)] == [6], "alone: larger than max_bytes"
    for item in first:
        wm.finish(item)
    assert [q.record.offset for q in wm.take_batch(10, 3)] == [4], "bytes bound: 2 + 2 > 3"


def test_records_of_a_requeued_batch_go_back_in_order() -> None:
    wm = BatchWorkManager(Ordering.KEY)
    for offset in range(5):
        wm.add(rec(0, offset, b"a"), TRACKERS[0])
    batch = wm.take_batch(3, 1000)
    for item in sorted(batch, key=lambda q: q.item_id, reverse=True):  # as the Coordinator requeues them
        wm.requeue(item)
    assert (wm.takeable, wm.in_flight) == (5, 0)
    assert [q.record.offset for q in wm.take_batch(10, 1000)] == [0, 1, 2, 3, 4]


def test_dropping_a_partition_keeps_the_takeable_count() -> None:
    wm = BatchWorkManager(Ordering.KEY)
    for offset in range(4):
        wm.add(rec(0, offset, b"a", b"x"), TRACKERS[0])
        wm.add(rec(1, offset, b"b", b"x"), TRACKERS[1])
    running = wm.take_batch(2, 1000)
    assert {q.record.partition for q in running} == {0, 1}
    assert wm.takeable == 0
    wm.drop_partitions([("t", 0)])
    for item in running:
        wm.finish(item)
    assert (wm.takeable, wm.takeable_bytes, wm.queued) == (3, 3, 3)


# ---- when a batch goes --------------------------------------------------------------------------------------------

class BatchEngine(ExecutionEngine):
    """Keeps the batches it is given until the test completes their records."""

    def __init__(self) -> None:
        self.batches: list[list[WorkItem]] = []
        self.cancelled: set[int] = set()
        self.submitted = asyncio.Event()

    async def start(self, on_complete: object) -> None:
        return None

    def submit(self, item: WorkItem) -> None:
        raise AssertionError("a batch consumer submits batches")

    def submit_batch(self, items: Sequence[WorkItem]) -> None:
        self.batches.append(list(items))
        self.submitted.set()

    def cancel(self, item_ids: Iterable[int]) -> None:
        self.cancelled.update(item_ids)

    def in_flight(self) -> int:
        return 0

    async def shutdown(self, drain: bool, timeout_s: float) -> None:
        return None


def coordinator(**extra: object) -> tuple[Coordinator, BatchEngine]:
    engine = BatchEngine()
    return Coordinator(config(**extra), engine, batch=True), engine


def feed(c: Coordinator, partition: int, offsets: Iterable[int], key: bytes | None = b"k") -> None:
    c.on_records([(rec(partition, o, key if key is None else key + b"%d" % o), 1) for o in offsets])


def offsets_of(batch: list[WorkItem]) -> list[int]:
    return [item.record.offset for item in batch]


async def test_a_full_batch_goes_at_once_and_the_rest_after_the_linger() -> None:
    c, engine = coordinator(batch_max_records=4, batch_linger_ms=20)
    c.on_assigned([Assignment("t", 0, 1, -1, None)])
    feed(c, 0, range(6))
    assert [offsets_of(b) for b in engine.batches] == [[0, 1, 2, 3]], "full: no linger; 2 records linger"
    engine.submitted.clear()
    await asyncio.wait_for(engine.submitted.wait(), 30)
    assert [offsets_of(b) for b in engine.batches] == [[0, 1, 2, 3], [4, 5]]
    await c.stop(drain=False)


async def test_a_partial_batch_waits_for_more_records_within_the_linger() -> None:
    c, engine = coordinator(batch_max_records=4, batch_linger_ms=60_000)
    c.on_assigned([Assignment("t", 0, 1, -1, None)])
    feed(c, 0, range(3))
    assert engine.batches == []
    feed(c, 0, [3, 4])
    assert [offsets_of(b) for b in engine.batches] == [[0, 1, 2, 3]]
    await c.stop(drain=False)


async def test_no_linger_sends_what_is_ready() -> None:
    c, engine = coordinator(batch_max_records=4, batch_linger_ms=0)
    c.on_assigned([Assignment("t", 0, 1, -1, None)])
    feed(c, 0, range(2))
    feed(c, 0, range(2, 3))
    assert [offsets_of(b) for b in engine.batches] == [[0, 1], [2]]
    await c.stop(drain=False)


async def test_batches_wait_for_room_under_max_in_flight() -> None:
    c, engine = coordinator(batch_max_records=3, batch_linger_ms=60_000, max_in_flight=4)
    c.on_assigned([Assignment("t", 0, 1, -1, None)])
    feed(c, 0, range(7))
    assert [offsets_of(b) for b in engine.batches] == [[0, 1, 2]], "room for 1 more only: wait for a full batch"
    for item in engine.batches[0]:
        c._on_complete(Completion(item.item_id, True, 1, 0.0))
    assert [offsets_of(b) for b in engine.batches] == [[0, 1, 2], [3, 4, 5]]
    await c.stop(drain=False)


async def test_a_keys_next_batch_waits_and_commits_stop_at_an_unfinished_record_of_any_batch() -> None:
    c, engine = coordinator(batch_max_records=3, batch_linger_ms=0)
    c.on_assigned([Assignment("t", 0, 1, -1, None)])
    c.on_records([(rec(0, o, key), 1) for o, key in enumerate([b"a", b"b", b"a", b"a", b"c"])])
    first = engine.batches[0]
    assert offsets_of(first) == [0, 1, 2]
    assert [offsets_of(b) for b in engine.batches[1:]] == [[4]], "a@3 waits for the batch holding a@0 and a@2"
    tracker = c._assignments.of(("t", 0))
    assert tracker is not None
    c._on_complete(Completion(first[0].item_id, True, 1, 0.0))
    assert len(engine.batches) == 2, "a@2 of the first batch still runs"
    for item in (first[2], engine.batches[1][0]):
        c._on_complete(Completion(item.item_id, True, 1, 0.0))
    assert [offsets_of(b) for b in engine.batches] == [[0, 1, 2], [4], [3]], "key a is free: b@1 is another key"
    point = tracker.commit_point()
    assert point is not None and point.offset == 1, "b@1 of the first batch still runs"
    c._on_complete(Completion(first[1].item_id, True, 1, 0.0))
    point = tracker.commit_point()
    assert point is not None and point.offset == 3
    await c.stop(drain=False)


async def test_a_batch_stopped_unfinished_runs_again_first_and_in_order() -> None:
    c, engine = coordinator(batch_max_records=3, batch_linger_ms=0)
    c.on_assigned([Assignment("t", 0, 1, -1, None)])
    c.on_records([(rec(0, o, b"a"), 1) for o in range(5)])
    assert [offsets_of(b) for b in engine.batches] == [[0, 1, 2]]
    c._cancel_in_flight(c._work.in_flight_items(), requeue=True)  # what a suspension that keeps the partitions does
    c._dispatch()
    assert [offsets_of(b) for b in engine.batches] == [[0, 1, 2], [0, 1, 2]]
    await c.stop(drain=False)


async def test_a_revoke_cancels_only_the_revoked_partitions_records_of_a_batch() -> None:
    c, engine = coordinator(batch_max_records=4, batch_linger_ms=0, rebalance_grace_ms=0)
    c.on_assigned([Assignment("t", 0, 1, -1, None), Assignment("t", 1, 1, -1, None)])
    c.on_records([(rec(p, o, b"k%d" % o), 1) for o in range(2) for p in (0, 1)])
    (batch,) = engine.batches
    assert sorted((i.record.partition, i.record.offset) for i in batch) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    points = await c.on_revoked([("t", 1)])
    assert engine.cancelled == {i.item_id for i in batch if i.record.partition == 1}
    assert [p.offset for p in points] == [0], "nothing of partition 1 finished"
    for item in batch:
        c._on_complete(Completion(item.item_id, True, 1, 0.0))  # a late completion of p1 is dropped
    tracker = c._assignments.of(("t", 0))
    point = tracker.commit_point() if tracker is not None else None
    assert point is not None and point.offset == 2
    assert c.metrics().records_succeeded == 2
    await c.stop(drain=False)


# ---- how the user supplies it -------------------------------------------------------------------------------------

async def handle(record: Record) -> None:
    """Never called here."""


async def handle_batch(records: list[Record]) -> BatchResult | None:
    """Never called here."""
    return None


def test_a_consumer_takes_one_kind_of_handler() -> None:
    with pytest.raises(TypeError, match="not both"):
        PyrallelConsumer(config(), handle, batch_handler=handle_batch)
    with pytest.raises(TypeError, match="needs a handler"):
        PyrallelConsumer(config())
    PyrallelConsumer(config(batch_max_records=10), batch_handler=handle_batch)


def test_batch_fields_with_a_per_record_handler_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="batch_linger_ms only apply to a batch handler"):
        PyrallelConsumer(config(batch_linger_ms=5), handle)
    monkeypatch.setenv("PYRALLEL_BATCH_MAX_RECORDS", "50")
    with pytest.raises(ConfigError, match="batch_max_records only apply"):
        PyrallelConsumer(config(), handle)


def test_a_batch_larger_than_max_in_flight_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"batch_max_records \(200\) is larger than max_in_flight \(100\)"):
        PyrallelConsumer(config(batch_max_records=200, max_in_flight=100), batch_handler=handle_batch)


def sync_handle_batch(records: list[Record]) -> None:
    """A synchronous batch handler, for engine='process' only."""


def test_a_batch_handler_under_exactly_once_is_refused() -> None:
    """A batch cannot return outputs yet: refused at construction, for both engines, rather than ignored."""
    for engine in ("async", "process"):
        handler = handle_batch if engine == "async" else sync_handle_batch
        with pytest.raises(ConfigError, match="batch handlers do not support processing_guarantee='exactly_once'"):
            PyrallelConsumer(config(processing_guarantee="exactly_once", engine=engine), batch_handler=handler)
    PyrallelConsumer(config(processing_guarantee="exactly_once"), handle)  # the per-record handler is the way
    PyrallelConsumer(config(), batch_handler=handle_batch)  # and batches under at_least_once


async def test_the_async_engine_refuses_a_synchronous_batch_handler_at_start() -> None:
    engine = AsyncExecutionEngine(sync_handle_batch, RetryPolicy(), batch=True)
    with pytest.raises(EngineError, match="async batch handler"):
        await engine.start(lambda completion: None)
