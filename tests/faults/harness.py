"""One fault test's moving parts on the 3-broker ``fault_cluster``: a bounded ``pyrallel produce`` process
(idempotent, so acks=all) straight to the brokers, ``pyrallel consume`` processes (through the fault proxy unless
told otherwise), the group's commit log read back from __consumer_offsets, and the verdict against the producer's log of
acknowledged sends.

Every figure the issue asks for comes out of :meth:`FaultRun.verdict`: records acknowledged, lost (acknowledged,
never handled), duplicates, order violations per key within one consumer process (an incarnation: each process
logs its own instance id), the committed offsets against the log end after a drained stop, and the time to
recover (first record handled after the fault ended).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from pyrallel_tools.bluegreen.validation.from_logs import validate_files
from pyrallel_tools.faults.toxiproxy import ToxiproxyClient
from pyrallel_tools.localkafka.cluster import LocalKafka, proxy_name
from pyrallel_tools.localkafka.state import ClusterState
from pyrallel_tools.localkafka.topics import create_topic
from tests.faults.commit_log import Commit, backwards_moves, committed_history

CLI = [sys.executable, "-m", "pyrallel_tools.cli"]
SESSION_TIMEOUT_MS = 10_000
"""The fault tests' consumers: a 10 s session (not librdkafka's 45 s) so that a 30 s partition outlasts it."""
CONSUMER_KAFKA = {"session.timeout.ms": str(SESSION_TIMEOUT_MS), "heartbeat.interval.ms": "1000",
                  "reconnect.backoff.max.ms": "1000"}


@dataclass(slots=True)
class Verdict:
    """What a fault did to the records; one row of the closing table."""

    fault: str
    records: int
    lost: int
    duplicates: int
    order_violations: int
    unexpected: int
    committed_behind_end: int
    """Records between the group's committed offsets and the log end after the drained stop (0 expected)."""
    commit_regressions: int
    """Writes of a partition's committed offset lower than the one before, in the broker's commit log (0 expected)."""
    recovery_s: float | None
    """From the fault's end to the first record handled after it; None when no fault end was marked. A test may
    measure it otherwise (:meth:`FaultRun.resumed_after`, from the fault's start) and says so in its fault."""
    regressions: list[str] = field(default_factory=list)
    """Each backwards write (partition, from, to) in the group's commit log, for the failure message."""

    def row(self) -> dict[str, Any]:
        return {"fault": self.fault, "records": self.records, "lost": self.lost, "duplicates": self.duplicates,
                "order_violations": self.order_violations, "unexpected": self.unexpected,
                "committed_behind_end": self.committed_behind_end, "commit_regressions": self.commit_regressions,
                "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2)}


def judge(verdict: Verdict, fault_table: Callable[[dict[str, Any]], None], unrecovered: str | None = None) -> None:
    """What every fault test asserts of its final verdict, whatever the fault (each test of the network, broker
    and consumer fault modules calls this once): its row goes to the session's fault table and the output; records
    were acknowledged, none of them lost, no key reordered within a consumer process, the commits at the log end
    after the drained stop, no commit moved backwards. With ``unrecovered``, the recovery must have been measured
    too (``unrecovered`` and the verdict are the failure message when it was not)."""
    fault_table(verdict.row())
    print(verdict.row())
    assert verdict.records > 0
    assert verdict.lost == 0, verdict
    assert verdict.order_violations == 0, verdict
    assert verdict.committed_behind_end == 0, verdict
    assert verdict.commit_regressions == 0, verdict
    if unrecovered is not None:
        assert verdict.recovery_s is not None, f"{unrecovered}: {verdict}"


def group_coordinator(admin: AdminClient, group: str, timeout_s: float = 10.0) -> int:
    """The node id of ``group``'s coordinator, as the brokers name it (librdkafka looks the coordinator up, then
    describes the group on it). A group no member has joined yet is described too (as Dead), so a test can place
    something away from the coordinator before its consumers start (the DLQ test); the broker fault tests name the
    coordinator in their fault. Raises KafkaException, or TimeoutError, while the brokers cannot tell."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=timeout_s)
    return int(description.coordinator.id)


_ROW_FIELDS = {"seq": int, "partition": int, "offset": int, "ts": float}
"""The fields the tests read of a row of the producer's and the consumers' logs (``pyrallel produce --log``,
``pyrallel consume --log``: the consumers' rows add ``ok``, the instance, ...), with their types."""


def _valid_row(line: bytes) -> dict[str, Any] | None:
    """The JSON object on ``line`` when it has :data:`_ROW_FIELDS` of their types (an int ``ts`` is read as a
    float), else None."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict):
        return None
    for name, kind in _ROW_FIELDS.items():
        value = row.get(name)
        if kind is float and type(value) is int:
            row[name] = value = float(value)
        if type(value) is not kind:
            return None
    return row


class _JsonLog:
    """The rows of one process's JSON-lines log, read incrementally: each call reads only what was appended since
    the last one (the live checks poll every 0.1 s while the log grows to tens of thousands of lines). A line is
    taken once it ends with a newline; a complete line that is not a valid row is skipped, and the unfinished tail
    of a killed writer is never taken. Empty while the file does not exist."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._rows: list[dict[str, Any]] = []

    def rows(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                appended = log.read()
        except FileNotFoundError:
            return self._rows
        complete = appended[:appended.rfind(b"\n") + 1]
        self._offset += len(complete)
        self._rows += [row for line in complete.splitlines() if (row := _valid_row(line)) is not None]
        return self._rows


@dataclass
class _Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    rows: _JsonLog = field(init=False)

    def __post_init__(self) -> None:
        self.rows = _JsonLog(self.log)


@dataclass
class FaultRun:
    """A topic, a group and the processes of one fault test, all under ``directory``; ``close`` stops them."""

    cluster: LocalKafka
    directory: Path
    topic: str
    group: str
    partitions: int = 6
    producer: _Process | None = None
    consumers: list[_Process] = field(default_factory=list)
    fault_ended_at: float | None = None
    commits: dict[int, list[Commit]] = field(default_factory=dict)
    """The group's commit log per partition, as :meth:`verdict` read it back after the drained stop (the DLQ test
    judges each commit by its time)."""

    def _state(self) -> ClusterState:
        """The cluster's state as its run directory says now (read afresh: brokers stop and start during a test)."""
        state = self.cluster.state()
        if state is None:
            raise RuntimeError("the fault cluster is not running")
        return state

    @property
    def bootstrap(self) -> str:
        return self._state().bootstrap

    @property
    def proxied_bootstrap(self) -> str:
        proxied = self._state().proxied_bootstrap
        if proxied is None:
            raise RuntimeError("the fault cluster has no fault proxy")
        return proxied

    @property
    def proxy(self) -> ToxiproxyClient:
        url = self._state().toxiproxy_url
        if url is None:
            raise RuntimeError("the fault cluster has no fault proxy")
        return ToxiproxyClient(url)

    def proxies(self) -> list[str]:
        """The fault proxy's name for each broker (where a network fault is applied)."""
        return [proxy_name(n.node_id) for n in self._state().nodes]

    def create_topic(self) -> None:
        create_topic(self.bootstrap, self.topic, self.partitions)

    def produce(self, rate: int, seconds: float, keys: int = 60) -> None:
        """Start producing ``rate`` records/s for ``seconds`` (it stops by itself); returns at once."""
        log = self.directory / "produced.jsonl"
        cmd = [*CLI, "produce", "--bootstrap-servers", self.bootstrap, "--topic", self.topic, "--rate", str(rate),
               "--duration", str(seconds), "--keys", str(keys), "--size", "64", "--log", str(log), "--seed", "7"]
        self.producer = _Process("producer", self._spawn(cmd, "producer"), log)

    def consume(self, name: str, proxied: bool = True, extra_kafka: dict[str, str] | None = None,
                env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> _Process:
        """Start one ``pyrallel consume`` process named ``name`` (its own log); through the proxy by default."""
        log = self.directory / f"consumed-{name}.jsonl"
        bootstrap = self.proxied_bootstrap if proxied else self.bootstrap
        cmd = [*CLI, "consume", "--bootstrap-servers", bootstrap, "--topic", self.topic, "--group", self.group,
               "--log", str(log), "--until-signal", "--workload", "sleep:2ms", "--max-in-flight", "200",
               "--commit-interval-ms", "500", *args]
        for prop, value in {**CONSUMER_KAFKA, **(extra_kafka or {})}.items():
            cmd += ["--kafka", f"{prop}={value}"]
        process = _Process(name, self._spawn(cmd, name, env), log)
        self.consumers.append(process)
        return process

    def _spawn(self, cmd: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = (self.directory / f"{name}.out").open("ab")
        try:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                    start_new_session=True)
        finally:
            out.close()

    def handled_rows(self, consumer: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record handled so far, as its consumer logged it (seq, key, partition, offset, ts, ok, ...): the
        consumers' logs in the order they were started, each in file order, or only ``consumer``'s. A line that is
        not such a row (cut short by a killed writer) is skipped. Each call reads what was appended since the last
        (``_JsonLog``): the live checks (:meth:`handled`, :meth:`handled_beyond`, :meth:`wait_all_handled`) poll
        it while consumers write, the verdict's timings and the tests read it after the run."""
        for c in self.consumers:
            if consumer is None or c.name == consumer:
                yield from c.rows.rows()

    def produced_rows(self) -> Iterator[dict[str, Any]]:
        """Every send the producer saw acknowledged (seq, key, partition, offset, ts), as it logged them."""
        if self.producer is not None:
            yield from self.producer.rows.rows()

    def handled(self) -> int:
        """Records handled so far by every consumer, repeats included (how far a test is under way)."""
        return sum(1 for _ in self.handled_rows())

    def wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float = 120.0,
                 interval_s: float = 0.1) -> None:
        """Poll ``condition`` every ``interval_s`` (a bound, not a sleep); fail with ``what`` and the processes'
        state."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            for c in [*self.consumers, *([self.producer] if self.producer else [])]:
                if c.proc.poll() not in (None, 0) and c.name != "producer":
                    raise AssertionError(f"{c.name} exited with {c.proc.returncode}: {self.tail(c.name)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(interval_s)

    def output_lines(self, name: str, pattern: str | None = None) -> list[str]:
        """The lines process ``name`` wrote to its stdout and stderr so far (those matching the regular expression
        ``pattern`` if given); none before it wrote any."""
        path = self.directory / f"{name}.out"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return lines if pattern is None else [line for line in lines if re.search(pattern, line)]

    def tail(self, name: str, lines: int = 20) -> str:
        """The last ``lines`` of process ``name``'s output, for a failure message."""
        return "\n".join(self.output_lines(name)[-lines:])

    def wait_produced(self, timeout_s: float = 180.0) -> None:
        """Until the producer has ended by itself (its duration), every send acknowledged or failed."""
        if self.producer is None:
            return
        proc = self.producer.proc
        self.wait_for(lambda: proc.poll() is not None, "the producer's end", timeout_s)
        if proc.returncode != 0:
            raise AssertionError(f"the producer failed: {self.tail('producer')}")

    def stop_producer(self, timeout_s: float = 60.0) -> None:
        """End the production now rather than at its duration (a fault of unknown length, such as a rolling
        restart, produces until it is over): SIGTERM, on which it stops sending and waits for its acks."""
        if self.producer is not None and self.producer.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.producer.proc.send_signal(signal.SIGTERM)
        self.wait_produced(timeout_s)

    def wait_all_handled(self, timeout_s: float = 180.0) -> None:
        """Until every acknowledged seq was handled by some consumer."""
        def done() -> bool:
            return {row["seq"] for row in self.produced_rows()} <= {row["seq"] for row in self.handled_rows()}

        self.wait_for(done, "every acknowledged record handled", timeout_s)

    def mark_fault_end(self) -> None:
        self.fault_ended_at = time.time()

    def stop_consumers(self) -> None:
        """SIGTERM every live consumer (a drained stop: in-flight records finish, a final commit) and wait."""
        for c in self.consumers:
            if c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.proc.pid, signal.SIGCONT)
                    c.proc.send_signal(signal.SIGTERM)
        for c in self.consumers:
            try:
                c.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                raise AssertionError(f"{c.name} did not stop within 60 s of SIGTERM: {self.tail(c.name)}") from None

    def committed_behind_end(self) -> int:
        """Sum over partitions of (log end - committed offset) for the group, read straight from the brokers."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                             "enable.auto.commit": False})
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            behind = 0
            for tp in consumer.committed(tps, timeout=15):
                _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=15)
                behind += high - max(tp.offset, 0)
            return behind
        finally:
            consumer.close()

    def verdict(self, fault: str, recovering: str | None = None) -> Verdict:
        """Stop the consumers cleanly, then judge everything against the producer's acknowledged sends;
        ``recovering`` names the consumer whose recovery is timed (default: the first record anyone handled). Keeps
        the group's commit log in :attr:`commits`."""
        self.stop_consumers()
        producer_logs = [self.producer.log] if self.producer else []
        self.commits = committed_history(self.bootstrap, self.group, self.topic)
        backwards = backwards_moves(self.commits)
        report = validate_files(producer_logs, [c.log for c in self.consumers if c.log.exists()])
        return Verdict(
            fault=fault, records=report.produced, lost=report.lost, duplicates=report.duplicates,
            order_violations=report.order_violations_instance, unexpected=report.unexpected,
            committed_behind_end=self.committed_behind_end(),
            commit_regressions=len(backwards), recovery_s=self.recovery_s(recovering), regressions=backwards,
        )

    def recovery_s(self, consumer: str | None = None) -> float | None:
        """Seconds from :meth:`mark_fault_end` to the first record handled after it (by ``consumer`` if named)."""
        if self.fault_ended_at is None:
            return None
        after = [row["ts"] for row in self.handled_rows(consumer) if row["ts"] >= self.fault_ended_at]
        return min(after) - self.fault_ended_at if after else None

    def resumed_after(self, since: float, partitions: Collection[int], until: float | None = None,
                      pause_s: float = 1.0) -> float | None:
        """Seconds from ``since`` (a fault's start, ``time.time()``) until handling had resumed on every one of
        ``partitions`` (by any consumer), the slowest partition counting: on each, the end of its longest pause
        (two records handled on it ``pause_s`` or more apart) ending after ``since`` and by ``until``, or its first
        record after ``since`` when it did not pause. Unlike the first record handled after the fault, records a
        consumer had fetched before it and handles after it end no pause. None when some partition had no record
        handled in that window. For after the run: while a pause lasts it cannot be told from no pause."""
        last = until if until is not None else float("inf")
        handled: dict[int, list[float]] = {p: [] for p in partitions}
        for row in self.handled_rows():
            if row["partition"] in handled:
                handled[row["partition"]].append(row["ts"])
        resumed = []
        for times in handled.values():
            times.sort()
            gaps = [(b - a, b) for a, b in itertools.pairwise(times) if since < b <= last]
            if not gaps:
                return None
            longest, end = max(gaps)
            resumed.append(end if longest >= pause_s else gaps[0][1])
        return max(resumed) - since if resumed else None

    def handled_beyond(self, offsets: Mapping[int, int]) -> bool:
        """Whether every partition of ``offsets`` had a record handled at or beyond its offset (a live check: say
        the log end when a partition's new leader took over, and records written through the new leader flow)."""
        reached = {row["partition"] for row in self.handled_rows()
                   if row["partition"] in offsets and row["offset"] >= offsets[row["partition"]]}
        return reached >= set(offsets)

    def close(self) -> None:
        """Whatever the test's outcome: no process lives on, the proxy and every broker are whole again (running,
        every replica in sync), so that the next test starts on a whole cluster."""
        for c in [*self.consumers, *([self.producer] if self.producer else [])]:
            if c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
                c.proc.wait(timeout=30)
        with contextlib.suppress(Exception):
            self.proxy.reset()
        state = self.cluster.state()
        for node in state.nodes if state else []:
            self.cluster.start_broker(node.node_id)
        AdminClient({"bootstrap.servers": self.bootstrap}).delete_topics([self.topic])
        self.cluster.wait_in_sync()
