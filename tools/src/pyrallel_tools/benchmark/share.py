"""``pyrallel bench --suite share``: a share group (KIP-932) vs a consumer group of the same instances (issue 21).

On one topic of 2 partitions, a 5 ms ``asyncio.sleep`` per record and ``concurrency`` records in flight per
instance, instances 1 -> 2 -> 4 of

* ``share``: :class:`~pyrallel_consumer.share_consumer.PyrallelShareConsumer` (no order), and
* ``async-unordered``: :class:`~pyrallel_consumer.consumer.PyrallelConsumer`, ordering ``unordered``,

each point a new group reading the topic from its start, started and counted by the scale suite's
:func:`~pyrallel_tools.benchmark.scale.run_group` (``--count-on-signal``). A consumer group has settled when the
admin API shows it stable with both partitions assigned (the scale suite's check); that view does not exist for share
groups (confluent-kafka has no share-group admin call), so a share group has settled once every instance has handled
a record (each instance logs its handlings, ``--log``; the consumer-group instances log too, so both pay the same).
With 4 consumer-group instances on 2 partitions, the 2 that own none are counted as idle (0 records, see
:func:`~pyrallel_tools.benchmark.scale.run_group`).

Then the duplicates after a SIGKILL, the same way for both kinds of group: 2 instances of a new group on a new empty
topic, settled (warm-up records until every instance handled one) before ``kill_records`` records are produced at
``kill_rate`` a second (the main suite's :class:`~pyrallel_tools.benchmark.production.RateProducer`, every record
acknowledged by the broker), one instance SIGKILLed once ``kill_fraction`` of them were handled, the survivor left
until every produced record was handled; every handling is in the logs
(:func:`~pyrallel_tools.benchmark.results.restart_stats`). The share group gets a short record lock and session
(group settings through the admin API, within the local broker's widened bounds) so the killed member's records come
back in seconds; the consumer group the same session timeout.

The CLI calls :func:`run_share` on its main thread; the report is :mod:`~pyrallel_tools.benchmark.share_report`'s.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from pyrallel_tools.benchmark import harness
from pyrallel_tools.benchmark.measure import ContenderProcess
from pyrallel_tools.benchmark.peers import catalog, main_environment
from pyrallel_tools.benchmark.production import RateProducer, prepared_topic
from pyrallel_tools.benchmark.results import Restart, restart_stats
from pyrallel_tools.benchmark.runner import (
    contender_env,
    log_lines,
    log_rows,
    machine_info,
    new_group,
    wait_for,
)
from pyrallel_tools.benchmark.scale import (
    Launcher,
    Point,
    ScaleError,
    ScalePlan,
    Settle,
    Settled,
    TopicSpec,
    consumer_group_settled,
    run_group,
    wait_group_settled,
)
from pyrallel_tools.benchmark.scale_report import ScaleMeasure
from pyrallel_tools.benchmark.share_report import ShareReport, point_id, write_share_outputs
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.topics import delete_topics, produce_keyed

log = logging.getLogger(__name__)

SHARE: Final = "share"
CONSUMER_GROUP: Final = "async-unordered"
WORKLOAD: Final = "sleep5ms"
WARMUP_BURST: Final = 10
"""Warm-up records per burst of the kill runs (keyed round-robin, so both partitions get some)."""


@dataclass(frozen=True, slots=True)
class SharePlan:
    """What one run measures; with the defaults a few minutes on 2 cores."""

    partitions: int = 2
    keys: int = 1000
    value_bytes: int = 64
    records: int = 300_000
    """Records of the throughput topic; every point reads it from the start with a new group, and must not reach its
    end before its window closes (the instances handle records while the group settles too)."""
    instances: tuple[int, ...] = (1, 2, 4)
    contenders: tuple[str, str] = (SHARE, CONSUMER_GROUP)
    concurrency: int = 100
    """Records in flight per instance: 100 / 5 ms = 20,000 records/s each at best."""
    window_s: float = 5.0
    settle_timeout_s: float = 60.0
    join_timeout_s: float = 60.0
    kill_records: int = 20_000
    kill_rate: int = 4000
    """Records a second of the kill runs' production (5 s): below what one instance of either kind handles, so the
    survivor keeps up alone."""
    kill_fraction: float = 0.3
    kill_runs: int = 3
    """Kills per kind of group, alternating: the duplicates depend on what the killed instance had in flight."""
    kill_lock_ms: int = 2000
    kill_session_ms: int = 6000
    kill_drain_s: float = 60.0

    def timing(self) -> ScalePlan:
        """The scale suite's plan carrying this one's timings, for :class:`Launcher` and the settle checks."""
        return ScalePlan(instances=self.instances, group_partitions=self.partitions, group_keys=self.keys,
                         group_concurrency=self.concurrency, window_s=self.window_s,
                         settle_timeout_s=self.settle_timeout_s, join_timeout_s=self.join_timeout_s,
                         max_seconds=self.kill_drain_s + 60)

    def topic(self, records: int) -> TopicSpec:
        return TopicSpec(self.partitions, self.keys, self.value_bytes, records)

    def summary(self) -> dict[str, Any]:
        """The plan as the results JSON holds it (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def run_share(bootstrap: str, plan: SharePlan, out_dir: Path | None, run_dir: Path) -> ShareReport:
    """The throughput points, then the kills; the report (and its files under ``out_dir`` unless None)."""
    started = time.monotonic()
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    report = ShareReport(machine_info({}, bootstrap), plan.summary())
    specs = {s.id: s for s in catalog()}
    env = contender_env(harness.loops_per_ms())
    launchers = {c: Launcher(bootstrap, plan.timing(), run_dir, specs[c], main_environment(), env)
                 for c in plan.contenders}
    prefix = f"share{uuid.uuid4().hex[:6]}"
    topics: list[str] = []
    try:
        topics.append(prepared_topic(bootstrap, f"{prefix}-throughput", plan.records, plan.keys, plan.partitions,
                                     plan.value_bytes))
        for n in plan.instances:
            for contender in plan.contenders:
                report.throughput.append(_throughput(launchers[contender], plan, topics[0], n))
        for run in range(1, plan.kill_runs + 1):
            for contender in plan.contenders:
                kill, wait = _kill(launchers[contender], plan, prefix, run)
                report.kills.append(kill)
                report.kill_longest_wait_s.append(wait)
    except (LocalKafkaError, KafkaException, BufferError) as exc:
        report.notes.append(f"stopped early: {exc}")
        log.warning("share: stopped early: %s", exc)
    finally:
        failed = delete_topics(bootstrap, topics)
        if failed:
            report.notes += failed
    report.duration_s = round(time.monotonic() - started, 1)
    if out_dir is not None:
        write_share_outputs(report, out_dir)
    return report


def _log_path(launcher: Launcher, name: str) -> Path:
    return launcher.run_dir / f"{name}.log"


def _throughput(launcher: Launcher, plan: SharePlan, topic: str, members: int) -> ScaleMeasure:
    spec = plan.topic(plan.records)
    point = Point(point_id(launcher.spec.id, members), spec, WORKLOAD, members, plan.concurrency)
    m = ScaleMeasure(point.id, spec.partitions, spec.keys, spec.value_bytes, spec.records, WORKLOAD, members,
                     plan.concurrency)

    def extra(name: str) -> list[str]:
        path = _log_path(launcher, name)
        path.unlink(missing_ok=True)
        return ["--log", str(path)]

    settle = consumer_group_settled(launcher) if launcher.spec.id != SHARE else _every_instance_handled(launcher)
    m.load_1m = round(os.getloadavg()[0], 2)
    try:
        run_group(launcher, point, topic, m, extra, settle)
    except (ScaleError, KafkaException) as exc:
        m.error = str(exc)
    log.info("share %-18s %10.0f rec/s %s (settled after %s s) %s", m.point, m.records_per_s, m.member_rates,
             m.settle_s, m.error)
    return m


def _every_instance_handled(launcher: Launcher) -> Settle:
    """The share-group check: every instance's log holds a record (the broker handed each member some)."""
    plan = launcher.plan

    def settle(group: str, point: Point, procs: Sequence[ContenderProcess]) -> Settled:
        started = time.monotonic()
        if not wait_for(lambda: _all_logged(procs), plan.settle_timeout_s, 0.05):
            raise ScaleError(f"share group {group}: not every instance handled a record within "
                             f"{plan.settle_timeout_s:.0f} s")
        return Settled(time.monotonic() - started)

    return settle


def _all_logged(procs: Sequence[ContenderProcess]) -> bool:
    """Every instance's log (``--log <name>.log`` beside its stderr) holds a record; ScaleError when one exited."""
    for proc in procs:
        if proc.proc.poll() is not None:
            raise ScaleError(f"an instance exited before handling a record: {proc.stderr_tail()}")
    return all(log_lines(proc.stderr_path.with_suffix(".log")) > 0 for proc in procs)


def set_share_group(bootstrap: str, group: str, settings: dict[str, str]) -> None:
    """Share-group settings (``share.record.lock.duration.ms``, ...) through the admin API, before its first
    member joins."""
    entries = [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
               for name, value in settings.items()]
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def _kill(launcher: Launcher, plan: SharePlan, prefix: str, run: int) -> tuple[Restart, float | None]:
    """2 instances of a new group on a new empty topic; once the group settled, ``kill_records`` records produced
    at ``kill_rate`` a second; one instance SIGKILLed once ``kill_fraction`` of them were handled, the survivor
    left until every one was handled; every handling counted against the produced records. Also the longest a
    record waited from its production to its first handling (seconds; None without any).

    Settled: warm-up records (no produce time, sequence numbers from ``kill_records`` on, left out of the count)
    trickle in until every instance handled one, for both kinds of group alike; a consumer group must also be
    stable with both partitions assigned (the admin API's view, as for the throughput points)."""
    contender = launcher.spec.id
    m = Restart(contender, WORKLOAD, plan.keys, plan.kill_records, rate=plan.kill_rate)
    # The limit is one no instance reaches: the warm-up records and the duplicates come on top of the records.
    point = Point(f"kill-{contender}", plan.topic(2 * plan.kill_records), WORKLOAD, 0, plan.concurrency)
    group = new_group(f"{contender}-kill")
    topic = prepared_topic(launcher.bootstrap, f"{prefix}-kill{run}-{contender}", 0, plan.keys, plan.partitions)
    extra = [] if contender == SHARE else ["--session-timeout-ms", str(plan.kill_session_ms)]
    names = [f"{contender}-kill{run}-{i}" for i in (1, 2)]
    logs = [_log_path(launcher, name) for name in names]
    procs: list[ContenderProcess] = []
    producer = RateProducer(launcher.bootstrap, topic, plan.kill_rate, plan.kill_records / plan.kill_rate,
                            plan.keys, 0)
    finished = False
    try:
        if contender == SHARE:
            set_share_group(launcher.bootstrap, group, {"share.record.lock.duration.ms": str(plan.kill_lock_ms),
                                                        "share.session.timeout.ms": str(plan.kill_session_ms)})
        for name, path in zip(names, logs, strict=True):
            path.unlink(missing_ok=True)
            procs.append(launcher.start(point, topic, group, name, ["--log", str(path), *extra]))
        m.error = _settle_for_kill(launcher, plan, topic, group, procs)
        if m.error:
            return m, None
        producer.start()
        target = int(plan.kill_records * plan.kill_fraction)
        if not wait_for(lambda: _handled(logs, plan.kill_records) >= target,
                        plan.kill_records / plan.kill_rate + plan.join_timeout_s, 0.1):
            m.error = f"{target:,} records were not handled in time"
            return m, None
        procs[0].kill()
        producer.join()
        if producer.error:
            m.error = producer.error
            return m, None
        finished = wait_for(lambda: _handled(logs, plan.kill_records) >= plan.kill_records, plan.kill_drain_s, 0.2)
        time.sleep(0.5)  # anything still in flight is counted too
    finally:
        for proc in procs:
            proc.kill()
            proc.finish(5)
        producer.join()
        failed = delete_topics(launcher.bootstrap, [topic])
        if failed:
            m.error = m.error or "; ".join(failed)
    rows = [log_rows(path) for path in logs]
    kill_stats(m, rows[0], rows[1], finished)
    wait = longest_wait_s([*rows[0], *rows[1]], plan.kill_records)
    log.info("share kill %-16s killed handled %d, survivor %d, %d duplicates, missing %s, longest wait %s s %s",
             contender, m.handled_before_kill, m.handled_after_restart, m.duplicates, m.missing, wait, m.error)
    return m, wait


def kill_stats(m: Restart, killed: Sequence[tuple[int, int, int]], survivor: Sequence[tuple[int, int, int]],
               finished: bool) -> None:
    """:func:`restart_stats` over the produced records only (sequence numbers below ``m.records``): the warm-up
    records are left out."""
    restart_stats(m, [row for row in killed if row[0] < m.records], [row for row in survivor if row[0] < m.records],
                  finished)


def longest_wait_s(rows: Sequence[tuple[int, int, int]], records: int) -> float | None:
    """The longest a produced record (sequence number below ``records``) waited from its production to its first
    handling, in seconds: how long the killed instance's records were stuck."""
    first: dict[int, tuple[int, int]] = {}
    for seq, produced, done in rows:
        if seq < records and (seq not in first or done < first[seq][1]):
            first[seq] = (produced, done)
    return round(max(done - produced for produced, done in first.values()) / 1e6, 2) if first else None


def _settle_for_kill(launcher: Launcher, plan: SharePlan, topic: str, group: str,
                     procs: Sequence[ContenderProcess]) -> str:
    """Warm-up records, a few every 0.2 s, until every instance handled one (then, for a consumer group, the admin
    API's view); why the group did not settle, or ''."""
    seq = plan.kill_records
    try:
        deadline = time.monotonic() + plan.settle_timeout_s
        while not _all_logged(procs):
            if time.monotonic() > deadline:
                return f"not every instance handled a warm-up record within {plan.settle_timeout_s:.0f} s"
            produce_keyed(launcher.bootstrap, topic, WARMUP_BURST, plan.keys, start_seq=seq)
            seq += WARMUP_BURST
            time.sleep(0.2)
        if launcher.spec.id != SHARE:
            wait_group_settled(launcher.bootstrap, group, len(procs), plan.partitions, procs, plan.settle_timeout_s,
                               launcher.plan.settle_quiet_s)
    except ScaleError as exc:
        return str(exc)
    return ""


def _handled(logs: Sequence[Path], records: int) -> int:
    """Distinct records of the rate-produced ones (sequence numbers below ``records``) handled over the logs."""
    return len({seq for path in logs for seq, _, _ in log_rows(path) if seq < records})
