"""Recovery after a crash with static membership, on the real broker (issue 16; docs/failure-handling.md,
"Recovery after a crash").

The consumers are processes of the recovery benchmark's member (``pyrallel_tools.benchmark.rebalance_member``):
they log every ownership change and, with ``--handled-every 0``, every record they handled. A producer thread
writes keyed records throughout and keeps the broker's delivery reports: the records that must be handled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer
from tests.support import wait_for

from pyrallel_tools.benchmark.rebalance import member_argv
from pyrallel_tools.benchmark.rebalance_timeline import Change, parse_changes
from pyrallel_tools.benchmark.recovery import RECOMMENDED_KAFKA, first_handled, parse_handled

pytestmark = pytest.mark.integration

PARTITIONS = 4


class _Producer(threading.Thread):
    """Keyed records at about ``rate``/s until stop() (or 120 s); ``delivered`` holds what the broker acknowledged."""

    def __init__(self, bootstrap: str, topic: str, rate: int = 200) -> None:
        super().__init__(name="recovery-test-producer", daemon=True)
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.delivered: set[tuple[int, int]] = set()
        self.failed = 0
        self._stop_event = threading.Event()

    def _report(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered.add((msg.partition() or 0, msg.offset() or 0))
        else:
            self.failed += 1

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5})
        started, sent = time.monotonic(), 0
        while not self._stop_event.is_set() and time.monotonic() - started < 120:
            producer.produce(self.topic, value=b"v%d" % sent, key=b"k%d" % (sent % 40), on_delivery=self._report)
            sent += 1
            producer.poll(0)
            self._stop_event.wait(max(0.0, started + sent / self.rate - time.monotonic()))
        producer.flush(30)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(40)


class _Member:
    """One PyrallelConsumer member process with the recommended settings (a restart well within the session keeps
    the partitions without a rebalance) and the static identity ``instance_id``, logging its ownership and every
    record it handled."""

    def __init__(self, tmp: Path, bootstrap: str, topic: str, group: str, name: str, serial: int,
                 instance_id: str) -> None:
        stem = tmp / f"{name}-{serial}"
        self.name = name
        self.log, self.handled, self.out = (stem.with_suffix(s) for s in (".jsonl", ".handled.jsonl", ".out"))
        argv = member_argv("pyrallel", bootstrap, topic, group, name, self.log, 180, self.handled, RECOMMENDED_KAFKA,
                           ["--handled-every", "0", "--group-instance-id", instance_id])
        with self.out.open("wb") as output:
            self.proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)

    def changes(self) -> list[Change]:
        return parse_changes(self.log.read_text()) if self.log.exists() else []

    def owned(self) -> frozenset[int]:
        changes = self.changes()
        return changes[-1].owned if changes else frozenset()

    def handled_lines(self) -> list[dict[str, Any]]:
        return parse_handled(self.handled.read_text()) if self.handled.exists() else []

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()


def _handled_set(members: list[_Member]) -> set[tuple[int, int]]:
    return {(int(line["partition"]), int(line["offset"])) for m in members for line in m.handled_lines()}


async def test_sigkilled_static_member_restarted_with_its_id_gets_its_partitions_back_and_loses_nothing(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = new_topic(PARTITIONS), unique_name("recovery")
    producer = _Producer(kafka_bootstrap, topic)
    producer.start()
    x = _Member(tmp_path, kafka_bootstrap, topic, group, "x", 1, f"{group}-x")
    y = _Member(tmp_path, kafka_bootstrap, topic, group, "y", 1, f"{group}-y")
    members = [x, y]
    try:
        await wait_for(lambda: bool(x.owned() and y.owned() and x.owned() | y.owned() == set(range(PARTITIONS))
                                    and x.handled_lines()),
                       90, "both members to own partitions and x to handle records")
        x_owned = x.owned()
        killed_at = time.time()
        x.kill()
        x2 = _Member(tmp_path, kafka_bootstrap, topic, group, "x", 2, f"{group}-x")
        members.append(x2)
        await wait_for(lambda: len(first_handled(x2.handled_lines(), sorted(x_owned), killed_at)) == len(x_owned),
                       60, "the replacement to handle records of every partition x owned")
        recovered = first_handled(x2.handled_lines(), sorted(x_owned), killed_at)
        print(f"\nrecovery after SIGKILL: every partition of x {sorted(x_owned)} handled again after "
              f"{max(float(line['t']) for line in recovered.values()) - killed_at:.2f} s")
        producer.stop()
        assert producer.failed == 0
        await wait_for(lambda: producer.delivered <= _handled_set(members), 90,
                       "every acknowledged record to be handled")
    finally:
        producer.stop()
        for member in members:
            member.stop()

    assert next(c.owned for c in x2.changes() if c.kind == "assign" and c.owned) == x_owned, \
        "the replacement got x's partitions back (static membership: no rebalance)"
    y_after = [c.owned for c in y.changes() if c.t > killed_at and c.kind in ("assign", "revoke", "lost")]
    assert all(not (owned & x_owned) for owned in y_after), "y never took x's partitions"
    missing = producer.delivered - _handled_set(members)
    assert not missing, f"{len(missing)} acknowledged records never handled, e.g. {sorted(missing)[:5]}"


async def test_a_second_process_with_the_same_group_instance_id_fences_the_first(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = new_topic(PARTITIONS), unique_name("fence")
    producer = _Producer(kafka_bootstrap, topic, rate=100)
    producer.start()
    first = _Member(tmp_path, kafka_bootstrap, topic, group, "first", 1, f"{group}-same")
    members = [first]
    try:
        await wait_for(lambda: first.owned() == set(range(PARTITIONS)), 90, "the first to own every partition")
        second = _Member(tmp_path, kafka_bootstrap, topic, group, "second", 1, f"{group}-same")
        members.append(second)
        await wait_for(lambda: first.proc.poll() is not None, 60, "the first process to stop")
        await wait_for(lambda: second.owned() == set(range(PARTITIONS)), 60, "the second to own every partition")
        producer.stop()
        await wait_for(lambda: producer.delivered <= _handled_set(members), 90,
                       "every acknowledged record to be handled")
    finally:
        producer.stop()
        for member in members:
            member.stop()
    output = first.out.read_text(errors="replace")
    assert first.proc.returncode != 0, "the fenced consumer stopped with its error (wait_stopped raised it)"
    assert "fenced by other consumer with same group.instance.id" in output
    assert producer.delivered <= _handled_set(members), "nothing lost: the second resumed at the committed offsets"
