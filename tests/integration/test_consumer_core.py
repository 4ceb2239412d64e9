"""The core guarantees of PyrallelConsumer, each shown against the real broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop
from tests.integration import process_handlers
from tests.integration.process_handlers import SpanLog, key_order_violations, span_of
from tests.support import committed, committed_map, seq_of, wait_for

from pyrallel_consumer import ConsumerConfig, Ordering, PyrallelConsumer, Record
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration

APP = Path(__file__).with_name("consumer_app.py")
ENGINES = ["async", "process"]


def _config(bootstrap: str, group: str, topic: str, **overrides: object) -> ConsumerConfig:
    values: dict[str, object] = {
        "bootstrap_servers": bootstrap, "group_id": group, "topics": [topic], "commit_interval_ms": 100,
    }
    values.update(overrides)
    return ConsumerConfig(**values)


def _all_committed(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> Callable[[], bool]:
    def check() -> bool:
        return [o for o, _ in committed(bootstrap, group, topic, len(ends))] == [ends[p] for p in sorted(ends)]

    return check


async def _partition_ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends-probe"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        consumer.close()


@pytest.mark.parametrize("engine", ENGINES)
async def test_every_record_once_in_key_order_and_commits_reach_the_end(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    await _every_record_once_in_key_order(kafka_bootstrap, new_topic, unique_name, tmp_path, monkeypatch, engine)


def test_the_async_engine_keeps_every_guarantee_on_uvloop(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same run on uvloop's event loop (the optional extra ``uvloop``): the library runs on whatever loop the
    application starts, and uvloop's is another implementation (libuv) of the interface it uses."""
    uvloop.run(_every_record_once_in_key_order(kafka_bootstrap, new_topic, unique_name, tmp_path, monkeypatch, "async"))


async def _every_record_once_in_key_order(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, engine: str,
) -> None:
    topic, group = new_topic(4), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 5000, keys=50)
    monkeypatch.setenv(process_handlers.DIR_ENV, str(tmp_path))
    handled = SpanLog(engine, tmp_path)

    async def handle(record: Record) -> None:
        started = time.monotonic_ns()
        await asyncio.sleep(0.001)
        handled.add(span_of(record, "-", started))

    handler = handle if engine == "async" else process_handlers.handle_briefly
    ends = await _partition_ends(kafka_bootstrap, topic, 4)
    config = _config(kafka_bootstrap, group, topic, max_in_flight=200, engine=engine)
    async with PyrallelConsumer(config, handler) as consumer:
        await wait_for(lambda: len(handled.spans()) >= 5000, what="5000 records")
        await wait_for(_all_committed(kafka_bootstrap, group, topic, ends), what="commits at the end")
        await wait_for(lambda: all(p.true_lag == 0 for p in consumer.metrics().partitions), what="true lag 0")
        snapshot = consumer.metrics()
    spans = handled.spans()
    assert sorted(s.seq for s in spans) == list(range(5000))
    assert key_order_violations(spans) == []
    assert snapshot.records_succeeded == 5000
    assert all(p.true_lag == 0 and p.incomplete == 0 for p in snapshot.partitions)


async def test_never_commits_past_an_incomplete_record_and_maps_the_rest(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(1), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 300, keys=300)
    release = asyncio.Event()
    done: set[int] = set()

    async def handle(record: Record) -> None:
        if record.offset == 40:
            await release.wait()
        done.add(record.offset)

    config = _config(kafka_bootstrap, group, topic, ordering=Ordering.UNORDERED)
    async with PyrallelConsumer(config, handle) as consumer:
        await wait_for(lambda: len(done) == 299, what="all but the blocked record")

        def map_covers_everything() -> bool:
            offset, omap = committed_map(kafka_bootstrap, group, topic)
            return offset == 40 and omap is not None and omap.completed_count == 259

        await wait_for(map_covers_everything, what="commit at 40 with a map of 259 done records")
        blocking = consumer.metrics().partitions[0]
        assert (blocking.blocking_offset, blocking.incomplete) == (40, 1)
        release.set()
        await wait_for(lambda: committed_map(kafka_bootstrap, group, topic)[0] == 300, what="commit at 300")
    offset, omap = committed_map(kafka_bootstrap, group, topic)
    assert (offset, omap) == (300, None)


@pytest.mark.parametrize(("engine", "commit_interval_ms"), [("async", 100), ("process", 100), ("async", 600_000)],
                         ids=["async", "process", "async-commits-follow-completions"])
def test_sigkill_restart_handles_only_the_incomplete_records_again(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
    engine: str, commit_interval_ms: int,
) -> None:
    # With commit_interval_ms=600_000 no periodic commit comes within the test: the commit the kill waits for was
    # sent because records completed (commit_min_interval_ms), and it is what keeps the restart from repeating them.
    topic, group = new_topic(1), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 1000, keys=10)
    # Records in flight when the app is killed: record 100, which blocks; with the process engine also the one
    # queued behind it on the same worker (consumer_app sets ipc_batch_size=1: one running, one queued).
    in_flight = 1 if engine == "async" else 2
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    env = {**os.environ, "PYTHONPATH": str(APP.parent)}

    def logged(path: Path) -> list[int]:
        return [int(line.split()[1]) for line in path.read_text().splitlines()] if path.exists() else []

    def blocked_at_100_and_the_rest_committed() -> bool:
        done = logged(first_log)
        offset, omap = committed_map(kafka_bootstrap, group, topic)
        return (len(done) == 1000 - in_flight and offset == 100 and omap is not None
                and omap.completed_count == sum(1 for o in done if o > 100))

    first = subprocess.Popen([sys.executable, str(APP), kafka_bootstrap, group, topic, str(first_log), "100", engine,
                              str(commit_interval_ms)], env=env)
    try:
        asyncio.run(wait_for(blocked_at_100_and_the_rest_committed, timeout_s=90,
                             what=f"commit at the slow record 100, all but {in_flight} records done and mapped"))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    first_done = logged(first_log)
    assert len(first_done) == len(set(first_done)) == 1000 - in_flight
    second = subprocess.Popen([sys.executable, str(APP), kafka_bootstrap, group, topic, str(second_log), "-", engine,
                               str(commit_interval_ms)], env=env)
    try:
        asyncio.run(wait_for(lambda: committed_map(kafka_bootstrap, group, topic)[0] == 1000,
                             timeout_s=90, what="commit at the end after the restart"))
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    # Exactly the records in flight at the kill run again: no record the first run completed is repeated.
    assert sorted(logged(second_log)) == sorted(set(range(1000)) - set(first_done))
    assert 100 in logged(second_log)


async def test_retries_keep_key_order_and_exhaustion_lets_the_partition_move_on(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(1), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 40, keys=2)  # k0: even seqs, k1: odd seqs
    attempts: dict[int, int] = defaultdict(int)
    events: list[tuple[str, int]] = []

    async def handle(record: Record) -> None:
        seq = seq_of(record.value)
        attempts[seq] += 1
        events.append(("start", seq))
        if seq == 4 and attempts[seq] <= 2:
            raise RuntimeError("transient")
        if seq == 7:
            raise ValueError("always broken")
        events.append(("ok", seq))

    config = _config(kafka_bootstrap, group, topic, max_retries=3, retry_backoff_ms=50)
    async with PyrallelConsumer(config, handle) as consumer:
        await wait_for(lambda: committed(kafka_bootstrap, group, topic, 1)[0][0] == 40, what="commit at 40")
        snapshot = consumer.metrics()
    assert attempts[4] == 3
    assert attempts[7] == 4
    assert snapshot.records_failed == 1
    assert snapshot.records_succeeded == 39
    order = [seq for kind, seq in events if kind == "start"]
    # seq 6 (same key as 4) starts only after 4's last attempt; seq 9 (same key as 7) after 7's last.
    assert order.index(6) > max(i for i, s in enumerate(order) if s == 4)
    assert order.index(9) > max(i for i, s in enumerate(order) if s == 7)


async def test_handler_timeout_is_a_failed_attempt(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(1), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 3, keys=3)
    calls: dict[int, int] = defaultdict(int)

    async def handle(record: Record) -> None:
        calls[record.offset] += 1
        if record.offset == 1:
            await asyncio.sleep(3600)

    config = _config(kafka_bootstrap, group, topic, task_timeout_ms=200, max_retries=1, retry_backoff_ms=10)
    async with PyrallelConsumer(config, handle) as consumer:
        await wait_for(lambda: committed(kafka_bootstrap, group, topic, 1)[0][0] == 3, what="commit at 3")
        assert consumer.metrics().records_failed == 1
    assert calls == {0: 1, 1: 2, 2: 1}


@pytest.mark.parametrize("drain", [True, False])
async def test_stop_drains_or_cancels_in_flight_records(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], drain: bool
) -> None:
    topic, group = new_topic(1), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 10, keys=10)
    started: set[int] = set()
    finished: set[int] = set()

    async def handle(record: Record) -> None:
        started.add(record.offset)
        if record.offset >= 5:
            await asyncio.sleep(0.5)
        finished.add(record.offset)

    consumer = PyrallelConsumer(_config(kafka_bootstrap, group, topic, ordering=Ordering.UNORDERED), handle)
    await consumer.start()
    await wait_for(lambda: len(started) == 10 and len(finished) == 5, what="five done, five in flight")
    await consumer.stop(drain=drain)
    offset = committed(kafka_bootstrap, group, topic, 1)[0][0]
    if drain:
        assert finished == set(range(10))
        assert offset == 10
    else:
        assert finished == set(range(5))
        assert offset == 5


async def test_backpressure_pauses_fetching_and_bounds_what_is_held(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(2), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 20_000, keys=4)
    gate = asyncio.Event()
    peaks: list[int] = []

    async def handle(record: Record) -> None:
        await gate.wait()

    config = _config(kafka_bootstrap, group, topic, max_in_flight=50, queue_max_messages=500)
    async with PyrallelConsumer(config, handle) as consumer:
        await wait_for(lambda: consumer.metrics().paused_partitions > 0, what="fetch paused by backpressure")
        for _ in range(40):
            snap = consumer.metrics()
            peaks.append(snap.queued + snap.in_flight)
            await asyncio.sleep(0.05)
        held = consumer.metrics().records_received
        gate.set()
        await wait_for(lambda: consumer.metrics().records_succeeded == 20_000, what="all records after release")
    # Only 4 keys: at most 4 in flight, and the queue stops growing near its limit (plus one fetch batch).
    assert max(peaks) <= 500 + 2 * 500
    assert held < 20_000


async def test_large_records_are_bounded_by_queue_max_bytes(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    """100 KB records and a 1 MiB queue: fetching stops near 1 MiB although 10,000 records would be allowed."""
    topic, group = new_topic(1), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 200, keys=2, value_size=100_000)
    release = asyncio.Event()
    peaks: list[int] = []

    async def handle(record: Record) -> None:
        await release.wait()

    config = _config(kafka_bootstrap, group, topic, max_in_flight=2, queue_max_bytes=1 << 20)
    async with PyrallelConsumer(config, handle) as consumer:
        await wait_for(lambda: consumer.metrics().queued >= 8, what="the queue filling up")
        for _ in range(20):
            peaks.append(consumer.metrics().queued)
            await asyncio.sleep(0.05)
        release.set()
        await wait_for(lambda: consumer.metrics().records_succeeded == 200, what="every record after the release")
    assert max(peaks) <= 12, f"about 10 records of 100 KB fit in 1 MiB, queued up to {max(peaks)}"


async def test_a_backlog_in_large_record_batches_keeps_every_partition_running(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    """One partition's record batch can fill the whole queue; holding that partition lets the others in.

    The records are produced in batches of thousands, so every fetch hands out a long run of one partition.
    Were the queue bound global only, PARTITION order would run one record at a time for about a minute.
    """
    topic, group = new_topic(4), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 12_000, keys=40)
    running: set[int] = set()
    most_at_once = 0

    async def handle(record: Record) -> None:
        nonlocal most_at_once
        running.add(record.partition)
        most_at_once = max(most_at_once, len(running))
        await asyncio.sleep(0.02)
        running.discard(record.partition)

    config = _config(kafka_bootstrap, group, topic, ordering=Ordering.PARTITION, queue_max_messages=400)
    async with PyrallelConsumer(config, handle) as consumer:
        await wait_for(lambda: most_at_once == 4, timeout_s=30, what="all four partitions handled at once")
        snap = consumer.metrics()
        assert snap.queued <= 400 + 4 * (150 + 1000), "held partitions stay bounded"


async def test_a_full_queue_for_longer_than_max_poll_interval_keeps_the_group_membership(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    """Handlers stuck past max.poll.interval.ms: fetching is paused but polling goes on, so no rebalance.

    One partition, so that no partition is held on its own and the fetch gate is what stops fetching.
    """
    topic, group = new_topic(1), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, 3_000, keys=10)
    release = asyncio.Event()

    async def handle(record: Record) -> None:
        await release.wait()

    config = _config(kafka_bootstrap, group, topic, max_in_flight=10, queue_max_messages=200,
                     kafka={"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000",
                            "max.poll.interval.ms": "7000"})
    async with PyrallelConsumer(config, handle) as consumer:
        await wait_for(lambda: consumer.metrics().in_flight == 10, what="ten records stuck in flight")
        await asyncio.sleep(9.0)  # past max.poll.interval.ms: a member that stopped polling is evicted by now
        release.set()
        await wait_for(lambda: consumer.metrics().records_succeeded == 3_000, what="every record after the release")
        rebalances = consumer.metrics().rebalances
    assert rebalances["revoke"] == 0 and rebalances["lost"] == 0, rebalances


async def test_an_observer_sees_every_record_outcome_once(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
) -> None:
    """The public per-record hook: each record once, with how its attempts ended (a failure after its retries)."""
    from pyrallel_consumer import Completion, ConsumerObserver

    topic, group = new_topic(2), unique_name("g")
    assert produce_keyed(kafka_bootstrap, topic, 200, keys=20) == 200
    seen: list[tuple[int, bool, int]] = []

    class Recorder(ConsumerObserver):
        def record_completed(self, record: Record, completion: Completion) -> None:
            seen.append((seq_of(record.value), completion.ok, completion.attempts))

    async def handle(record: Record) -> None:
        if seq_of(record.value) % 50 == 7:
            raise ValueError("poison")

    config = _config(kafka_bootstrap, group, topic, max_retries=1, retry_backoff_ms=0)
    async with PyrallelConsumer(config, handle, observer=Recorder()):
        await wait_for(lambda: len(seen) >= 200, what="200 outcomes")
    assert sorted(s for s, _, _ in seen) == list(range(200)), "each record once"
    failed = sorted((s, attempts) for s, ok, attempts in seen if not ok)
    assert failed == [(7, 2), (57, 2), (107, 2), (157, 2)]
