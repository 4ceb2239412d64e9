"""The ExecutionEngine contract, run unchanged against every engine.

Each test builds its engine through one fixture from the engine name; the handler's behaviour comes from the
record value (see ``handlers``). Tests wait for the completions they expect (with a generous bound) and never
assert how long anything took.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import pytest

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.deserialization import DeserializationError
from pyrallel_consumer.execution import create_engine
from pyrallel_consumer.execution.engine import (
    Completion,
    EngineError,
    ExecutionEngine,
    HandlerTimeoutError,
    WorkItem,
)
from pyrallel_consumer.kafka.deserializing import RecordDeserializer
from pyrallel_consumer.output import Output
from pyrallel_consumer.record import Record

from . import handlers

pytestmark = pytest.mark.unit

ENGINES = ["async", "process"]
WAIT_S = 60.0
PROCESS_WORKERS = 4


class Harness:
    """An engine under test plus everything it reported."""

    def __init__(self, engine: ExecutionEngine, directory: Path, value_deserializer: str | None = None) -> None:
        self.engine = engine
        self.directory = directory
        self._ahead = None if engine.deserializes_records else RecordDeserializer.of(None, value_deserializer)
        """What the poller thread does for an engine that does not deserialize records itself."""
        self.completions: list[Completion] = []
        self.delivered_on: set[asyncio.AbstractEventLoop] = set()
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self.engine.start(self._on_complete)

    def _on_complete(self, completion: Completion) -> None:
        self.delivered_on.add(asyncio.get_running_loop())
        self.completions.append(completion)
        self._changed.set()

    def work_item(self, record: Record) -> WorkItem:
        """The item of a fetched record, deserialized ahead as the poller would (for the engines that want it)."""
        if self._ahead is None:
            return WorkItem(record.offset, record)
        try:
            return WorkItem(record.offset, record, deserialized=self._ahead.record(record))
        except DeserializationError as exc:
            return WorkItem(record.offset, record, deserialized=exc)

    def submit(self, value: bytes) -> int:
        item_id = next(self._ids)
        headers = ((handlers.DIR_HEADER, str(self.directory).encode()),)
        self.engine.submit(self.work_item(Record("contract", 0, item_id, None, value, headers)))
        return item_id

    def submit_many(self, values: Iterable[bytes]) -> list[int]:
        return [self.submit(value) for value in values]

    def by_id(self) -> dict[int, Completion]:
        return {c.item_id: c for c in self.completions}

    def counts(self) -> Counter[int]:
        return Counter(c.item_id for c in self.completions)

    async def wait_for(self, ids: Iterable[int], timeout_s: float = WAIT_S) -> dict[int, Completion]:
        """The completions of ``ids``, once all of them arrived."""
        wanted = set(ids)
        await self._until(lambda: wanted <= self.by_id().keys(), timeout_s, f"completions of {sorted(wanted)}")
        done = self.by_id()
        return {i: done[i] for i in wanted}

    async def wait_started(self, ids: Iterable[int], timeout_s: float = WAIT_S) -> None:
        """Until the handler of every item in ``ids`` has begun (a sleeping behaviour marks its start)."""
        paths = [handlers.started_path(self.directory, i) for i in ids]
        deadline = time.monotonic() + timeout_s
        while not all(p.exists() for p in paths):
            if time.monotonic() > deadline:
                pytest.fail(f"handlers did not start within {timeout_s}s")
            await asyncio.sleep(0.01)

    async def _until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue

    def spans(self, ids: Iterable[int]) -> list[tuple[float, float]]:
        spans = []
        for item in ids:
            start, end = handlers.span_path(self.directory, item).read_text().split()
            spans.append((float(start), float(end)))
        return spans


MakeHarness = Callable[..., Awaitable[Harness]]


def build_engine(name: str, *, max_retries: int, timeout_s: float, batch: bool = False,
                 value_deserializer: str | None = None) -> ExecutionEngine:
    """The engine called ``name``, built the way the consumer builds it: from a ConsumerConfig; with ``batch``, for
    the contract's batch handlers."""
    config = ConsumerConfig(
        bootstrap_servers="localhost:9092", group_id="contract", topics=["contract"], engine=name,
        max_retries=max_retries, task_timeout_ms=int(timeout_s * 1000), retry_backoff_ms=10,
        max_retry_backoff_ms=50, process_workers=PROCESS_WORKERS, value_deserializer=value_deserializer,
    )
    if batch:
        return create_engine(config, handlers.async_handle_batch if name == "async" else handlers.sync_handle_batch,
                             batch=True)
    return create_engine(config, handlers.async_handle if name == "async" else handlers.sync_handle)


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_harness(engine_name: str, tmp_path: Path) -> AsyncIterator[MakeHarness]:
    """``await make_harness(max_retries=.., timeout_s=.., start=True)``; every engine is shut down afterwards."""
    made: list[Harness] = []

    async def make(*, max_retries: int = 0, timeout_s: float = 30.0, start: bool = True,
                   value_deserializer: str | None = None) -> Harness:
        harness = Harness(build_engine(engine_name, max_retries=max_retries, timeout_s=timeout_s,
                                       value_deserializer=value_deserializer), tmp_path, value_deserializer)
        made.append(harness)
        if start:
            await harness.start()
        return harness

    yield make
    for harness in made:
        await harness.engine.shutdown(drain=False, timeout_s=5)
    assert multiprocessing.active_children() == []


async def test_exactly_one_completion_per_item(make_harness: MakeHarness) -> None:
    h = await make_harness(max_retries=2)
    values = [b"fail:1" if i % 7 == 0 else b"ok" for i in range(200)]
    ids = h.submit_many(values)
    done = await h.wait_for(ids)
    await h.engine.shutdown(drain=True, timeout_s=WAIT_S)

    assert h.counts() == Counter(ids)
    assert all(c.ok for c in done.values())
    assert [done[i].attempts for i in ids] == [2 if v.startswith(b"fail") else 1 for v in values]
    assert h.engine.in_flight() == 0


async def test_outputs_the_handler_returned_travel_with_its_completion(make_harness: MakeHarness) -> None:
    h = await make_harness(max_retries=0)
    good, bad, plain = h.submit_many([b"output:hello", b"bad_output", b"ok"])
    done = await h.wait_for([good, bad, plain])
    assert done[good].ok and done[good].outputs == (
        Output("contract-out", b"hello", str(good).encode(), (("h", b"1"),)),), "str keys arrive as UTF-8 bytes"
    assert not done[bad].ok and done[bad].error_type == "TypeError", "a wrong return value fails the attempt"
    assert done[plain].ok and done[plain].outputs == ()


async def test_a_record_that_cannot_be_deserialized_fails_once_without_its_handler(make_harness: MakeHarness) -> None:
    """Typed records: the handler gets the deserialized value; a record the deserializer refuses fails after one
    attempt (another would read the same bytes), while other failures are still retried."""
    h = await make_harness(max_retries=2, value_deserializer=handlers.VALUE_TEXT)
    typed, poison, retried = h.submit_many([b"typed", b"poison!", b"fail:1"])
    done = await h.wait_for([typed, poison, retried])

    assert (done[typed].ok, done[typed].attempts) == (True, 1), done[typed].error_message
    assert (done[poison].ok, done[poison].attempts) == (False, 1)
    assert (done[poison].error_type, done[poison].error_message) == ("ValueDeserializationError",
                                                                     "ValueError: poison bytes")
    assert (done[retried].ok, done[retried].attempts) == (True, 2)


async def test_completions_are_delivered_on_the_starting_loop(make_harness: MakeHarness) -> None:
    h = await make_harness()
    await h.wait_for(h.submit_many([b"ok"] * 10))
    assert h.delivered_on == {asyncio.get_running_loop()}


async def test_fail_then_succeed(make_harness: MakeHarness) -> None:
    h = await make_harness(max_retries=3)
    (item,) = h.submit_many([b"fail:2"])
    completion = (await h.wait_for([item]))[item]
    assert completion.ok
    assert completion.attempts == 3
    assert completion.error_type is None


async def test_retries_exhausted(make_harness: MakeHarness) -> None:
    h = await make_harness(max_retries=2)
    (item,) = h.submit_many([b"always_fail"])
    completion = (await h.wait_for([item]))[item]
    assert not completion.ok
    assert completion.attempts == 3
    assert completion.error_type == "ValueError"
    assert completion.error_message == "always fails"


async def test_hanging_handler_times_out(make_harness: MakeHarness) -> None:
    h = await make_harness(max_retries=1, timeout_s=0.2)
    (item,) = h.submit_many([b"hang"])
    completion = (await h.wait_for([item]))[item]
    assert not completion.ok
    assert completion.attempts == 2
    assert completion.error_type == HandlerTimeoutError.__name__
    assert completion.error_message == "handler exceeded 0.2s"


@pytest.mark.parametrize(("behaviour", "error_type"), [
    (b"system_exit", "SystemExit"),
    (b"keyboard_interrupt", "KeyboardInterrupt"),
])
async def test_base_exceptions_are_failed_attempts(make_harness: MakeHarness, behaviour: bytes,
                                                   error_type: str) -> None:
    h = await make_harness(max_retries=1)
    (item,) = h.submit_many([behaviour])
    completion = (await h.wait_for([item]))[item]
    assert not completion.ok
    assert completion.attempts == 2
    assert completion.error_type == error_type

    later = await h.wait_for(h.submit_many([b"ok"] * 10))
    assert all(c.ok and c.attempts == 1 for c in later.values())


async def test_cancelled_items_never_complete(make_harness: MakeHarness) -> None:
    h = await make_harness()
    running = h.submit_many([b"sleep:2"] * 2)  # long enough to be still running when cancelled on a loaded machine
    await h.wait_started(running)
    queued = h.submit_many([b"sleep:2"] * 6)
    others = h.submit_many([b"ok"] * 5)
    h.engine.cancel([*running, *queued, 10_000])  # an unknown id is ignored

    assert h.engine.in_flight() == len(others)
    done = await h.wait_for(others)
    assert all(c.ok for c in done.values())
    await h.engine.shutdown(drain=True, timeout_s=WAIT_S)  # completions can no longer arrive after this
    assert h.counts() == Counter(others)
    assert h.engine.in_flight() == 0


async def test_drain_lets_running_items_finish(make_harness: MakeHarness) -> None:
    h = await make_harness()
    (item,) = h.submit_many([b"sleep:0.3"])
    await h.engine.shutdown(drain=True, timeout_s=WAIT_S)
    assert h.counts() == Counter([item])
    assert h.by_id()[item].ok
    assert h.engine.in_flight() == 0


async def test_drain_timeout_cancels_the_rest(make_harness: MakeHarness) -> None:
    h = await make_harness()
    quick, stuck = h.submit_many([b"ok", b"hang"])
    await h.wait_for([quick])
    await h.wait_started([stuck])
    await h.engine.shutdown(drain=True, timeout_s=0.2)
    assert h.counts() == Counter([quick])
    assert h.engine.in_flight() == 0


async def test_shutdown_without_drain_cancels(make_harness: MakeHarness) -> None:
    h = await make_harness()
    items = h.submit_many([b"sleep:5", b"sleep:5", b"hang"])
    await h.wait_started(items[:1])
    await h.engine.shutdown(drain=False, timeout_s=WAIT_S)
    assert h.completions == []
    assert h.engine.in_flight() == 0


async def test_in_flight_counts(make_harness: MakeHarness) -> None:
    h = await make_harness()
    assert h.engine.in_flight() == 0
    quick = h.submit_many([b"ok"] * 3)
    stuck = h.submit_many([b"hang"] * 4)
    assert h.engine.in_flight() == 7
    await h.wait_for(quick)
    assert h.engine.in_flight() == 4
    h.engine.cancel(stuck[:2])
    assert h.engine.in_flight() == 2
    h.engine.cancel(stuck[:2])
    assert h.engine.in_flight() == 2
    await h.engine.shutdown(drain=False, timeout_s=WAIT_S)
    assert h.engine.in_flight() == 0


async def test_items_run_concurrently(make_harness: MakeHarness) -> None:
    h = await make_harness()
    ids = h.submit_many([b"sleep:0.2"] * 20)
    await h.wait_for(ids)
    spans = h.spans(ids)
    overlapping = [(a, b) for a, b in itertools.combinations(spans, 2) if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, "no two items ran at the same time"


async def test_submit_outside_the_life_cycle_raises(make_harness: MakeHarness) -> None:
    h = await make_harness(start=False)
    with pytest.raises(EngineError):
        h.submit(b"ok")
    await h.start()
    await h.wait_for(h.submit_many([b"ok"]))
    await h.engine.shutdown(drain=True, timeout_s=WAIT_S)
    with pytest.raises(EngineError):
        h.submit(b"ok")
