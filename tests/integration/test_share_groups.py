"""Share groups (KIP-932) on the real local broker: PyrallelShareConsumer instances sharing a topic's records."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support import http, read_all, seq_of, wait_for

from pyrallel_consumer import ConsumerConfig, PyrallelShareConsumer, Record
from pyrallel_tools.benchmark.share import set_share_group
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration

DELIVERY_LIMIT = 3
LOCK_MS = 2000
BATCH = 10
MAX_BATCHES = 30
APP = Path(__file__).with_name("share_app.py")
KILL_LOCK_MS = 3000
KILL_RECORDS = 300


def scrape(port: int | None) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def failing_once(seq: int) -> bool:
    return seq % 10 == 1


POISON = 7


async def test_three_instances_share_two_partitions_with_retries_and_a_dead_letter_topic(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    topic, group = new_topic(2), unique_name("share")
    dlq = f"{topic}.dlq"
    set_share_group(kafka_bootstrap, group, {
        "share.record.lock.duration.ms": str(LOCK_MS),
        "share.delivery.count.limit": str(DELIVERY_LIMIT)})
    handled: list[dict[int, int]] = [{}, {}, {}]  # per instance: seq -> successful handlings
    attempts: dict[int, int] = {}

    def handler_of(instance: int) -> Callable[[Record], object]:
        async def handle(record: Record) -> None:
            seq = seq_of(record.value)
            attempts[seq] = attempts.get(seq, 0) + 1
            await asyncio.sleep(0.05)  # slow enough that one member cannot take everything
            if seq == POISON or (failing_once(seq) and attempts[seq] == 1):
                raise RuntimeError(f"record {seq} fails")
            handled[instance][seq] = handled[instance].get(seq, 0) + 1
        return handle

    config = ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], group_type="share",
                            ordering="unordered", max_retries=0, dlq_enabled=True, max_in_flight=5,
                            drain_timeout_ms=5000, metrics_port=0)
    consumers = [PyrallelShareConsumer(config, handler_of(i)) for i in range(3)]
    # Produced before any member joined: the library sets the new group's share.auto.offset.reset to earliest.
    produced = await asyncio.to_thread(produce_keyed, kafka_bootstrap, topic, BATCH, 5, 16, 0)
    for consumer in consumers:
        await consumer.start()
    try:
        # Members join over a few seconds: keep producing small batches until every one has handled records.
        while not all(handled) and produced < BATCH * MAX_BATCHES:
            produced += await asyncio.to_thread(produce_keyed, kafka_bootstrap, topic, BATCH, 5, 16, produced)
            await wait_for(lambda target=produced: len(attempts) >= target, 30,  # type: ignore[misc]
                           "the new batch to be acquired")
        assert all(handled), f"an instance handled nothing: {[len(h) for h in handled]}"

        def accepted() -> int:
            return sum(c.metrics().acknowledged["accept"] for c in consumers)

        await wait_for(lambda: accepted() >= produced, 60, "every record to be accepted")
        ports = [c.metrics_port for c in consumers]
        assert "pyrallel_share_acknowledgements_total" in await asyncio.to_thread(scrape, ports[0])
    finally:
        for consumer in consumers:
            await consumer.stop()
    for port in ports:  # each instance's /metrics ends with it
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(scrape, port)
    every = set(range(produced))
    succeeded = set().union(*handled)
    assert succeeded == every - {POISON}
    metrics = [c.metrics() for c in consumers]
    assert sum(m.acknowledged["accept"] for m in metrics) == produced  # each record accepted exactly once
    assert sum(m.acknowledged["reject"] for m in metrics) == 0
    assert attempts[POISON] == DELIVERY_LIMIT
    for seq in every:
        if failing_once(seq):
            assert attempts[seq] == 2, f"record {seq} should have been released once and then succeeded"
    assert sum(m.acknowledged["release"] for m in metrics) >= len([s for s in every if failing_once(s)])
    dead = read_all(kafka_bootstrap, dlq, 1, timeout_s=20)
    assert [seq_of(m.value()) for m in dead] == [POISON]
    assert sum(m.dead_lettered for m in metrics) == 1
    assert sum(m.deliveries.get(DELIVERY_LIMIT, 0) for m in metrics) >= 1


def logged(log: Path, kind: str) -> set[int]:
    """The sequence numbers share_app wrote as ``kind`` (handled, blocked) to ``log``."""
    lines = log.read_text().splitlines() if log.exists() else []
    return {int(line.split()[1]) for line in lines if line.startswith(f"{kind} ")}


@pytest.mark.parametrize("engine", ["async", "process"])
async def test_a_sigkilled_members_records_come_back_after_the_lock_and_every_record_is_accepted_once(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
    engine: str,
) -> None:
    """A member process (``engine``) handles 10 records, hangs on the next ones and is SIGKILLed holding them; two
    members in this process finish. Judged against the producer's delivery reports: every record handled at least
    once, the held ones redelivered (delivery 2) after the lock, and the survivors accept exactly the records whose
    acceptance the killed member had not sent."""
    topic, group = new_topic(2), unique_name("share-kill")
    set_share_group(kafka_bootstrap, group, {"share.record.lock.duration.ms": str(KILL_LOCK_MS)})
    produced = await asyncio.to_thread(produce_keyed, kafka_bootstrap, topic, KILL_RECORDS, 5, 16, 0)
    log = tmp_path / "killed.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(APP.parent), os.environ.get("PYTHONPATH", "")])}
    with (tmp_path / "killed.out").open("wb") as output:
        proc = subprocess.Popen(  # noqa: ASYNC220 - starting it takes milliseconds; it is waited for in a thread
            [sys.executable, str(APP), kafka_bootstrap, group, topic, str(log), "10", engine],
            env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    seen: dict[int, int] = {}  # seq -> handlings by the survivors

    async def handle(record: Record) -> None:
        await asyncio.sleep(0.005)
        seq = seq_of(record.value)
        seen[seq] = seen.get(seq, 0) + 1

    config = ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], group_type="share",
                            ordering="unordered", max_in_flight=8, drain_timeout_ms=5000)
    survivors = [PyrallelShareConsumer(config, handle) for _ in range(2)]
    try:
        await wait_for(lambda: bool(logged(log, "blocked")), 60, "the member process to hold records it hangs on")
        for survivor in survivors:
            await survivor.start()
        os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        killed_handled, blocked = logged(log, "handled"), logged(log, "blocked")

        def accepted() -> int:
            return sum(s.metrics().acknowledged["accept"] for s in survivors)

        def finished() -> bool:
            return set(range(produced)) <= killed_handled | set(seen) and \
                accepted() >= len(set(range(produced)) - (killed_handled - set(seen)))

        await wait_for(finished, 60, "every record handled and accepted")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for survivor in survivors:
            await survivor.stop()
    every = set(range(produced))
    assert produced == KILL_RECORDS
    assert every <= killed_handled | set(seen), "every record handled at least once"
    assert blocked <= set(seen), "the records the killed member held came back to the survivors"
    metrics = [s.metrics() for s in survivors]
    assert sum(m.deliveries.get(2, 0) for m in metrics) >= len(blocked), "redelivered after the lock, counted"
    # Accepted exactly once: what the killed member accepted is never delivered again, the rest once by survivors.
    assert accepted() == len(every - (killed_handled - set(seen)))
    assert sum(m.acknowledged["reject"] for m in metrics) == 0
    print(f"\nshare SIGKILL ({engine}): killed member handled {len(killed_handled)}, held {len(blocked)} blocked; "
          f"handled twice {len(killed_handled & set(seen))}; survivors accepted {accepted()} of {produced}")


async def test_a_paused_member_settles_its_records_and_leaves_the_others_the_whole_topic_until_resumed(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str]
) -> None:
    """Pause and resume over the HTTP lifecycle API, as for a consumer group: while one of two members is paused, the
    other acquires every new record (the paused one left the group, so none of its partitions is starved)."""
    topic, group = new_topic(2), unique_name("share-pause")
    handled: list[list[int]] = [[], []]

    def handler_of(instance: int) -> Callable[[Record], object]:
        async def handle(record: Record) -> None:
            await asyncio.sleep(0.01)
            handled[instance].append(seq_of(record.value))
        return handle

    def config(**extra: object) -> ConsumerConfig:
        return ConsumerConfig(bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], group_type="share",
                              ordering="unordered", max_in_flight=5, metrics_port=0, **extra)

    paused = PyrallelShareConsumer(config(control_port=0), handler_of(0))
    produced = await asyncio.to_thread(produce_keyed, kafka_bootstrap, topic, 20, 5, 16, 0)
    async with paused:
        if paused.control_server is None:
            raise AssertionError("control_port=0 serves the lifecycle API")
        url = paused.control_server.url
        await wait_for(lambda: len(handled[0]) == produced, 60, "the first records to be handled")
        status, body = await http("POST", f"{url}/lifecycle/pause?wait=30")
        assert (status, body["state"]) == (200, "PAUSED")
        status, body = await http("GET", f"{url}/lifecycle/status")
        assert (body["group_type"], body["in_flight"], body["records_succeeded"]) == ("share", 0, produced)
        gauge = f'kafka_consumer_lifecycle_state{{color="",group="{group}",instance="{paused.config.instance_id}"'
        assert f'{gauge},state="PAUSED"}} 1.0' in await asyncio.to_thread(scrape, paused.metrics_port)

        produced += await asyncio.to_thread(produce_keyed, kafka_bootstrap, topic, 20, 5, 16, produced)
        async with PyrallelShareConsumer(config(), handler_of(1)):
            await wait_for(lambda: len(handled[1]) == 20, 60, "the other member to handle every new record")
        assert len(handled[0]) == 20, "the paused member acquired nothing"

        status, body = await http("POST", f"{url}/lifecycle/resume?wait=30")
        assert (status, body["state"]) == (200, "ACTIVE")
        produced += await asyncio.to_thread(produce_keyed, kafka_bootstrap, topic, 20, 5, 16, produced)
        await wait_for(lambda: len(handled[0]) == 40, 60, "the resumed member to handle the last records")
    assert sorted(handled[0] + handled[1]) == list(range(produced))
