"""Network faults between a consumer and the brokers, made by Toxiproxy on the 3-broker cluster: whatever the
network does, no acknowledged record is lost, no key is reordered within a consumer process, and after a drained
stop the group's commits reach the log end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.harness import SESSION_TIMEOUT_MS, FaultRun, judge

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITION_S = 3 * SESSION_TIMEOUT_MS / 1000
"""The consumer is cut off for three of its session timeouts: the group surely moves on without it."""


def test_a_consumer_cut_off_for_30_s_is_fenced_rejoins_and_nothing_is_lost(
    fault_run: FaultRun, fault_table: Callable[[dict[str, Any]], None]
) -> None:
    """Consumer A (through the proxy) is cut off for 30 s, three session timeouts: B (direct) takes its
    partitions, A's commits are refused, A comes back, rejoins and the two share the partitions again."""
    fault_run.produce(rate=200, seconds=60)
    fault_run.consume("a", proxied=True)
    fault_run.consume("b", proxied=False)
    fault_run.wait_for(lambda: fault_run.handled() >= 1000, "both consumers under way")
    for proxy in fault_run.proxies():
        fault_run.proxy.set_enabled(proxy, False)
    time.sleep(PARTITION_S)  # the fault's length is the test's subject, not a wait for a result
    for proxy in fault_run.proxies():
        fault_run.proxy.set_enabled(proxy, True)
    fault_run.mark_fault_end()
    fault_run.wait_produced()
    fault_run.wait_all_handled()
    verdict = fault_run.verdict("partition of one consumer for 30 s", recovering="a")
    judge(verdict, fault_table, unrecovered="consumer a never handled a record after the partition ended")


@pytest.mark.parametrize(("fault", "apply"), [
    ("latency 500 ms on every packet", lambda p, name: p.latency(name, 500)),
    ("bandwidth 10 KB/s", lambda p, name: p.bandwidth(name, 10)),
])
def test_a_slow_network_slows_but_loses_nothing(
    fault_run: FaultRun, fault_table: Callable[[dict[str, Any]], None], fault: str,
    apply: Callable[[Any, str], Any],
) -> None:
    fault_run.produce(rate=200, seconds=40)
    fault_run.consume("a", proxied=True)
    fault_run.wait_for(lambda: fault_run.handled() >= 500, "the consumer under way")
    for proxy in fault_run.proxies():
        apply(fault_run.proxy, proxy)
    time.sleep(20)  # the fault's length
    fault_run.proxy.reset()
    fault_run.mark_fault_end()
    fault_run.wait_produced()
    fault_run.wait_all_handled()
    judge(fault_run.verdict(fault), fault_table)


def test_connections_reset_mid_fetch_and_mid_commit_lose_nothing(
    fault_run: FaultRun, fault_table: Callable[[dict[str, Any]], None]
) -> None:
    """Every connection through the proxy is cut after 64 KiB of responses (mid-fetch: a fetch response larger
    than that is cut in the middle), then every connection is reset by the peer as soon as it sends (a commit or a
    heartbeat in flight is lost), each for 10 s, twice over."""
    fault_run.produce(rate=300, seconds=50)
    fault_run.consume("a", proxied=True)
    fault_run.wait_for(lambda: fault_run.handled() >= 500, "the consumer under way")
    for _round in range(2):
        for proxy in fault_run.proxies():
            fault_run.proxy.limit_data(proxy, 64 * 1024)
        time.sleep(10)  # the fault's length
        fault_run.proxy.reset()
        for proxy in fault_run.proxies():
            fault_run.proxy.reset_peer(proxy)
        time.sleep(10)  # the fault's length
        fault_run.proxy.reset()
    fault_run.mark_fault_end()
    fault_run.wait_produced()
    fault_run.wait_all_handled()
    judge(fault_run.verdict("connections reset mid-fetch and mid-commit"), fault_table)
