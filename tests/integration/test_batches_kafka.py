"""Batch handlers against the real broker: every record once, key order across batches, partial failures retried
alone, dead letters per record, commits at the end. How long lingering makes records wait is measured by the
benchmark (``pyrallel bench --suite batch``), not asserted here."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tests.integration import batch_handlers
from tests.integration.batch_handlers import CallLog, key_order_violations
from tests.support import committed_total, read_all, seq_of, wait_for

from pyrallel_consumer import BatchResult, ConsumerConfig, Ordering, PyrallelConsumer, Record
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration

ENGINES = ["async", "process"]


def _config(bootstrap: str, group: str, topic: str, **extra: object) -> ConsumerConfig:
    values: dict[str, object] = {
        "bootstrap_servers": bootstrap, "group_id": group, "topics": [topic], "commit_interval_ms": 100,
        "batch_max_records": 50, "batch_linger_ms": 5, "max_retries": 2, "retry_backoff_ms": 10,
        "max_retry_backoff_ms": 100,
    }
    values.update(extra)
    return ConsumerConfig(**values)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("ordering", [Ordering.KEY, Ordering.PARTITION])
async def test_every_record_once_in_key_order_across_batches(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, engine: str, ordering: Ordering,
) -> None:
    topic, group = new_topic(4), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 4000, keys=40)
    monkeypatch.setenv(batch_handlers.DIR_ENV, str(tmp_path))
    log = CallLog(engine, tmp_path)

    async def handle_batch(records: list[Record]) -> None:
        await batch_handlers.handle_batch_briefly_async(records, log)

    handler = handle_batch if engine == "async" else batch_handlers.handle_batch_briefly
    config = _config(kafka_bootstrap, group, topic, engine=engine, ordering=ordering, max_in_flight=400)
    async with PyrallelConsumer(config, batch_handler=handler) as consumer:
        await wait_for(lambda: len(log.handled()) >= 4000, what="4000 records")
        await wait_for(lambda: committed_total(kafka_bootstrap, group, topic, 4) == 4000, what="commits at the end")
        snapshot = consumer.metrics()
    handled = log.handled()
    assert sorted(h.seq for h in handled) == list(range(4000)), "every record once"
    assert key_order_violations(handled) == []
    if ordering is Ordering.PARTITION:
        by_partition = [h._replace(key="-") for h in handled]
        assert key_order_violations(by_partition) == [], "one batch at a time per partition, in offset order"
    calls = log.calls()
    assert max(len(records) for records in calls.values()) <= 50
    assert len(calls) < 4000 / 2, "records travel in batches"
    assert snapshot.records_succeeded == 4000


async def test_a_partial_failure_retries_only_the_records_it_names(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
) -> None:
    topic, group = new_topic(3), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 1500, keys=30)
    attempts: Counter[int] = Counter()
    calls: list[list[tuple[int, int]]] = []
    """(seq, attempt) of each record of each call."""

    async def handle_batch(records: list[Record]) -> BatchResult | None:
        call = []
        for record in records:
            seq = seq_of(record.value)
            attempts[seq] += 1
            call.append((seq, attempts[seq]))
        calls.append(call)
        failed = [record for record, (seq, attempt) in zip(records, call, strict=True)
                  if seq % 10 == 3 and attempt == 1]
        return BatchResult(failed) if failed else None

    async with PyrallelConsumer(_config(kafka_bootstrap, group, topic), batch_handler=handle_batch) as consumer:
        await wait_for(lambda: committed_total(kafka_bootstrap, group, topic, 3) == 1500, what="commits at the end")
        snapshot = consumer.metrics()
    named = {seq for seq in range(1500) if seq % 10 == 3}
    assert attempts == Counter({seq: 2 if seq in named else 1 for seq in range(1500)})
    retry_calls = [call for call in calls if any(attempt == 2 for _, attempt in call)]
    assert all(attempt == 2 and seq in named for call in retry_calls for seq, attempt in call), (
        "a retry holds only records the BatchResult named, never a fresh one")
    assert sorted(seq for call in retry_calls for seq, _ in call) == sorted(named)
    assert snapshot.records_succeeded == 1500
    assert snapshot.records_failed == 0


async def test_records_failing_every_attempt_are_dead_lettered_one_by_one(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(3), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 600, keys=60)
    succeeded: Counter[int] = Counter()

    async def handle_batch(records: list[Record]) -> BatchResult:
        failed: dict[Record, BaseException] = {}
        for record in records:
            seq = seq_of(record.value)
            if seq % 20 == 7:
                failed[record] = ValueError(f"bad record {seq}")
        for record in records:
            if record not in failed:
                succeeded[seq_of(record.value)] += 1
        return BatchResult(failed)

    config = _config(kafka_bootstrap, group, topic, dlq_enabled=True, max_retries=1)
    async with PyrallelConsumer(config, batch_handler=handle_batch) as consumer:
        await wait_for(lambda: committed_total(kafka_bootstrap, group, topic, 3) == 600, what="commits at the end")
        snapshot = consumer.metrics()
    failing = {seq for seq in range(600) if seq % 20 == 7}
    assert succeeded == Counter(set(range(600)) - failing), "the others succeeded once, never retried"
    assert snapshot.records_failed == len(failing)
    dead = read_all(kafka_bootstrap, f"{topic}.dlq", len(failing))
    assert sorted(seq_of(m.value()) for m in dead) == sorted(failing)
    for message in dead:
        headers = dict(message.headers())
        assert headers["x-error-type"] == b"ValueError"
        assert headers["x-error-message"] == f"bad record {seq_of(message.value())}".encode()
        assert headers["x-attempts"] == b"2"


def test_readme_batch_example_writes_ten_thousand_records(
    kafka_bootstrap: str, new_topic: Callable[[int], str], tmp_path: Path
) -> None:
    """The README's batch example runs as written (only the address and topic are swapped for the test's)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = next((block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "batch_handler=" in block),
                   None)
    assert example is not None
    topic = new_topic(8)
    produce_keyed(kafka_bootstrap, topic, 10_000, keys=100)
    code = example.replace('"127.0.0.1:9092"', repr(kafka_bootstrap)).replace('["orders"]', repr([topic]))
    script = tmp_path / "batch_example.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "written=10000" in run.stdout


async def test_a_paused_batch_consumer_finishes_its_batches_and_resumes_without_duplicates(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(4), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 3000, keys=30)
    handled: list[tuple[float, int]] = []

    async def handle_batch(records: list[Record]) -> None:
        await asyncio.sleep(0.005)
        now = time.monotonic()
        handled.extend((now, seq_of(record.value)) for record in records)

    config = _config(kafka_bootstrap, group, topic, pause_mode="hold", max_in_flight=200)
    async with PyrallelConsumer(config, batch_handler=handle_batch) as consumer:
        await wait_for(lambda: len(handled) >= 500, what="500 records")
        await consumer.lifecycle.pause(timeout_s=30)
        paused_at = time.monotonic()
        await asyncio.sleep(0.5)  # a window in which a batch handled while PAUSED would show
        await consumer.lifecycle.resume(timeout_s=30)
        resumed_at = time.monotonic()
        await wait_for(lambda: committed_total(kafka_bootstrap, group, topic, 4) == 3000, what="commits at the end")
    assert sorted(seq for _, seq in handled) == list(range(3000)), "the pause drained its batches: none ran twice"
    assert not [seq for t, seq in handled if paused_at <= t < resumed_at], "handled while PAUSED"


async def test_a_member_joins_then_the_first_leaves_without_loss_duplicates_or_reordering(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
) -> None:
    topic, group = new_topic(6), unique_name("g")
    records, half = 6000, 3000
    produce_keyed(kafka_bootstrap, topic, half, keys=60)
    log = CallLog("async", tmp_path)
    members: dict[str, set[str]] = {"first": set(), "second": set()}

    def handler(name: str) -> Callable[[list[Record]], Awaitable[None]]:
        async def handle_batch(records: list[Record]) -> None:
            started = time.monotonic_ns()
            await asyncio.sleep(0.02)
            handled = batch_handlers.handled_in_call(records, started)
            members[name].update(h.call for h in handled)
            log.add(handled)

        return handle_batch

    def config() -> ConsumerConfig:
        return _config(kafka_bootstrap, group, topic, max_in_flight=100, batch_max_records=20,
                       commit_interval_ms=200)

    def seqs() -> list[int]:
        return [h.seq for h in log.handled()]

    first = PyrallelConsumer(config(), batch_handler=handler("first"))
    second = PyrallelConsumer(config(), batch_handler=handler("second"))
    await first.start()
    try:
        await wait_for(lambda: len(seqs()) >= records // 5, what="first member under way")
        await second.start()
        await wait_for(lambda: len(second.lifecycle.status()["assigned_partitions"]) > 0, what="the group split")
        produce_keyed(kafka_bootstrap, topic, half, keys=60, start_seq=half)
        await wait_for(lambda: bool(members["second"]), what="second member handling")
        await wait_for(lambda: len(seqs()) >= half + records // 8, what="both under way")
        await first.stop(drain=True)
        await wait_for(lambda: len(set(seqs())) == records, timeout_s=120, what="all records")
        await wait_for(lambda: committed_total(kafka_bootstrap, group, topic, 6) == records, what="commits at the end")
    finally:
        await first.stop()
        await second.stop()
    handled = log.handled()
    assert sorted({h.seq for h in handled}) == list(range(records))
    assert len(handled) == records, f"{len(handled) - records} records were handled twice across the hand-over"
    assert key_order_violations(handled) == []
    assert all(members.values())
