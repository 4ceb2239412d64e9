"""Mistakes that show at start() or construction, with nothing left running behind them."""

from __future__ import annotations

import asyncio
import threading

import pytest
from confluent_kafka import KafkaException

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer, Record
from pyrallel_consumer.execution.async_engine import AsyncExecutionEngine
from pyrallel_consumer.execution.engine import Completion, CompletionCallback, RetryPolicy
from pyrallel_consumer.observability.metrics import RecordStats

pytestmark = pytest.mark.unit


async def handle(record: Record) -> None:
    """Never called here."""


def _config(**extra: object) -> ConsumerConfig:
    return ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"], missing_topic="wait",
                          **extra)  # type: ignore[arg-type]


def test_misspelt_kafka_property_fails_start_and_leaves_no_thread() -> None:
    async def scenario() -> None:
        consumer = PyrallelConsumer(_config(kafka={"sesion.timeout.ms": "6000"}), handle)
        with pytest.raises(KafkaException, match=r"sesion\.timeout\.ms"):
            await consumer.start()
        await consumer.stop()  # after a failed start: nothing left to stop, no error

    asyncio.run(scenario())
    assert not [t for t in threading.enumerate() if t.name.startswith("pyrallel-")]


def test_stop_before_start_then_start_is_refused() -> None:
    async def scenario() -> None:
        consumer = PyrallelConsumer(_config(), handle)
        await consumer.stop()
        with pytest.raises(RuntimeError, match="after stop"):
            await consumer.start()

    asyncio.run(scenario())


def test_exhaustion_policy_without_an_outcome_label_is_refused() -> None:
    class Park:
        async def __call__(self, record: Record, completion: Completion) -> bool:
            return True

    with pytest.raises(TypeError, match="'outcome' attribute"):
        PyrallelConsumer(_config(), handle, on_exhausted=Park())  # type: ignore[arg-type]


def test_custom_outcome_label_is_counted() -> None:
    stats = RecordStats()
    stats.add("parked", 0.01)
    samples = {(s.name, s.labels.get("outcome")): s.value for family in stats.collect() for s in family.samples}
    assert samples[("pyrallel_records_completed_total", "parked")] == 1


def test_stop_during_start_leaves_nothing_running() -> None:
    """A SIGTERM handler may call stop() while start() still waits (here: for the engine's workers)."""

    class SlowStartingEngine(AsyncExecutionEngine):
        def __init__(self) -> None:
            super().__init__(handle, RetryPolicy())
            self.entered, self.release = asyncio.Event(), asyncio.Event()

        async def start(self, on_complete: CompletionCallback) -> None:
            self.entered.set()
            await self.release.wait()
            await super().start(on_complete)

    async def scenario() -> None:
        engine = SlowStartingEngine()
        consumer = PyrallelConsumer(_config(), None, engine=engine)
        starting = asyncio.create_task(consumer.start())
        await engine.entered.wait()
        stopping = asyncio.create_task(consumer.stop())
        await asyncio.sleep(0)
        engine.release.set()
        await starting
        await stopping

    asyncio.run(scenario())
    assert not [t for t in threading.enumerate() if t.name.startswith("pyrallel-")]
