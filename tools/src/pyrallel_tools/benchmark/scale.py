"""``pyrallel bench --suite scale``: the async engine's throughput, CPU per record and peak RSS as the work grows.

Five curves (issue 20), each a few points of the same contender, this library's async engine in key order
(``python -m pyrallel_tools.benchmark.contenders async``, one process per consumer, measured by
:mod:`~pyrallel_tools.benchmark.measure`):

* partitions 8 -> 64 -> 512, distinct keys 100 -> 10,000 -> 1,000,000, value size 64 B -> 4 KiB -> 64 KiB: a no-op
  handler reads a whole pre-produced topic once. The three curves cross at one *base* point (8 partitions, 10,000
  keys, 64 B), measured once. A topic holds ``records`` records, more when it has more keys (every key occurs),
  fewer when its values would exceed ``value_budget_bytes``;
* instances 1 -> 2 -> 4 of one group on a 16-partition topic, a 5 ms ``asyncio.sleep`` per record and
  ``group_concurrency`` records in flight per instance: the instances start together, and once the group is stable
  with every partition assigned (the admin API's view, ``settle_quiet_s`` without a change) each gets SIGUSR1 and
  counts the next ``window_s`` seconds (``--count-on-signal``); the figure is the aggregate;
* a backlog of ``backlog_records`` records (the instances' topic) read by one consumer with the no-op handler:
  peak RSS, and the RSS over time from the sampler.

Every topic is deleted as soon as its points ran, and whatever this run created is deleted at its end whatever
happened. The CLI calls :func:`run_scale` on its main thread; the report, table and result files are
:mod:`~pyrallel_tools.benchmark.scale_report`'s, the plots :mod:`~pyrallel_tools.benchmark.scale_plots`'.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Final

from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from pyrallel_tools.benchmark import harness
from pyrallel_tools.benchmark.measure import ContenderProcess, Outcome, wait_outcome
from pyrallel_tools.benchmark.peers import ContenderSpec, Environment, catalog, main_environment
from pyrallel_tools.benchmark.production import prepared_topic
from pyrallel_tools.benchmark.results import short_line
from pyrallel_tools.benchmark.runner import contender_argv, contender_env, machine_info, new_group
from pyrallel_tools.benchmark.scale_report import ScaleMeasure, ScaleReport, write_scale_outputs
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.topics import delete_topics

log = logging.getLogger(__name__)

CONTENDER: Final = "async-key"

class ScaleError(RuntimeError):
    """A point could not be measured (a group that did not settle, an instance that exited early)."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A pre-produced topic: ``records`` records keyed round-robin over ``keys`` keys, values of ``value_bytes``
    bytes of padding after the 13-byte sequence number."""

    partitions: int
    keys: int
    value_bytes: int
    records: int

    @property
    def label(self) -> str:
        return f"p{self.partitions}-k{self.keys}-v{self.value_bytes}"


@dataclass(frozen=True, slots=True)
class Point:
    """One measurement: ``members`` 0 is one consumer reading the whole topic; N is N instances of one group
    counted over a common window."""

    id: str
    topic: TopicSpec
    workload: str = "noop"
    members: int = 0
    concurrency: int = 1000
    rss_series: bool = False
    """Keep the RSS over time (the backlog)."""


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """What one run measures; with the defaults about 4 minutes on 2 cores, producing the topics included (214 s on
    the loaded dev machine, 71 s of it producing)."""

    partitions: tuple[int, ...] = (8, 64, 512)
    keys: tuple[int, ...] = (100, 10_000, 1_000_000)
    value_bytes: tuple[int, ...] = (64, 4096, 65_536)
    base_partitions: int = 8
    base_keys: int = 10_000
    base_value_bytes: int = 64
    records: int = 200_000
    """Records per topic of the no-op curves (more with more keys, fewer with large values: :meth:`records_for`)."""
    value_budget_bytes: int = 256 * 2**20
    """Value bytes per topic at most: 65,536 records of 4 KiB, 4,096 of 64 KiB."""
    concurrency: int = 1000
    """Records in flight (max_in_flight) of the no-op points: the library's default."""
    instances: tuple[int, ...] = (1, 2, 4)
    group_partitions: int = 16
    group_keys: int = 1000
    group_concurrency: int = 100
    """Records in flight per instance on the 5 ms handler: 100 / 5 ms = 20,000 records/s each at best, so the cores
    bound the group before the handler does as instances are added."""
    window_s: float = 6.0
    heartbeat_interval_ms: int = 500
    """The instances' heartbeat: a cooperative rebalance round waits for one, so the group settles sooner."""
    settle_timeout_s: float = 60.0
    settle_quiet_s: float = 1.0
    backlog_records: int = 1_000_000
    """Records of the backlog topic, which the instances read too (16 partitions, 1,000 keys, 64 B)."""
    max_seconds: float = 120.0
    """A no-op run also ends this long after its first record (it normally ends at the topic's end)."""
    join_timeout_s: float = 60.0

    def records_for(self, keys: int, value_bytes: int) -> int:
        """Every key at least once, at most ``value_budget_bytes`` of values."""
        return min(max(self.records, keys), max(1, self.value_budget_bytes // value_bytes))

    def _spec(self, partitions: int | None = None, keys: int | None = None, value_bytes: int | None = None
              ) -> TopicSpec:
        p = self.base_partitions if partitions is None else partitions
        k = self.base_keys if keys is None else keys
        v = self.base_value_bytes if value_bytes is None else value_bytes
        return TopicSpec(p, k, v, self.records_for(k, v))

    def curves(self) -> dict[str, list[tuple[int, str]]]:
        """Curve -> its (x, point id) in order; the no-op curves share their base point."""
        return {
            "partitions": [(p, self._spec(partitions=p).label) for p in self.partitions],
            "keys": [(k, self._spec(keys=k).label) for k in self.keys],
            "value_bytes": [(v, self._spec(value_bytes=v).label) for v in self.value_bytes],
            "instances": [(n, f"instances-{n}") for n in self.instances],
            "backlog": [(self.backlog_records, "backlog")],
        }

    def points(self) -> list[Point]:
        """Every point once, in run order; the points of one topic are consecutive (produced once, then deleted)."""
        specs = [self._spec(partitions=p) for p in self.partitions] + [self._spec(keys=k) for k in self.keys] + [
            self._spec(value_bytes=v) for v in self.value_bytes]
        points = [Point(spec.label, spec, concurrency=self.concurrency) for spec in dict.fromkeys(specs)]
        group = TopicSpec(self.group_partitions, self.group_keys, self.base_value_bytes, self.backlog_records)
        points.append(Point("backlog", group, concurrency=self.concurrency, rss_series=True))
        points += [Point(f"instances-{n}", group, "sleep5ms", n, self.group_concurrency) for n in self.instances]
        return points

    def summary(self) -> dict[str, Any]:
        """The plan as the results JSON holds it (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# --- running -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Launcher:
    """Starts one contender (``spec``: the async-key one here, two others for ``--suite share``) with this run's
    broker, environment and files."""

    bootstrap: str
    plan: ScalePlan
    run_dir: Path
    spec: ContenderSpec
    environment: Environment
    env: dict[str, str]

    def start(self, point: Point, topic: str, group: str, name: str, extra: Sequence[str] = ()) -> ContenderProcess:
        windowed = bool(point.members)
        argv = contender_argv(
            self.spec, self.environment, Path(), self.bootstrap, topic=topic, group=group,
            workload=point.workload, limit=point.topic.records,
            max_seconds=self.plan.window_s if windowed else self.plan.max_seconds, concurrency=point.concurrency,
            join_timeout_s=self.plan.join_timeout_s + (self.plan.settle_timeout_s if windowed else 0.0))
        return ContenderProcess([*argv, *extra], self.env, self.run_dir / f"{name}.stderr", self.run_dir)


def run_scale(bootstrap: str, plan: ScalePlan, out_dir: Path | None, run_dir: Path) -> ScaleReport:
    """Every point of the plan, topic by topic; the report (and its files under ``out_dir`` unless None)."""
    started = time.monotonic()
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    report = ScaleReport(machine_info({}, bootstrap), plan.summary(), plan.curves())
    spec = next(s for s in catalog() if s.id == CONTENDER)
    launcher = Launcher(bootstrap, plan, run_dir, spec, main_environment(), contender_env(harness.loops_per_ms()))
    prefix = f"scale{uuid.uuid4().hex[:6]}"
    try:
        for topic_spec, group in groupby(plan.points(), key=lambda p: p.topic):
            _run_topic(launcher, prefix, topic_spec, list(group), report)
    finally:
        leftovers = _sweep(bootstrap, f"bench-{prefix}-")
        if leftovers:
            report.notes.append("Topics left on the broker: " + "; ".join(leftovers))
    report.duration_s = round(time.monotonic() - started, 1)
    if out_dir is not None:
        write_scale_outputs(report, out_dir)
    return report


def _run_topic(launcher: Launcher, prefix: str, spec: TopicSpec, points: list[Point], report: ScaleReport) -> None:
    """Produce the topic, run its points, delete it."""
    measures = [_measure_of(p) for p in points]
    report.measures += measures
    produce_started = time.monotonic()
    try:
        topic = prepared_topic(launcher.bootstrap, f"{prefix}-{spec.label}", spec.records, spec.keys, spec.partitions,
                               spec.value_bytes)
    except (LocalKafkaError, KafkaException, BufferError) as exc:
        for m in measures:
            m.error = f"producing the topic failed: {exc}"
        log.warning("scale %s: producing the topic failed: %s", spec.label, exc)
        return
    measures[0].produce_s = round(time.monotonic() - produce_started, 1)
    try:
        for point, m in zip(points, measures, strict=True):
            m.load_1m = round(os.getloadavg()[0], 2)
            try:
                if point.members:
                    run_group(launcher, point, topic, m, heartbeat(launcher.plan), consumer_group_settled(launcher))
                else:
                    _run_drain(launcher, point, topic, m)
            except (ScaleError, KafkaException) as exc:
                m.error = str(exc)
            _log(m)
    finally:
        failed = delete_topics(launcher.bootstrap, [topic])
        if failed:
            report.notes += failed


def _measure_of(point: Point) -> ScaleMeasure:
    t = point.topic
    return ScaleMeasure(point.id, t.partitions, t.keys, t.value_bytes, t.records, point.workload, point.members,
                        point.concurrency)


def _run_drain(launcher: Launcher, point: Point, topic: str, m: ScaleMeasure) -> None:
    """One consumer reads the whole topic (or for ``max_seconds``)."""
    proc = launcher.start(point, topic, new_group(f"scale-{point.id}"), f"scale-{point.id}")
    outcome = wait_outcome(proc, launcher.plan.join_timeout_s + launcher.plan.max_seconds + 60)
    fill_measure(m, [outcome])
    if point.rss_series and proc.sampler.times:
        start = proc.sampler.times[0]
        m.rss_series = _thin([[round(t - start, 2), round(kb / 1024, 1)]
                              for t, kb in zip(proc.sampler.times, proc.sampler.rss_kb, strict=True)])
        first, last = outcome.result.get("first_ts"), outcome.result.get("last_ts")
        if isinstance(first, int | float) and isinstance(last, int | float):
            m.window = [round(first - start, 2), round(last - start, 2)]


@dataclass(frozen=True, slots=True)
class Settled:
    """What a :data:`Settle` check found: how long the group took, and which instances own no partition."""

    seconds: float
    idle: frozenset[str] = frozenset()
    """Names (:func:`instance_name`) of instances that hold no partition: more instances than partitions."""


Settle = Callable[[str, Point, Sequence[ContenderProcess]], Settled]
"""Waits until a group's started instances can be counted (the group's name, the point, its instances); ScaleError
when an instance exits first or the group does not get there in time."""


def instance_name(proc: ContenderProcess) -> str:
    """The name :meth:`Launcher.start` gave an instance (its stderr file's stem), also its ``client.id`` in a group
    started by :func:`run_group`: how the admin API's description names it."""
    return proc.stderr_path.stem


def heartbeat(plan: ScalePlan) -> Callable[[str], list[str]]:
    """The consumer-group instances' ``--kafka`` option: a shorter heartbeat settles the group sooner."""
    return lambda name: ["--kafka", f"heartbeat.interval.ms={plan.heartbeat_interval_ms}"]


def consumer_group_settled(launcher: Launcher) -> Settle:
    """The consumer-group check: the admin API's view of the group (:func:`wait_group_settled`)."""
    plan = launcher.plan

    def settle(group: str, point: Point, procs: Sequence[ContenderProcess]) -> Settled:
        return wait_group_settled(launcher.bootstrap, group, point.members, point.topic.partitions, procs,
                                  plan.settle_timeout_s, plan.settle_quiet_s)

    return settle


def run_group(launcher: Launcher, point: Point, topic: str, m: ScaleMeasure,
              extra: Callable[[str], Sequence[str]], settle: Settle) -> None:
    """``point.members`` instances of one group (``extra(name)`` appended to each one's command line): started
    together, counted together (``--count-on-signal``) once ``settle`` returned. Also ``--suite share``'s.

    An instance that owned no partition when the group settled (``Settled.idle``) has its window ended (SIGUSR2)
    once the others finished: it counts what it handled, normally nothing (``m.idle_members``; then the CPU it used
    over the others' span is its CPU), or the records a rebalance during the window gave it (a warning). Every other
    instance must count records as before (an error otherwise)."""
    plan = launcher.plan
    group = new_group(f"{launcher.spec.id}-{point.id}")
    procs: list[ContenderProcess] = []
    outcomes: dict[int, Outcome] = {}
    try:
        for n in range(point.members):
            name = f"{launcher.spec.id}-{point.id}-{n + 1}"
            procs.append(launcher.start(point, topic, group, name,
                                        ["--count-on-signal", "--kafka", f"client.id={name}", *extra(name)]))
        settled = settle(group, point, procs)
        m.settle_s = round(settled.seconds, 2)
        for proc in procs:
            proc.kill(signal.SIGUSR1)
        idle = [i for i, proc in enumerate(procs) if instance_name(proc) in settled.idle]
        for i, proc in enumerate(procs):
            if i not in idle:
                outcomes[i] = wait_outcome(proc, plan.window_s + 60)
        for i in idle:
            procs[i].kill(signal.SIGUSR2)
            outcomes[i] = wait_outcome(procs[i], 60)
    finally:
        for i, proc in enumerate(procs):
            if i not in outcomes:
                proc.kill()
                proc.finish(0.0)
    ordered = [outcomes[i] for i in range(len(procs))]
    span = counted_span(ordered)
    for i in idle:
        result = outcomes[i].result
        if result.get("error"):
            continue
        if int(result.get("counted", 0)):
            log.warning("%s owned no partition when the group settled but counted records: the group rebalanced "
                        "during the window", instance_name(procs[i]))
            continue
        m.idle_members += 1
        if span is not None:
            outcomes[i].cpu_s = procs[i].sampler.cpu_between(*span)
    fill_measure(m, ordered)


def counted_span(outcomes: Sequence[Outcome]) -> tuple[float, float] | None:
    """(earliest first, latest last) counted record of a group's instances; None when none counted any."""
    counted = [o.result for o in outcomes if int(o.result.get("counted", 0))]
    if not counted:
        return None
    return min(float(r["first_ts"]) for r in counted), max(float(r["last_ts"]) for r in counted)


def wait_group_settled(bootstrap: str, group: str, members: int, partitions: int,
                       procs: Sequence[ContenderProcess], timeout_s: float, quiet_s: float) -> Settled:
    """Wait until ``group`` was Stable with ``members`` members holding all ``partitions`` for ``quiet_s`` (a
    cooperative rebalance passes through Stable with partitions unassigned in between): how long it took, and the
    client ids of the members holding none (more members than partitions). ScaleError when an instance exits
    first or after ``timeout_s``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    started = time.monotonic()
    since: float | None = None
    seen = "not described yet"
    idle: frozenset[str] = frozenset()
    while True:
        for proc in procs:
            if proc.proc.poll() is not None:
                raise ScaleError(f"an instance exited before the group settled: {proc.stderr_tail()}")
        try:
            description = admin.describe_consumer_groups([group])[group].result(timeout=10)
            owned = sum(len(member.assignment.topic_partitions) for member in description.members)
            seen = f"{description.state}, {len(description.members)} members, {owned} partitions assigned"
            settled = (description.state == ConsumerGroupState.STABLE and len(description.members) == members
                       and owned == partitions)
            now_idle = frozenset(member.client_id for member in description.members
                                 if not member.assignment.topic_partitions)
        except (KafkaException, TimeoutError) as exc:
            seen, settled, now_idle = str(exc), False, frozenset()
        now = time.monotonic()
        if not settled or now_idle != idle:
            since, idle = None, now_idle
        if settled and since is None:
            since = now
        elif settled and since is not None and now - since >= quiet_s:
            return Settled(since - started, idle)
        if now - started > timeout_s:
            raise ScaleError(f"group {group} did not settle within {timeout_s:.0f} s: {seen}")
        time.sleep(0.2)


def fill_measure(m: ScaleMeasure, outcomes: Sequence[Outcome]) -> None:
    """The figures of one consumer, or the aggregate of a group's instances: records over the span from the
    earliest first counted record to the latest last one (an idle instance, which counted none, adds no span), CPU
    summed, the largest peak RSS."""
    errors = [str(o.result["error"]) for o in outcomes if o.result.get("error")]
    if errors or not outcomes:
        m.error = short_line("; ".join(errors) or "no instance ran", 300)
        return
    m.handled = sum(int(o.result.get("handled", 0)) for o in outcomes)
    m.counted = sum(int(o.result.get("counted", 0)) for o in outcomes)
    if len(outcomes) == 1:
        m.seconds = float(outcomes[0].result.get("seconds", 0.0))
    else:
        span = counted_span(outcomes)
        m.seconds = span[1] - span[0] if span is not None else 0.0
        m.member_rates = [float(o.result.get("records_per_s", 0.0)) for o in outcomes]
    m.records_per_s = round(m.counted / m.seconds, 1) if m.counted and m.seconds > 0 else 0.0
    m.seconds = round(m.seconds, 3)
    cpu = [o.cpu_s for o in outcomes]
    if m.counted and all(c is not None for c in cpu):
        m.cpu_us_per_record = round(sum(c for c in cpu if c is not None) / m.counted * 1e6, 2)
    peaks = [o.peak_rss_mb for o in outcomes if o.peak_rss_mb is not None]
    m.peak_rss_mb = max(peaks) if peaks else None


def _thin(series: list[list[float]], most: int = 400) -> list[list[float]]:
    """At most ``most`` samples, evenly spaced, the last kept: the JSON stays small."""
    if len(series) <= most:
        return series
    step = len(series) / most
    return [series[int(i * step)] for i in range(most - 1)] + [series[-1]]


def _sweep(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (this run's; normally none is left); what failed."""
    try:
        names = [t for t in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
                 if t.startswith(prefix)]
    except KafkaException as exc:
        return [f"listing the topics failed: {exc}"]
    return delete_topics(bootstrap, names)


def _log(m: ScaleMeasure) -> None:
    if m.error:
        log.warning("scale %-22s %s", m.point, m.error)
        return
    log.info("scale %-22s %10.0f rec/s, %s µs CPU/record, peak RSS %s MB (%d records in %.2f s, load %s)", m.point,
             m.records_per_s, m.cpu_us_per_record, m.peak_rss_mb, m.counted, m.seconds, m.load_1m)


