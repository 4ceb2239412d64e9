"""Faults of a consumer process and of what it writes to, on the 3-broker cluster: a consumer frozen past its
session (a zombie that wakes up with work in hand), and a dead-letter topic whose only replica is down while
records keep failing. Whatever happens, no acknowledged record is lost, no key is reordered within a consumer
process, no commit moves backwards, and after a drained stop the group's commits reach the log end."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pyrallel_tools.bluegreen.load_producer import parse_identity
from tests.faults.harness import SESSION_TIMEOUT_MS, FaultRun, group_coordinator, judge

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ZOMBIE_S = 2 * SESSION_TIMEOUT_MS / 1000
"""The zombie is frozen for two session timeouts (max.poll.interval.ms stays librdkafka's 300 s: a frozen process
sends no heartbeat, so the session is what expires): the group surely moved its partitions to the other member."""
REJOIN_MARGIN_S = 5.0
"""Records a woken zombie handles from fetches made before it noticed its eviction were produced within about a
heartbeat of waking; one produced this long after it woke was fetched under a new assignment."""
FAIL_EVERY = 50
"""The DLQ test's records with seq % 50 == 0 fail every attempt: 4 a second at 200 records/s."""
DLQ_OUTAGE_S = 20.0
"""How long the dead-letter topic's only broker stays down while records keep failing."""


# ---- 1. zombie consumer -------------------------------------------------------------------------------------


def test_a_zombie_consumer_frozen_past_its_session_never_commits_over_the_new_owner_and_rejoins(
    fault_run: FaultRun, fault_table: Callable[[dict[str, Any]], None]
) -> None:
    """A and B share the partitions; A is frozen (SIGSTOP) for two session timeouts with records in hand: B takes
    A's partitions and commits past A's progress. A is woken (SIGCONT): its completions and commits of the old
    assignment arrive late and must never move a committed offset backwards; A rejoins and handles records
    fetched under its new assignment."""
    fault_run.produce(rate=200, seconds=50)
    a = fault_run.consume("a", proxied=False)
    fault_run.consume("b", proxied=False)

    def each_under_way() -> bool:
        return all(sum(1 for _ in fault_run.handled_rows(name)) >= 300 for name in ("a", "b"))

    fault_run.wait_for(each_under_way, "both consumers under way")
    owned_by_a = {row["partition"] for row in fault_run.handled_rows("a")}
    stopped_at = time.time()
    os.kill(a.proc.pid, signal.SIGSTOP)
    time.sleep(ZOMBIE_S)  # the fault's length: A frozen past its session timeout
    resumed_at = time.time()
    os.kill(a.proc.pid, signal.SIGCONT)
    fault_run.mark_fault_end()
    fault_run.wait_produced()
    fault_run.wait_all_handled()

    produced_at = {row["seq"]: row["ts"] for row in fault_run.produced_rows()}
    b_rows = list(fault_run.handled_rows("b"))
    taken_over = {row["partition"] for row in b_rows
                  if stopped_at + SESSION_TIMEOUT_MS / 1000 <= row["ts"] <= resumed_at}
    a_after = [row for row in fault_run.handled_rows("a") if row["ts"] >= resumed_at]
    fetched_anew = [row for row in a_after if produced_at.get(row["seq"], 0) >= resumed_at + REJOIN_MARGIN_S]
    # What A handles at once on waking is stale work of the old assignment, which B has handled too; the first
    # record A handles that B never did was fetched under A's new assignment: that is A's recovery.
    b_seqs = {row["seq"] for row in b_rows}
    first_own = min((row["ts"] for row in a_after if row["seq"] not in b_seqs), default=None)
    verdict = fault_run.verdict("zombie: SIGSTOP one of two consumers for two session timeouts", recovering="a")
    woke_handling_s = verdict.recovery_s
    verdict = dataclasses.replace(
        verdict, fault=verdict.fault + " (recovery: wake to A's first record under its new assignment)",
        recovery_s=None if first_own is None else first_own - resumed_at)
    judge(verdict, fault_table)
    print({"a_partitions_before": sorted(owned_by_a), "b_partitions_while_a_frozen": sorted(taken_over),
           "a_records_after_wake": len(a_after), "a_first_record_after_wake_s": woke_handling_s,
           "a_records_fetched_after_rejoin": len(fetched_anew)})
    for line in fault_run.output_lines("a", r"Lost|Assigned|Revok|[Cc]ommit.*(fail|refus|error)|FENCED|UNKNOWN_MEMBER"):
        print("a:", line)
    assert owned_by_a, "a handled nothing before it was frozen"
    assert owned_by_a <= taken_over, f"b never took a's partitions {sorted(owned_by_a - taken_over)}"
    assert woke_handling_s is not None, "consumer a never handled a record after it was woken"
    assert verdict.recovery_s is not None, "consumer a never handled a record that b had not handled"
    assert fetched_anew, "a never handled a record produced after it rejoined: it did not rejoin"
    fault_run.cluster.wait_in_sync()


# ---- 2. the DLQ's only broker down while records fail ---------------------------------------------------------


def _create_dlq(admin: AdminClient, name: str, broker: int) -> None:
    """One partition whose only replica is on ``broker``; LogAppendTime, so each copy's timestamp says when the
    broker acknowledged it; min.insync.replicas=1, or acks=all could never be met with one replica."""
    topic = NewTopic(name, num_partitions=1, replica_assignment=[[broker]],
                     config={"min.insync.replicas": "1", "message.timestamp.type": "LogAppendTime"})
    admin.create_topics([topic])[name].result(timeout=30)


def _read_dlq(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record of the one-partition DLQ topic, read_committed, from the start to the high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=15)
        consumer.assign([TopicPartition(topic, 0, 0)])
        records: list[Any] = []
        position = 0
        deadline = time.monotonic() + timeout_s
        while position < high:
            if time.monotonic() > deadline:
                raise AssertionError(f"read {len(records)} DLQ records up to offset {position} of {high}")
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            records.append(msg)
            position = (msg.offset() or 0) + 1
        return records
    finally:
        consumer.close()


def _scrape(url: str) -> dict[str, float]:
    """The Prometheus series an operator would watch here, summed over labels (max for the blocking age)."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()  # our own server on 127.0.0.1
    seen: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"(\w+)(\{[^}]*\})? (\S+)$", line)
        if match is None:
            continue
        name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
        if name == "kafka_consumer_errors_total" and 'kind="dlq"' in labels:
            seen["dlq_errors"] = seen.get("dlq_errors", 0) + value
        elif name == "pyrallel_blocking_offset_age_seconds":
            seen["max_blocking_age_s"] = max(seen.get("max_blocking_age_s", 0.0), value)
        elif name == "pyrallel_in_flight":
            seen["in_flight"] = seen.get("in_flight", 0) + value
        elif name == "pyrallel_records_completed_total" and 'outcome="dlq"' in labels:
            seen["dead_lettered"] = seen.get("dead_lettered", 0) + value
    return seen


def _metrics_urls(run: FaultRun) -> dict[str, str]:
    urls = {}
    for c in run.consumers:
        found = run.output_lines(c.name, r"Serving Prometheus metrics on ")
        if found:
            urls[c.name] = found[0].rsplit(" ", 1)[-1]
    return urls


def _scrape_all(run: FaultRun) -> dict[str, dict[str, float]]:
    scraped = {}
    for name, url in _metrics_urls(run).items():
        try:
            scraped[name] = _scrape(url)
        except OSError as exc:
            scraped[name] = {"unreachable": 1.0}
            print(f"{name}: metrics unreachable: {exc}")
    return scraped


@pytest.mark.parametrize("dlq_message_timeout_ms", [None, 5000],
                         ids=["default-delivery-timeout", "5s-delivery-timeout"])
def test_nothing_is_committed_past_a_record_whose_dlq_copy_is_not_acknowledged_while_the_dlq_leader_is_down(
    fault_run: FaultRun, fault_table: Callable[[dict[str, Any]], None], dlq_message_timeout_ms: int | None
) -> None:
    """Two consumers with the DLQ on and no retries; every record with seq % 50 == 0 fails. The DLQ topic has one
    replica, on a broker that is neither the group's coordinator nor the active controller; that broker is
    stopped (SIGTERM) for 20 s while records keep failing, then started again.

    Claims: every commit the group wrote (read back from __consumer_offsets after the run) is at or below its
    partition's first failing record whose DLQ copy the broker had not appended when the coordinator wrote the
    commit (both times the brokers', on this machine's clock: the copy's LogAppendTime, the commit record's
    timestamp); during the outage, such a record held every partition back; after the restart the
    copies are acknowledged, the commits reach the log end, the DLQ holds each failing record with its story
    (exactly once unless a write timed out locally and was retried: then perhaps twice), and every other record
    was handled successfully. With ``dlq_message_timeout_ms`` the DLQ producer gives a write up after that long
    (the library's retry-with-backoff path) instead of librdkafka's 300 s."""
    admin = AdminClient({"bootstrap.servers": fault_run.bootstrap})
    state = fault_run.cluster.state()
    assert state is not None
    found: list[int] = []

    def coordinator_known() -> bool:
        with contextlib.suppress(KafkaException, TimeoutError):
            found.append(group_coordinator(admin, fault_run.group))
        return bool(found)

    fault_run.wait_for(coordinator_known, "the group's coordinator", 30)
    coordinator = found[0]
    avoid = {coordinator, fault_run.cluster.active_controller()}
    dlq_broker = next((n.node_id for n in state.nodes if n.node_id not in avoid), state.nodes[-1].node_id)
    dlq = f"{fault_run.topic}-dlq"
    _create_dlq(admin, dlq, dlq_broker)
    try:
        env = {"PYRALLEL_DLQ_ENABLED": "true", "PYRALLEL_DLQ_TOPIC": dlq, "PYRALLEL_METRICS_PORT": "0"}
        if dlq_message_timeout_ms is not None:
            env["PYRALLEL_DLQ_KAFKA"] = json.dumps({"message.timeout.ms": str(dlq_message_timeout_ms)})
        args = ("--max-retries", "0", "--fault-fail-every", str(FAIL_EVERY))
        fault_run.produce(rate=200, seconds=45)
        fault_run.consume("a", env=env, args=args)
        fault_run.consume("b", env=env, args=args)

        def dlq_written() -> bool:
            consumer = Consumer({"bootstrap.servers": fault_run.bootstrap, "group.id": f"{dlq}-probe"})
            try:
                return consumer.get_watermark_offsets(TopicPartition(dlq, 0), timeout=5)[1] >= 10
            finally:
                consumer.close()

        fault_run.wait_for(lambda: fault_run.handled() >= 1000, "both consumers under way")
        fault_run.wait_for(dlq_written, "the first DLQ copies acknowledged", 30)
        stop_began = time.time()
        fault_run.cluster.stop_broker(dlq_broker)
        outage_began = time.time()
        time.sleep(DLQ_OUTAGE_S)  # the fault's length: the DLQ's only broker down while records fail
        during = _scrape_all(fault_run)
        restart_began = time.time()
        fault_run.mark_fault_end()
        fault_run.cluster.start_broker(dlq_broker)
        restarted = time.time()
        fault_run.wait_produced()
        fault_run.wait_all_handled()
        fault_run.wait_for(lambda: fault_run.committed_behind_end() == 0, "the commits at the log end", 60)
        after = _scrape_all(fault_run)
        verdict = fault_run.verdict(f"DLQ leader down {DLQ_OUTAGE_S:.0f} s, 1 record in {FAIL_EVERY} failing "
                                    f"(dlq message.timeout.ms={dlq_message_timeout_ms or 'default'})")
        copies = _read_dlq(fault_run.bootstrap, dlq)
    finally:
        with contextlib.suppress(Exception):  # a failure mid-outage: the topic goes once its broker is back
            admin.delete_topics([dlq], operation_timeout=30)[dlq].result(timeout=30)

    produced = list(fault_run.produced_rows())
    failing = {row["seq"]: row for row in produced if row["seq"] % FAIL_EVERY == 0}
    appended: dict[int, float] = {}
    story_errors: list[str] = []
    copy_count: Counter[int] = Counter()
    for msg in copies:
        identity = parse_identity(msg.value())
        headers = {k: (v.decode() if v is not None else None) for k, v in msg.headers() or []}
        if identity is None:
            story_errors.append(f"DLQ offset {msg.offset()}: value is not a load record")
            continue
        seq, key, _key_seq = identity
        copy_count[seq] += 1
        appended[seq] = min(appended.get(seq, float("inf")), msg.timestamp()[1] / 1000)
        source = failing.get(seq)
        expected = None if source is None else {
            "x-source-topic": fault_run.topic, "x-source-partition": str(source["partition"]),
            "x-source-offset": str(source["offset"]), "x-consumer-group": fault_run.group,
            "x-error-type": "InjectedFailureError", "x-attempts": "1"}
        if expected is None and seq % FAIL_EVERY == 0:
            continue  # a failing record whose send the producer saw fail, yet was written: it failed here too
        if expected is None:
            story_errors.append(f"seq {seq} is in the DLQ but never failed")
        elif {k: headers.get(k) for k in expected} != expected or msg.key() != key.encode():
            story_errors.append(f"seq {seq}: key {msg.key()!r}, headers {headers}, expected {expected}")
    handled = list(fault_run.handled_rows())
    ok_seqs = {row["seq"] for row in handled if row["ok"]}
    failed_seqs = {row["seq"] for row in handled if not row["ok"]}

    def pending(partition: int, at: float) -> list[dict[str, Any]]:
        """The partition's failing records whose DLQ copy the broker had not appended at ``at``."""
        return [row for row in failing.values()
                if row["partition"] == partition and appended.get(row["seq"], float("inf")) > at]

    # Every commit: at or below the first failing record of its partition not yet appended to the DLQ when it was
    # written. Between two commits the offset in effect stands still while that bound only rises (copies appended)
    # or gains records at or above that offset (new failures): judging each commit when it was written judges every
    # moment.
    untimed = [f"p{p}: {c.offset}" for p, commits in fault_run.commits.items() for c in commits
               if c.written_at is None]
    violations: list[str] = []
    bound_commits: Counter[int] = Counter()  # commits written in the outage while a written failing record was held
    for partition, commits in sorted(fault_run.commits.items()):
        for commit in commits:
            if commit.written_at is None:
                continue
            at, held_back = commit.written_at, pending(partition, commit.written_at)
            if held_back and commit.offset > min(row["offset"] for row in held_back):
                violations.append(f"p{partition} committed {commit.offset} at {at:.3f} past offset "
                                  f"{min(row['offset'] for row in held_back)} whose DLQ copy was not acknowledged")
            if outage_began <= at <= restart_began and any(row["ts"] <= at for row in held_back):
                bound_commits[partition] += 1
    # At the outage's end: the partitions with a commit in effect and a failing record already written held back
    # (a partition may write no commit while held back, when nothing above its bound completed).
    held_at_end = {p for p, commits in fault_run.commits.items()
                   if any(c.written_at is not None and c.written_at <= restart_began for c in commits)
                   and any(row["ts"] <= restart_began for row in pending(p, restart_began))}
    binding = set(bound_commits) | held_at_end
    held = [seq for seq, row in failing.items() if row["ts"] < restart_began]
    last_held = max(appended[seq] for seq in held) if all(s in appended for s in held) else None
    recovery = None if last_held is None else last_held - restarted
    verdict = dataclasses.replace(
        verdict, fault=verdict.fault + " (recovery: broker ready again to the last held DLQ copy)",
        recovery_s=recovery)
    observed = {
        "dlq_broker": dlq_broker, "coordinator": coordinator, "sigterm_s": round(outage_began - stop_began, 1),
        "broker_restart_s": round(restarted - restart_began, 1), "failing": len(failing), "dlq_copies": len(copies),
        "restart_to_last_held_copy_s": None if last_held is None else round(last_held - restart_began, 2),
        "handled_during_outage": sum(1 for row in handled if outage_began <= row["ts"] <= restart_began),
        "commits": sum(len(commits) for commits in fault_run.commits.values()),
        "outage_commits_bounded_by_a_held_copy": dict(bound_commits), "held_back_at_outage_end": sorted(held_at_end),
        "metrics_at_outage_end": during, "metrics_after": after,
        "dlq_write_warnings": {c.name: len(fault_run.output_lines(c.name, "Dead-letter write")) for c in
                               fault_run.consumers},
    }
    print(observed)
    for c in fault_run.consumers:
        for line in fault_run.output_lines(c.name, r"Dead-letter write|WARNING|ERROR")[:8]:
            print(f"{c.name}:", line[:300])
    judge(verdict, fault_table)
    assert not untimed, f"commits without a timestamp cannot be judged: {untimed[:10]}"
    assert not violations, violations[:10]
    assert len(binding) == fault_run.partitions, f"the outage held back only partitions {sorted(binding)}"
    assert set(failing) <= set(copy_count), sorted(set(failing) - set(copy_count))[:20]
    repeated = [seq for seq, n in copy_count.items() if n > 1]
    print(f"DLQ copies written twice: {len(repeated)}")
    if dlq_message_timeout_ms is None:
        # A write that timed out locally may still have reached the broker; its retry is then a second copy
        # (docs/failure-handling.md): only without a local timeout is each copy written once.
        assert not repeated, copy_count.most_common(5)
    assert not story_errors, story_errors[:10]
    assert set(failing) <= failed_seqs, sorted(set(failing) - failed_seqs)[:20]
    assert all(seq % FAIL_EVERY == 0 for seq in failed_seqs), sorted(failed_seqs)[:20]
    assert {row["seq"] for row in produced} - set(failing) <= ok_seqs
    assert recovery is not None
    fault_run.cluster.wait_in_sync()
