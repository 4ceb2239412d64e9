"""``pyrallel bench --suite rebalance``: how long a consumer group's partitions go without an owner when a member
joins and when one leaves, for a plain confluent-kafka group and for a group of PyrallelConsumers, side by side
on the same broker with the same librdkafka settings.

Per contender, from the CLI's main thread (:func:`run_rebalance`): a fresh topic of ``partitions`` partitions
and group; a small load produced by a :class:`LoadProducer` thread (bounded: it stops when asked or after
``max_load_s``); ``members`` member processes (:mod:`rebalance_member`), then until the group settled. Then,
``repetitions`` times: a new member joins (the event starts at its subscribe), the group settles; the oldest
member leaves cleanly (the event starts when it begins close()/stop()), the group settles. "Settled" also waits
for ``quiet_s`` without any ownership change. Each event's figures come from the members' logs
(:func:`rebalance_timeline.hand_over`); the summaries and ratios from :mod:`rebalance_report`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaException, Producer

from pyrallel_tools.benchmark.rebalance_report import CONTENDERS, EventMeasure, RebalanceReport
from pyrallel_tools.benchmark.rebalance_timeline import Change, first_time, hand_over, last_change, parse_changes
from pyrallel_tools.localkafka.topics import create_topic

log = logging.getLogger(__name__)


class RebalanceError(ValueError):
    """A contender's group did not get where the suite needs it (a member failed, a settle timed out)."""


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """What a :class:`Group` of member processes needs; the rebalance and recovery suites' plans extend it."""

    partitions: int = 8
    kafka: tuple[tuple[str, str], ...] = ()
    """Extra librdkafka properties of every member (``pyrallel bench --kafka NAME=VALUE``)."""
    quiet_s: float = 1.0
    settle_timeout_s: float = 60.0
    start_timeout_s: float = 60.0
    """How long a member process gets from its start to its subscribe (interpreter and imports)."""
    max_load_s: float = 900.0
    """Bound of the load producer and of every member process (each stops by itself after it)."""


@dataclass(frozen=True, slots=True)
class RebalancePlan(GroupPlan):
    """What one run measures; with the defaults and librdkafka's 3 s heartbeat about 1.5 minutes on 2 cores."""

    members: int = 3
    repetitions: int = 3
    rate: int = 100
    """Records per second produced while the members run (small: the suite measures hand-over, not load)."""

    def summary(self) -> dict[str, Any]:
        return {"partitions": self.partitions, "members": self.members, "repetitions": self.repetitions,
                "rate": self.rate, "kafka": dict(self.kafka), "quiet_s": self.quiet_s,
                "contenders": list(CONTENDERS)}


class LoadProducer(threading.Thread):
    """Produces ``rate`` records per second to ``topic`` until :meth:`stop` or ``max_s``; started and stopped by
    the runner's main thread, runs on its own; ``error`` says what went wrong, if anything."""

    def __init__(self, bootstrap: str, topic: str, rate: int, max_s: float) -> None:
        super().__init__(name="rebalance-load", daemon=True)
        self.bootstrap, self.topic, self.rate, self.max_s = bootstrap, topic, rate, max_s
        self.error = ""
        self.produced = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
            started = time.monotonic()
            while not self._stop_event.is_set() and time.monotonic() - started < self.max_s:
                producer.produce(self.topic, value=b"x" * 64, key=f"k{self.produced % 100}".encode())
                self.produced += 1
                producer.poll(0)
                self._stop_event.wait(max(0.0, started + self.produced / self.rate - time.monotonic()))
            producer.flush(10)
        except (KafkaException, BufferError) as exc:
            self.error = f"the load producer failed: {exc}"
            log.warning("%s", self.error)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(15)


def member_argv(kind: str, bootstrap: str, topic: str, group: str, name: str, log_path: Path, max_seconds: float,
                handled_path: Path | None = None, kafka: Sequence[tuple[str, str]] = (),
                extra_args: Sequence[str] = ()) -> list[str]:
    """The command line of one :mod:`~pyrallel_tools.benchmark.rebalance_member` process (``kind``: ``plain`` or
    ``pyrallel``) under this interpreter: its ownership log at ``log_path``, its handled log at ``handled_path``
    unless None, ``kafka`` as ``--kafka NAME=VALUE`` options, then ``extra_args`` as they are."""
    argv = [sys.executable, "-m", "pyrallel_tools.benchmark.rebalance_member", kind, "--bootstrap", bootstrap,
            "--topic", topic, "--group", group, "--member", name, "--log", str(log_path),
            "--max-seconds", str(max_seconds)]
    if handled_path is not None:
        argv += ["--handled-log", str(handled_path)]
    for key, value in kafka:
        argv += ["--kafka", f"{key}={value}"]
    return argv + list(extra_args)


@dataclass(slots=True)
class Member:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    output: IO[bytes]
    handled_path: Path | None = None


class Group:
    """The member processes of one contender's group, and their logs; used from the runner's main thread (of the
    rebalance suite, and of the recovery suite, :mod:`pyrallel_tools.benchmark.recovery`, which also has the
    members log the records they handle and kills and replaces them)."""

    def __init__(self, bootstrap: str, kind: str, plan: GroupPlan, run_dir: Path, prefix: str | None = None,
                 log_handled: bool = False) -> None:
        self.bootstrap, self.kind, self.plan, self.run_dir = bootstrap, kind, plan, run_dir
        self.log_handled = log_handled
        suffix = uuid.uuid4().hex[:6]
        self.topic = f"{prefix or f'bench-rebalance-{kind}'}-{suffix}"
        self.group = self.topic
        self.live: list[Member] = []
        self.gone: list[Member] = []
        self._started = 0

    def start_member(self, name: str | None = None, extra_args: Sequence[str] = ()) -> Member:
        """A new member process; ``name`` defaults to a new one (a replacement may take its predecessor's), its
        logs are always its own files."""
        self._started += 1
        name = name or f"{self.kind}-m{self._started}"
        stem = self.run_dir / f"{self.group}-{name}-{self._started}"
        log_path = stem.with_suffix(".jsonl")
        log_path.unlink(missing_ok=True)
        handled_path = None
        if self.log_handled:
            handled_path = stem.with_suffix(".handled.jsonl")
            handled_path.unlink(missing_ok=True)
        argv = member_argv(self.kind, self.bootstrap, self.topic, self.group, name, log_path, self.plan.max_load_s,
                           handled_path, self.plan.kafka, extra_args)
        output = stem.with_suffix(".out").open("wb")
        proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, cwd=self.run_dir,
                                start_new_session=True)
        member = Member(name, proc, log_path, output, handled_path)
        self.live.append(member)
        log.info("Started %s (pid %d)", name, proc.pid)
        return member

    def kill(self, member: Member) -> None:
        """SIGKILL the member's process group (no leave, no commit: a crash) and reap it; RebalanceError when it
        has not exited 10 s later. Either way it counts as gone (:meth:`stop_all` does not wait for it again)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(member.proc.pid, signal.SIGKILL)
        try:
            member.proc.wait(10)
        except subprocess.TimeoutExpired as exc:
            reason = f"{member.name} (pid {member.proc.pid}) had not exited 10 s after its SIGKILL"
            raise RebalanceError(reason) from exc
        finally:
            member.output.close()
            self.live.remove(member)
            self.gone.append(member)

    def ask_to_leave(self, member: Member) -> None:
        with contextlib.suppress(ProcessLookupError):
            member.proc.send_signal(signal.SIGTERM)
        self.live.remove(member)
        self.gone.append(member)

    def changes(self) -> list[Change]:
        found: list[Change] = []
        for member in (*self.gone, *self.live):
            with contextlib.suppress(FileNotFoundError):
                found += parse_changes(member.log_path.read_text())
        return found

    def expected(self) -> list[str]:
        return [m.name for m in self.live]

    def check_alive(self) -> None:
        for member in self.live:
            if member.proc.poll() is not None:
                raise RebalanceError(f"{member.name} exited with code {member.proc.returncode}: {_tail(member)}")

    def stop_all(self, grace_s: float = 30.0) -> None:
        """Ask every member to leave, wait for them together, kill what is left (by process group)."""
        for member in list(self.live):
            self.ask_to_leave(member)
        deadline = time.monotonic() + grace_s
        for member in self.gone:
            if member.output.closed:  # killed earlier
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.proc.wait(max(0.1, deadline - time.monotonic()))
            if member.proc.poll() is None:
                log.warning("%s did not leave within %.0f s; killing it", member.name, grace_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(member.proc.pid, signal.SIGKILL)
                member.proc.wait(10)
            member.output.close()


def _tail(member: Member, lines: int = 5) -> str:
    try:
        text = member.log_path.with_suffix(".out").read_text(errors="replace")
    except OSError:
        return ""
    return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _wait(condition: Callable[[], bool], timeout_s: float, what: str, group: Group) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        group.check_alive()
        if time.monotonic() > deadline:
            raise RebalanceError(f"{group.kind}: {what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.1)


def wait_settled(group: Group, start: float) -> tuple[list[Change], float]:
    """Poll the logs until the group is settled and quiet; the changes and the window's end (epoch seconds)."""
    plan = group.plan
    found: list[Change] = []
    end = start

    def settled() -> bool:
        nonlocal found, end
        found, end = group.changes(), time.time()
        outcome = hand_over(found, plan.partitions, group.expected(), start, max(start, end))
        return outcome.settle_s is not None and end - max(start, last_change(found)) >= plan.quiet_s

    _wait(settled, plan.settle_timeout_s, f"settling with {', '.join(group.expected())}", group)
    return found, end


def _measure(group: Group, event: str, repetition: int, member: Member, start: float) -> EventMeasure:
    changes, end = wait_settled(group, start)
    outcome = hand_over(changes, group.plan.partitions, group.expected(), start, end)
    m = EventMeasure(group.kind, event, repetition, member.name, start, outcome.max_unowned_s,
                     outcome.unowned_partitions, outcome.settle_s, outcome.changes)
    log.info("%-8s %-5s #%d (%s): longest unowned %.3f s (%d partitions), settled after %s s, %d changes",
             group.kind, event, repetition, member.name, outcome.max_unowned_s, outcome.unowned_partitions,
             outcome.settle_s, outcome.changes)
    return m


def _join(group: Group, repetition: int) -> EventMeasure:
    member = group.start_member()
    _wait(lambda: first_time(group.changes(), member.name, "subscribe") is not None, group.plan.start_timeout_s,
          f"{member.name}'s subscribe", group)
    start = first_time(group.changes(), member.name, "subscribe") or time.time()
    return _measure(group, "join", repetition, member, start)


def _leave(group: Group, repetition: int) -> EventMeasure:
    member = group.live[0]  # the oldest: members are replaced over the repetitions
    group.ask_to_leave(member)
    _wait(lambda: first_time(group.changes(), member.name, "leave") is not None, 30.0,
          f"{member.name}'s leave", group)
    start = first_time(group.changes(), member.name, "leave") or time.time()
    m = _measure(group, "leave", repetition, member, start)
    try:
        member.proc.wait(30)
    except subprocess.TimeoutExpired as exc:
        raise RebalanceError(f"{member.name} did not exit within 30 s of leaving: {_tail(member)}") from exc
    return m


def run_contender(bootstrap: str, kind: str, plan: RebalancePlan, run_dir: Path, report: RebalanceReport) -> None:
    """Every event of one contender, appended to ``report`` as it is measured; a failure ends the contender's run
    (recorded in ``report.errors``), its members are always stopped."""
    group = Group(bootstrap, kind, plan, run_dir)
    create_topic(bootstrap, group.topic, plan.partitions)
    producer = LoadProducer(bootstrap, group.topic, plan.rate, plan.max_load_s)
    producer.start()
    try:
        for _ in range(plan.members):
            group.start_member()
        wait_settled(group, time.time())
        for repetition in range(1, plan.repetitions + 1):
            report.measures.append(_join(group, repetition))
            report.measures.append(_leave(group, repetition))
    except RebalanceError as exc:
        report.errors[kind] = str(exc)
        log.warning("%s", exc)
    finally:
        group.stop_all()
        producer.stop()
    if producer.error:
        report.errors.setdefault(kind, producer.error)


def run_rebalance(bootstrap: str, plan: RebalancePlan, out_dir: Path | None, run_dir: Path) -> RebalanceReport:
    """Both contenders, one after the other; the report (and its files under ``out_dir`` unless None)."""
    from pyrallel_tools.benchmark.rebalance_report import write_rebalance_outputs
    from pyrallel_tools.benchmark.runner import machine_info

    started = time.monotonic()
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    report = RebalanceReport(machine_info({}, bootstrap), plan.summary())
    for kind in CONTENDERS:
        run_contender(bootstrap, kind, plan, run_dir, report)
    report.finish()
    report.duration_s = round(time.monotonic() - started, 1)
    if out_dir is not None:
        write_rebalance_outputs(report, out_dir)
    return report
