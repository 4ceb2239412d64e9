"""Mistakes that show at start() or construction, with nothing left running behind them."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import pytest

from pyrallel_consumer import BrokerUnreachableError, ConfigError, ConsumerConfig, PyrallelConsumer, Record
from pyrallel_consumer.execution.async_engine import AsyncExecutionEngine
from pyrallel_consumer.execution.engine import Completion, CompletionCallback, RetryPolicy
from pyrallel_consumer.kafka import topic_check
from pyrallel_consumer.observability.librdkafka_log import BURST, LIBRDKAFKA_LOGGER
from pyrallel_consumer.observability.metrics import RecordStats

pytestmark = pytest.mark.unit


async def handle(record: Record) -> None:
    """Never called here."""


def _config(**extra: object) -> ConsumerConfig:
    return ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"], missing_topic="wait",
                          **extra)  # type: ignore[arg-type]


def test_misspelt_kafka_property_fails_start_and_leaves_no_thread() -> None:
    """model_copy(update=...) skips validation: the property then shows at start(), still as a ConfigError."""
    async def scenario() -> None:
        config = _config().model_copy(update={"kafka": {"sesion.timeout.ms": "6000"}})
        consumer = PyrallelConsumer(config, handle)
        with pytest.raises(ConfigError, match=r"kafka: librdkafka refuses 'sesion\.timeout\.ms'"):
            await consumer.start()
        await consumer.stop()  # after a failed start: nothing left to stop, no error

    asyncio.run(scenario())
    assert not [t for t in threading.enumerate() if t.name.startswith("pyrallel-")]


def test_misspelt_dead_letter_property_is_a_config_error() -> None:
    config = _config().model_copy(update={"dlq_enabled": True, "dlq_kafka": {"lingerr.ms": "5"}})
    with pytest.raises(ConfigError, match=r"dlq_kafka: librdkafka refuses 'lingerr\.ms'"):
        PyrallelConsumer(config, handle)


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


def _closed_port() -> int:
    """A loopback port nobody listens on (bound for a moment to find a free one, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _get_status(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return int(raw.split(b" ", 2)[1])


def test_unreachable_broker_is_not_ready_and_its_connection_errors_are_not_a_flood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """missing_topic="wait" starts at once; /readyz says 503 while no broker answers, and the connection
    failures librdkafka reports every 50 ms show as a line now and then, not twenty a second."""
    bootstrap = f"127.0.0.1:{_closed_port()}"
    watched_s = 3.0

    async def scenario() -> list[int]:
        config = ConsumerConfig(bootstrap_servers=bootstrap, group_id="g", topics=["t"], missing_topic="wait",
                                control_port=0)
        statuses = []
        async with PyrallelConsumer(config, handle) as consumer:
            assert consumer.control_server is not None
            deadline = time.monotonic() + watched_s
            while time.monotonic() < deadline:
                statuses.append(await _get_status(consumer.control_server.port, "/readyz"))
                await asyncio.sleep(0.25)
            assert await _get_status(consumer.control_server.port, "/healthz") == 200
        return statuses

    with caplog.at_level(logging.INFO, logger=LIBRDKAFKA_LOGGER):
        statuses = asyncio.run(scenario())
    assert set(statuses) == {503}
    failures = [r for r in caplog.records if r.name == f"{LIBRDKAFKA_LOGGER}.consumer" and "Connect to" in r.message]
    assert 1 <= len(failures) <= BURST, f"{len(failures)} connection-error lines in {watched_s}s"


def test_unreachable_bootstrap_is_named_for_what_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """missing_topic="fail" asks the broker for the topics first; nobody answering is not a missing topic."""
    monkeypatch.setattr(topic_check, "TOPIC_CHECK_TIMEOUT_S", 2.0)  # 15 s in production
    bootstrap = f"127.0.0.1:{_closed_port()}"
    config = ConsumerConfig(bootstrap_servers=bootstrap, group_id="g", topics=["t"])

    async def scenario() -> None:
        await PyrallelConsumer(config, handle).start()

    with pytest.raises(BrokerUnreachableError) as caught:
        asyncio.run(scenario())
    assert not isinstance(caught.value, topic_check.MissingTopicError)
    assert bootstrap in str(caught.value)
    assert "Connection refused" in str(caught.value)
    assert not [t for t in threading.enumerate() if t.name.startswith("pyrallel-")]
