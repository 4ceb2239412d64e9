"""Exactly-once across a broker crash on the 3-broker cluster (RF 3, ``min.insync.replicas=2``): the group's
coordinator is SIGKILLed while two exactly-once consumers run (transactions open, offsets sent to it), stays down
while they go on, and is started again. A read_committed reader then sees every input's output exactly once, in key
order (tests/eos_support.py judges against the input producer's delivery reports).

The consumers keep librdkafka's 45 s session, as in test_broker_faults.py: the fault is the broker, not a rebalance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from pyrallel_tools.localkafka.cluster import LocalKafka
from pyrallel_tools.localkafka.topics import create_topic
from tests.eos_support import (
    EosConsumer,
    InputProducer,
    OutputWatcher,
    assert_exactly_once,
    judge_outputs,
    read_outputs,
    wait_until,
)
from tests.faults.harness import group_coordinator

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITIONS = 6
WAIT_S = 180.0
SESSION_TIMEOUT_MS = 45_000


def _bootstrap(cluster: LocalKafka) -> str:
    state = cluster.state()
    if state is None:
        raise RuntimeError("the fault cluster is not running")
    return state.bootstrap


@pytest.fixture
def consumers() -> Iterator[list[EosConsumer]]:
    started: list[EosConsumer] = []
    yield started
    for consumer in started:
        consumer.stop(timeout_s=30)


def test_the_group_coordinator_crashes_and_every_output_is_still_there_exactly_once(
    fault_cluster: LocalKafka, tmp_path: Path, unique_name: Callable[[str], str],
    fault_table: Callable[[dict[str, Any]], None], consumers: list[EosConsumer],
) -> None:
    bootstrap = _bootstrap(fault_cluster)
    source, sink, group = unique_name("t"), unique_name("out"), unique_name("eos")
    create_topic(bootstrap, source, PARTITIONS)
    create_topic(bootstrap, sink, PARTITIONS)
    producer = InputProducer(bootstrap, source, rate=200)
    watcher = OutputWatcher(bootstrap, sink, PARTITIONS)
    producer.start()
    try:
        for name in ("a", "b"):
            consumers.append(EosConsumer(tmp_path, bootstrap, group, source, sink, name,
                                         session_timeout_ms=SESSION_TIMEOUT_MS))

        def progress(more: int, what: str) -> None:
            target = watcher.poll() + more
            wait_until(lambda: watcher.poll() >= target, WAIT_S, what)

        progress(500, "both consumers under way")
        victim = group_coordinator(AdminClient({"bootstrap.servers": bootstrap}), group)
        killed_at = time.time()
        fault_cluster.stop_broker(victim, kill=True)
        progress(300, f"outputs committed while broker {victim} (the group's coordinator) is down")
        down_s = time.time() - killed_at
        fault_cluster.start_broker(victim)
        fault_cluster.wait_in_sync()
        progress(300, "outputs committed after the restart")
        producer.stop()
        assert producer.failed == 0
        wait_until(lambda: watcher.covers(producer.delivered), WAIT_S, "an output for every input")
        for consumer in consumers:
            consumer.stop()
        verdict = judge_outputs(f"exactly-once: SIGKILL of the group coordinator (broker {victim}), down "
                                f"{down_s:.0f} s, restarted", producer.delivered, read_outputs(bootstrap, sink,
                                                                                               PARTITIONS))
    finally:
        producer.stop()
        watcher.close()
    fault_table({"fault": verdict.scenario, "records": verdict.inputs, "lost": verdict.missing,
                 "duplicates": verdict.duplicates, "order_violations": verdict.order_violations,
                 "unexpected": verdict.unexpected})
    assert_exactly_once(verdict)
