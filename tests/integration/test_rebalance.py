"""Hand-over between group members: nothing lost, per-key order kept, no stale commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tests.integration import process_handlers
from tests.integration.process_handlers import SpanLog, key_order_violations, span_of
from tests.support import committed, log_ends, seq_of, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelConsumer, Record
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration

RECORDS = 8000
PROCESS_HANDLERS = {"first": process_handlers.handle_as_first, "second": process_handlers.handle_as_second}


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
@pytest.mark.parametrize("engine", ["async", "process"])
async def test_member_joins_then_first_leaves_without_loss_or_reordering(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, engine: str, protocol: str,
) -> None:
    topic, group = new_topic(6), unique_name("g")
    half = RECORDS // 2
    produce_keyed(kafka_bootstrap, topic, half, keys=60)
    monkeypatch.setenv(process_handlers.DIR_ENV, str(tmp_path))
    handled = SpanLog(engine, tmp_path)

    def handler(name: str) -> object:
        # 20 records in flight at 20 ms each (async) or 2 worker processes at 2 ms each: a similar pace.
        async def handle(record: Record) -> None:
            started = time.monotonic_ns()
            await asyncio.sleep(0.02)
            handled.add(span_of(record, name, started))

        return handle if engine == "async" else PROCESS_HANDLERS[name]

    def config() -> ConsumerConfig:
        return ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], engine=engine,
                              process_workers=2, max_in_flight=20, commit_interval_ms=200, group_protocol=protocol)

    def seqs() -> list[int]:
        return [s.seq for s in handled.spans()]

    first = PyrallelConsumer(config(), handler("first"))
    second = PyrallelConsumer(config(), handler("second"))
    await first.start()
    try:
        await wait_for(lambda: len(seqs()) >= RECORDS // 5, what="first member under way")
        await second.start()
        # The second half only once the group has split: under KIP-848 a member learns of a new assignment at
        # its next heartbeat (5 s), by which time the first member might have handled everything alone.
        await wait_for(lambda: len(second.lifecycle.status()["assigned_partitions"]) > 0, what="the group split")
        produce_keyed(kafka_bootstrap, topic, half, keys=60, start_seq=half)
        await wait_for(lambda: any(s.member == "second" for s in handled.spans()), what="second member handling")
        await wait_for(lambda: len(seqs()) >= half + RECORDS // 8, what="both under way")
        await first.stop(drain=True)
        await wait_for(lambda: len(set(seqs())) == RECORDS, timeout_s=120, what="all records")
        await wait_for(lambda: sum(o for o, _ in committed(kafka_bootstrap, group, topic, 6)) == RECORDS,
                       what="commits at the end")
    finally:
        await first.stop()
        await second.stop()
    spans = handled.spans()
    assert sorted({s.seq for s in spans}) == list(range(RECORDS))
    assert len(spans) == RECORDS, f"{len(spans) - RECORDS} records were handled twice across the hand-over"
    assert key_order_violations(spans) == []
    assert {s.member for s in spans} == {"first", "second"}


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
async def test_a_settled_group_of_three_gives_every_member_a_partition(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], protocol: str,
) -> None:
    """Three members on eight partitions: once the group has settled, none of them sits idle, each partition has
    exactly one owner, and each member handles the records of what it owns."""
    partitions, records = 8, 800
    topic, group = new_topic(partitions), unique_name("g")
    handled: dict[str, list[tuple[int, int]]] = {f"m{n}": [] for n in range(3)}

    def handler(name: str) -> Callable[[Record], Awaitable[None]]:
        async def handle(record: Record) -> None:
            handled[name].append((record.partition, seq_of(record.value)))

        return handle

    members = {name: PyrallelConsumer(ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group,
                                                     topics=[topic], instance_id=name, group_protocol=protocol),
                                      handler(name))
               for name in handled}

    def owned() -> dict[str, set[str]]:
        return {name: set(m.lifecycle.status()["assigned_partitions"]) for name, m in members.items()}

    def covered() -> bool:
        return len(set().union(*owned().values())) == partitions

    def spread() -> bool:
        now = owned()
        return (all(now.values()) and len(set().union(*now.values())) == partitions
                and sum(len(p) for p in now.values()) == partitions)

    try:
        for member in members.values():
            await member.start()
        await wait_for(covered, what="the union of the members' assignments covering all 8 partitions")
        try:
            await wait_for(spread, what="every member owning a partition, each partition one owner")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; ownership at the deadline: {owned()}") from None
        produce_keyed(kafka_bootstrap, topic, records, keys=64)
        await wait_for(lambda: len({s for h in handled.values() for _, s in h}) == records,
                       what="every record handled")
    finally:
        for member in members.values():
            await member.stop()
    assert sorted({s for h in handled.values() for _, s in h}) == list(range(records))
    counts = {name: len(h) for name, h in handled.items()}
    assert all(counts.values()), f"a member of a settled group handled nothing: {counts}"


async def test_the_commit_after_a_join_covers_what_the_refused_commits_carried(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A member joins while the first is busy. Periodic commits sent while the group changes generation are refused
    (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS): counted, logged at INFO, never as a commit failure; and once both
    members are done, the offsets committed by the running members (no stop, whose commit would cover it up) are
    the produced end of every partition."""
    partitions, records = 4, 600
    half = records // 2
    topic, group = new_topic(partitions), unique_name("g")
    handled: set[int] = set()
    caplog.set_level(logging.INFO, logger="pyrallel_consumer.control.commit_schedule")

    async def handle(record: Record) -> None:
        await asyncio.sleep(0.02)  # 4 in flight: about 200 records/s per member, so the join falls into the load
        handled.add(seq_of(record.value))

    members = [PyrallelConsumer(ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic],
                                               instance_id=name, max_in_flight=4, commit_interval_ms=100), handle)
               for name in ("first", "second")]
    produce_keyed(kafka_bootstrap, topic, half, keys=40)
    try:
        await members[0].start()
        await wait_for(lambda: len(handled) >= half // 8, what="the first member under way")
        await members[1].start()
        await wait_for(lambda: len(members[1].lifecycle.status()["assigned_partitions"]) > 0, what="the group split")
        produce_keyed(kafka_bootstrap, topic, half, keys=40, start_seq=half)  # work for both after the rebalance
        ends = log_ends(kafka_bootstrap, topic, partitions)
        await wait_for(lambda: len(handled) == records, what="every record handled")
        await wait_for(lambda: [o for o, _ in committed(kafka_bootstrap, group, topic, partitions)] == ends,
                       what=f"the committed offsets at the produced ends {ends}")
        refused = sum(m.metrics_registry.get_sample_value("pyrallel_commit_rebalance_refusals_total") or 0
                      for m in members)
    finally:
        for member in members:
            await member.stop()
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "commit_failed" not in events, "a refusal during the rebalance was logged as a commit failure"
    assert events.count("commit_refused_in_rebalance") <= refused, "at most one line per refusal, none without"
