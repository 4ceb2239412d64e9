"""The batch part of the ExecutionEngine contract, run unchanged against every engine built for a batch handler.

What a user of ``batch_handler`` relies on: one handler call per submitted batch with its records in order, one
completion per record, a raising call retried whole, a BatchResult's named records retried alone (the others
complete at once), per-record failures after the last retry, timeouts and invalid results failing the whole
attempt, and cancelled records never completing. Tests wait for completions and never assert durations.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import pytest

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.execution import create_engine
from pyrallel_consumer.execution.engine import EngineError, ExecutionEngine, HandlerTimeoutError, WorkItem
from pyrallel_consumer.record import Record

from . import handlers
from .test_engine_contract import ENGINES, WAIT_S, Harness, build_engine

pytestmark = pytest.mark.unit


class BatchHarness(Harness):
    """A Harness whose engine runs a batch handler: records go in with submit_batch()."""

    def __init__(self, engine: ExecutionEngine, directory: Path, value_deserializer: str | None = None) -> None:
        super().__init__(engine, directory, value_deserializer)
        self._batch_ids = itertools.count(1)

    def item(self, value: bytes) -> WorkItem:
        item_id = next(self._batch_ids)
        headers = ((handlers.DIR_HEADER, str(self.directory).encode()),)
        return self.work_item(Record("contract", item_id % 3, item_id, b"k%d" % (item_id % 5), value, headers))

    def submit_batch(self, values: Iterable[bytes]) -> list[int]:
        items = [self.item(value) for value in values]
        self.engine.submit_batch(items)
        return [item.item_id for item in items]

    def calls(self) -> list[list[int]]:
        return handlers.batch_calls(self.directory)


MakeBatchHarness = Callable[..., Awaitable[BatchHarness]]


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_harness(engine_name: str, tmp_path: Path) -> AsyncIterator[MakeBatchHarness]:
    made: list[BatchHarness] = []

    async def make(*, max_retries: int = 0, timeout_s: float = 30.0,
                   value_deserializer: str | None = None) -> BatchHarness:
        harness = BatchHarness(build_engine(engine_name, max_retries=max_retries, timeout_s=timeout_s, batch=True,
                                            value_deserializer=value_deserializer), tmp_path, value_deserializer)
        made.append(harness)
        await harness.start()
        return harness

    yield make
    for harness in made:
        await harness.engine.shutdown(drain=False, timeout_s=5)
    assert multiprocessing.active_children() == []


async def test_one_call_per_batch_in_order_and_one_completion_per_record(make_harness: MakeBatchHarness) -> None:
    h = await make_harness()
    batches = [h.submit_batch([b"ok"] * size) for size in (1, 7, 30, 3)]
    ids = [i for batch in batches for i in batch]
    done = await h.wait_for(ids)
    await h.engine.shutdown(drain=True, timeout_s=WAIT_S)

    assert h.counts() == Counter(ids)
    assert all(c.ok and c.attempts == 1 for c in done.values())
    assert sorted(h.calls()) == sorted(batches), "each batch is one call holding its records in the order given"
    assert h.engine.in_flight() == 0


async def test_a_raising_call_is_retried_as_the_whole_batch(make_harness: MakeBatchHarness) -> None:
    h = await make_harness(max_retries=2)
    ids = h.submit_batch([b"ok", b"fail:1", b"ok"])
    done = await h.wait_for(ids)

    assert [(done[i].ok, done[i].attempts) for i in ids] == [(True, 2)] * 3
    assert h.calls() == [ids, ids]


async def test_a_batch_result_retries_only_the_records_it_names(make_harness: MakeBatchHarness) -> None:
    h = await make_harness(max_retries=3)
    a, b, c, d = h.submit_batch([b"ok", b"name_failed:1", b"ok", b"name_failed:2"])
    done = await h.wait_for([a, b, c, d])

    assert [(done[i].ok, done[i].attempts) for i in (a, b, c, d)] == [(True, 1), (True, 2), (True, 1), (True, 3)]
    assert h.calls() == [[a, b, c, d], [b, d], [d]]


async def test_records_named_failed_every_time_fail_alone_after_the_retries(make_harness: MakeBatchHarness) -> None:
    h = await make_harness(max_retries=1)
    good, bad = h.submit_batch([b"ok", b"name_failed:99"])
    done = await h.wait_for([good, bad])

    assert (done[good].ok, done[good].attempts) == (True, 1)
    assert (done[bad].ok, done[bad].attempts) == (False, 2)
    assert (done[bad].error_type, done[bad].error_message) == ("ValueError", "attempt 2 named failed")
    assert h.calls() == [[good, bad], [bad]]


async def test_records_that_cannot_be_deserialized_fail_once_and_stay_out_of_the_calls(
        make_harness: MakeBatchHarness) -> None:
    """A batch's poison records fail after one attempt, whether its call succeeds, names records failed or raises;
    the handler gets only the others, deserialized, and a batch of nothing but poison is never called."""
    h = await make_harness(max_retries=2, value_deserializer=handlers.VALUE_TEXT)
    typed, poison, named = h.submit_batch([b"typed", b"poison!", b"name_failed:1"])
    done = await h.wait_for([typed, poison, named])
    assert [(done[i].ok, done[i].attempts) for i in (typed, poison, named)] == [(True, 1), (False, 1), (True, 2)]
    assert done[poison].error_type == "ValueDeserializationError"
    assert h.calls() == [[typed, named], [named]]

    raising, poison_too = h.submit_batch([b"fail:1", b"poison!"])
    only_poison = h.submit_batch([b"poison!", b"poison!"])
    done = await h.wait_for([raising, poison_too, *only_poison])
    assert [(done[i].ok, done[i].attempts) for i in (raising, poison_too, *only_poison)] == [
        (True, 2), (False, 1), (False, 1), (False, 1)]
    assert h.calls()[2:] == [[raising], [raising]]


async def test_a_call_that_always_raises_fails_every_record(make_harness: MakeBatchHarness) -> None:
    h = await make_harness(max_retries=1)
    ids = h.submit_batch([b"ok", b"always_fail", b"ok"])
    done = await h.wait_for(ids)

    assert [(c.ok, c.attempts, c.error_type, c.error_message) for c in (done[i] for i in ids)] == [
        (False, 2, "ValueError", "always fails")] * 3


async def test_an_invalid_result_fails_the_whole_attempt(make_harness: MakeBatchHarness) -> None:
    h = await make_harness()
    ids = h.submit_batch([b"ok", b"bad_result"])
    done = await h.wait_for(ids)

    assert {(c.ok, c.error_type) for c in done.values()} == {(False, "InvalidBatchResultError")}


async def test_a_hanging_batch_times_out_whole(make_harness: MakeBatchHarness) -> None:
    h = await make_harness(max_retries=1, timeout_s=0.2)
    ids = h.submit_batch([b"ok", b"hang"])
    done = await h.wait_for(ids)

    assert {(c.ok, c.attempts, c.error_type) for c in done.values()} == {(False, 2, HandlerTimeoutError.__name__)}
    later = await h.wait_for(h.submit_batch([b"ok"] * 5))
    assert all(c.ok for c in later.values())


async def test_cancelled_records_of_a_running_batch_never_complete(make_harness: MakeBatchHarness) -> None:
    h = await make_harness()
    first, second = h.submit_batch([b"sleep:1", b"ok"])
    doomed = h.submit_batch([b"sleep:2", b"sleep:2"])
    await h.wait_started([first, *doomed])
    h.engine.cancel([second, *doomed])

    assert h.engine.in_flight() == 1
    await h.engine.shutdown(drain=True, timeout_s=WAIT_S)
    assert h.counts() == Counter([first])
    assert h.by_id()[first].ok
    assert h.engine.in_flight() == 0


async def test_each_engine_takes_only_its_kind_of_submission(make_harness: MakeBatchHarness, engine_name: str,
                                                              tmp_path: Path) -> None:
    h = await make_harness()
    with pytest.raises(EngineError, match="submit_batch"):
        h.engine.submit(h.item(b"ok"))
    per_record = Harness(create_engine(ConsumerConfig(
        bootstrap_servers="localhost:9092", group_id="contract", topics=["contract"], engine=engine_name,
        process_workers=1), handlers.async_handle if engine_name == "async" else handlers.sync_handle), tmp_path)
    await per_record.start()
    try:
        with pytest.raises(EngineError, match="submit"):
            per_record.engine.submit_batch([h.item(b"ok")])
    finally:
        await per_record.engine.shutdown(drain=False, timeout_s=5)
