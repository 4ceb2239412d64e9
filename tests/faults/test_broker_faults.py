"""Broker faults on the 3-broker cluster (RF 3, ``min.insync.replicas=2``): a crashed partition leader, a rolling
restart, a crashed active KRaft controller. Whatever a broker does, no acknowledged record is lost, no key is
reordered within a consumer process, and after a drained stop the group's commits reach the log end.

The consumers go straight to the brokers (``proxied=False``): the fault is a broker process dying, and a client
should see it as it would in production (connections refused, the broker gone from metadata); through Toxiproxy
the proxy port would keep accepting connections and drop them, which is a network fault the other suite tests.
They keep librdkafka's default 45 s session rather than the suite's 10 s (which exists so that a 30 s network
partition outlasts it). With 10 s, a SIGKILLed broker made both members' sessions expire even when it was not the
group's coordinator (no heartbeat answered for 10 s: likely the coordinator's writes waiting on the dead replica
until the controller fenced it, 9 s, and shrank the ISR), so every broker crash turned into what the consumer
fault tests cover (partitions lost, a rebalance, all partitions still for ~21 s). With 45 s the consumers keep
their partitions and follow the leaders and the coordinator to their new brokers, which is what is tested here.

Recovery (the table's ``recovery_s``) is timed from the fault's start (the kill, or each SIGTERM of the rolling
restart) until handling had resumed on every partition the broker led, after the pause the fault caused
(:meth:`FaultRun.resumed_after`). The first record handled after the kill would say little: consumers hold
records fetched before it and keep handling them while the partition has no leader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from pyrallel_tools.localkafka.errors import LocalKafkaError
from tests.faults.harness import FaultRun, Verdict, group_coordinator, judge

pytestmark = [pytest.mark.integration, pytest.mark.faults]

LEADER_DOWN_S = 15.0
"""How long the crashed leader stays down (at least: until its partitions flow again through their new leaders)."""
CONTROLLER_DOWN_S = 10.0
FAILOVER_TIMEOUT_S = 45.0
"""Bound on a failover the tests wait for (new leaders, a new active controller, records flowing again)."""
ROLLING_PRODUCE_BOUND_S = 300.0
"""The rolling restart's producer stops when the restart is over (a broker starts in seconds on an idle machine,
in 40 s on a loaded one); this only bounds it."""
BROKER_FAULT_KAFKA = {"session.timeout.ms": "45000"}
"""librdkafka's default session (see the module's docstring)."""

_QUIET = logging.getLogger("tests.faults.broker_faults.clients")
_QUIET.setLevel(logging.CRITICAL)  # the clients below would log every refused connection to the dead broker
_UNRECOVERED = "handling never resumed on the fault's partitions"


def _admin(run: FaultRun) -> AdminClient:
    return AdminClient({"bootstrap.servers": run.bootstrap}, logger=_QUIET)


def _leaders(run: FaultRun) -> dict[int, int]:
    """Partition -> node id of its leader (-1 when it has none), from the cluster's metadata."""
    meta = _admin(run).list_topics(topic=run.topic, timeout=10)
    return {p.id: p.leader for p in meta.topics[run.topic].partitions.values()}


def _led_by(run: FaultRun, node_id: int) -> set[int]:
    return {p for p, leader in _leaders(run).items() if leader == node_id}


def _led_elsewhere(run: FaultRun, partitions: Collection[int], node_id: int) -> bool:
    """Every one of ``partitions`` has a leader and it is not ``node_id`` (metadata errors: not yet)."""
    with contextlib.suppress(Exception):
        leaders = _leaders(run)
        return all(leaders.get(p, -1) not in (-1, node_id) for p in partitions)
    return False


def _log_ends(run: FaultRun) -> dict[int, int] | None:
    """Partition -> its high watermark now, from its current leader; None while some leader cannot tell yet (a new
    leader's high watermark not caught up, metadata naming the old leader)."""
    consumer = Consumer({"bootstrap.servers": run.bootstrap, "group.id": f"{run.group}-ends", "logger": _QUIET})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(run.topic, p), timeout=10)[1]
                for p in range(run.partitions)}
    except KafkaException:
        return None
    finally:
        consumer.close()


def _role(run: FaultRun, node_id: int) -> str:
    """`` and the group's coordinator`` when ``node_id`` coordinates the group (its crash moves the group)."""
    return " and the group's coordinator" if group_coordinator(_admin(run), run.group) == node_id else ""


def _start(run: FaultRun, seconds: float) -> None:
    """The producer at 200/s for ``seconds`` and two consumers straight to the brokers, under way."""
    run.produce(rate=200, seconds=seconds)
    run.consume("a", proxied=False, extra_kafka=BROKER_FAULT_KAFKA)
    run.consume("b", proxied=False, extra_kafka=BROKER_FAULT_KAFKA)
    run.wait_for(lambda: run.handled() >= 1000, "both consumers under way")


def _flowing_again(run: FaultRun, led: set[int], victim: int) -> None:
    """Until ``led`` have leaders other than the stopped ``victim`` and every partition handled a record written
    after that: the consumers go on with the broker down."""
    run.wait_for(lambda: _led_elsewhere(run, led, victim), f"new leaders for {sorted(led)}", FAILOVER_TIMEOUT_S)
    ends: dict[int, int] = {}

    def read_ends() -> bool:
        ends.update(_log_ends(run) or {})
        return bool(ends)

    run.wait_for(read_ends, "the log ends from the new leaders", FAILOVER_TIMEOUT_S, 0.5)
    run.wait_for(lambda: run.handled_beyond(ends), f"records written after the new leaders took over ({ends})",
                 FAILOVER_TIMEOUT_S, 0.5)


def _finish(run: FaultRun, fault: str, recovery: Callable[[], float | None]) -> Verdict:
    """Wait for the cluster to be whole again and every record handled; the verdict with ``recovery`` measured
    once the consumers stopped."""
    run.cluster.wait_in_sync()  # the cluster whole again before the next test
    run.wait_produced()
    run.wait_all_handled()
    verdict = run.verdict(fault)
    return dataclasses.replace(verdict, recovery_s=recovery())


def test_the_leader_of_most_partitions_crashes_for_15_s_and_nothing_is_lost(
    fault_run: FaultRun, fault_table: Callable[[dict[str, Any]], None]
) -> None:
    """SIGKILL the broker leading most of the topic's partitions, keep it down 15 s, start it again. Its partitions
    get leaders among the other replicas once the controller fences it, and both consumers go on with them while
    it is down. Recovery: from the kill until handling resumed on every partition it led."""
    _start(fault_run, seconds=45)
    leaders = Counter(_leaders(fault_run).values())
    victim = min(leaders, key=lambda node: (-leaders[node], node))
    led, role = _led_by(fault_run, victim), _role(fault_run, victim)
    killed_at = time.time()
    fault_run.cluster.stop_broker(victim, kill=True)
    _flowing_again(fault_run, led, victim)
    time.sleep(max(0.0, killed_at + LEADER_DOWN_S - time.time()))  # the rest of the fault's length
    restarted_at = time.time()
    fault_run.cluster.start_broker(victim)
    verdict = _finish(fault_run, f"leader loss: SIGKILL of the leader of {len(led)}/{fault_run.partitions} "
                                 f"partitions{role} for {LEADER_DOWN_S:.0f} s (recovery from the kill)",
                      lambda: fault_run.resumed_after(killed_at, led, until=restarted_at))
    judge(verdict, fault_table, unrecovered=_UNRECOVERED)


def test_a_rolling_restart_of_every_broker_loses_nothing(
    fault_run: FaultRun, fault_table: Callable[[dict[str, Any]], None]
) -> None:
    """Each broker in turn: SIGTERM (a controlled shutdown hands its leaderships over), start it again, wait until
    every replica is in sync, then the next, while the producer (until the restart is over) and two consumers run.
    Recovery: the slowest of the three restarts, each from its SIGTERM until handling resumed on every partition
    that broker led."""
    _start(fault_run, seconds=ROLLING_PRODUCE_BOUND_S)
    state = fault_run.cluster.state()
    assert state is not None
    stops: list[tuple[float, set[int]]] = []
    for node in state.nodes:
        led = _led_by(fault_run, node.node_id)
        stops.append((time.time(), led))
        fault_run.cluster.stop_broker(node.node_id)
        stopped = time.time()
        fault_run.cluster.start_broker(node.node_id)
        started = time.time()
        fault_run.cluster.wait_in_sync()
        print(f"broker {node.node_id} (leader of {sorted(led)}): stopped in {stopped - stops[-1][0]:.1f} s, "
              f"started in {started - stopped:.1f} s, in sync after {time.time() - started:.1f} s")
    ended = time.time()
    assert fault_run.producer is not None and fault_run.producer.proc.poll() is None, "the producer ended early"
    fault_run.stop_producer()
    fault_run.wait_all_handled()
    verdict = fault_run.verdict(f"rolling restart of {len(stops)} brokers (SIGTERM, start, in sync; recovery from "
                                "each SIGTERM, the slowest)")
    untils = [at for at, _led in stops[1:]] + [ended]
    recoveries = [fault_run.resumed_after(at, led, until=until)
                  for (at, led), until in zip(stops, untils, strict=True) if led]
    print("recovery per restart:", recoveries)
    measured = [r for r in recoveries if r is not None]
    recovery = max(measured) if measured and len(measured) == len(recoveries) else None
    judge(dataclasses.replace(verdict, recovery_s=recovery), fault_table, unrecovered=_UNRECOVERED)


def test_the_active_controller_crashes_another_takes_over_and_nothing_is_lost(
    fault_run: FaultRun, fault_table: Callable[[dict[str, Any]], None]
) -> None:
    """SIGKILL the active KRaft controller (a broker too: every node is both), start it again after 10 s. The two
    other voters elect a new active controller while it is down, which fences the dead node and moves its
    leaderships; records keep flowing on every partition. Recovery: from the kill until handling resumed on every
    partition the node led (on all of them if it led none)."""
    _start(fault_run, seconds=45)
    cluster = fault_run.cluster
    state = cluster.state()
    assert state is not None
    victim = cluster.active_controller()
    led, role = _led_by(fault_run, victim), _role(fault_run, victim)
    killed_at = time.time()
    cluster.stop_broker(victim, kill=True)

    active: list[int] = []

    def another_controller() -> bool:
        with contextlib.suppress(LocalKafkaError):
            active.append(cluster.active_controller())
        return bool(active) and active[-1] != victim

    fault_run.wait_for(another_controller, f"a controller other than node {victim}", FAILOVER_TIMEOUT_S)
    elected_s = time.time() - killed_at
    successor = active[-1]
    others = {n.node_id for n in state.nodes} - {victim}
    assert successor in others, f"node {successor} is active, not one of the other voters {sorted(others)}"
    _flowing_again(fault_run, led, victim)
    time.sleep(max(0.0, killed_at + CONTROLLER_DOWN_S - time.time()))  # the rest of the fault's length
    restarted_at = time.time()
    cluster.start_broker(victim)
    print(f"controller {victim} killed; node {successor} active within {elected_s:.2f} s")
    timed = led or set(range(fault_run.partitions))
    verdict = _finish(fault_run, f"controller failover: SIGKILL of the active controller (leader of {len(led)}/"
                                 f"{fault_run.partitions} partitions{role}) for {CONTROLLER_DOWN_S:.0f} s "
                                 "(recovery from the kill)",
                      lambda: fault_run.resumed_after(killed_at, timed, until=restarted_at))
    judge(verdict, fault_table, unrecovered=_UNRECOVERED)
