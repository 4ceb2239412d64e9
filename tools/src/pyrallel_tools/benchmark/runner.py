"""``pyrallel bench``: every contender against the real local broker, side by side, in one run.

1. Topics of 8 partitions are pre-produced once per key count (100, 1,000, 10,000 distinct keys).
2. Throughput: each contender, as its own subprocess, consumes one of them with a new consumer group and the
   workload's handler until it handled the workload's record count or ran for ``max_seconds``; the rate counts
   from its first handled record to its last. Peak RSS and CPU come from /proc (see :mod:`measure`).
3. Latency: a fresh topic; the contender joins (warm-up records), then records are produced at a fixed rate
   carrying their produce time; every handled record is logged with its done time.
4. At-least-once: the same fixed-rate production; the contender is SIGKILLed (with its workers) half-way
   through, restarted in the same group, and every handling is counted: duplicates and missing records.
5. Targets as ratios of measurements of this run; JSON, a markdown table, PNG plots, and the results section of
   ``benchmarks/README.md``.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import confluent_kafka

from pyrallel_consumer import __version__
from pyrallel_tools.benchmark import harness
from pyrallel_tools.benchmark.measure import ContenderProcess, run_to_result
from pyrallel_tools.benchmark.peers import ContenderSpec, Environment, catalog, command, prepare
from pyrallel_tools.benchmark.production import RateProducer, prepared_topic, produce_at_rate
from pyrallel_tools.benchmark.results import (
    BenchReport,
    Latency,
    Restart,
    ResultError,
    Throughput,
    apply_result,
    compute_targets,
    latency_stats,
    markdown,
    parse_log,
    restart_stats,
)
from pyrallel_tools.localkafka.cluster import brokers_seen, local_kafka_version

log = logging.getLogger(__name__)

README_START: Final = "<!-- bench:results:start -->"
README_END: Final = "<!-- bench:results:end -->"

NOOP_CONTENDERS: Final = ("bare", "baseline", "async-key", "aio-gather",
                          "thread-pool", "pyrallel-1.0.0-async-key", "java-pc-key")
IO_CONTENDERS: Final = ("baseline", "async-key", "aio-gather", "thread-pool",
                        "pyrallel-1.0.0-async-key", "java-pc-key")
IO_ORDERINGS: Final = ("async-partition", "async-unordered", "pyrallel-1.0.0-async-partition",
                       "pyrallel-1.0.0-async-unordered", "java-pc-partition", "java-pc-unordered")
"""Run on the I/O-bound workload with the fewest keys only, where the ordering makes the difference."""
CPU_CONTENDERS: Final = ("baseline", "async-key", "process-key", "thread-pool", "pyrallel-1.0.0-process-key",
                         "arroyo", "java-pc-key")
IO_RATE_CONTENDERS: Final = ("baseline", "async-key", "aio-gather", "thread-pool", "pyrallel-1.0.0-async-key",
                             "java-pc-key")
CPU_RATE_CONTENDERS: Final = ("baseline", "async-key", "process-key", "pyrallel-1.0.0-process-key", "arroyo",
                              "java-pc-key")
"""Contenders of the rate-limited runs (latency, and the SIGKILL/restart check), per workload."""
UVLOOP_CONTENDER: Final = "async-key-uvloop"
"""The async engine on uvloop (the optional extra): one no-op row beside ``async-key`` at ``cpu_keys`` keys."""


@dataclass(frozen=True, slots=True)
class RateRun:
    """Records produced at ``rate`` per second for ``seconds`` while the contenders consume, one at a time."""

    workload: str
    rate: int
    keys: int
    contenders: tuple[str, ...]
    seconds: float = 6.0


@dataclass(frozen=True, slots=True)
class Plan:
    """What one ``pyrallel bench`` run measures; with the defaults the whole run takes about 8 minutes on 2 cores."""

    workloads: tuple[str, ...] = ("noop", "sleep5ms", "cpu2ms")
    keys: tuple[int, ...] = (100, 1000, 10_000)
    partitions: int = 8
    topic_records: int = 200_000
    records: dict[str, int] = field(default_factory=lambda: {"noop": 200_000, "sleep5ms": 100_000, "cpu2ms": 6_000})
    """Records a contender handles at most per run, per workload."""
    max_seconds: float = 6.0
    """A run also ends this long after its first handled record (slow contenders: a rate over that window)."""
    concurrency: int = 1000
    """Records in flight for the I/O-bound and no-op workloads (tasks, threads, batch size, maxConcurrency)."""
    workers: int = 2
    """Processes (or threads for Java) on the CPU-bound workload, for every contender."""
    cpu_keys: int = 1000
    with_peers: bool = True
    latency: bool = True
    latency_runs: tuple[RateRun, ...] = (RateRun("sleep5ms", 1000, 100, IO_RATE_CONTENDERS),
                                         RateRun("cpu2ms", 300, 1000, CPU_RATE_CONTENDERS))
    restart: bool = True
    restart_runs: tuple[RateRun, ...] = (RateRun("sleep5ms", 1000, 1000, IO_RATE_CONTENDERS),
                                         RateRun("cpu2ms", 300, 1000, CPU_RATE_CONTENDERS))
    """The contender is SIGKILLed half-way through the production and restarted in the same group."""
    restart_drain_s: float = 20.0
    """After the production: how long the restarted contender gets to handle every record."""
    join_timeout_s: float = 60.0
    io_contenders: tuple[str, ...] = IO_CONTENDERS
    """Contenders of the I/O-bound workload (the eos suite: at-least-once against exactly-once)."""
    io_orderings: tuple[str, ...] = IO_ORDERINGS

    def cells(self) -> list[tuple[str, str, int]]:
        """(contender id, workload, keys) of every throughput run, in order."""
        cells: list[tuple[str, str, int]] = []
        for workload in self.workloads:
            if workload == "noop":
                for keys in self.keys:
                    cells += [(c, workload, keys) for c in NOOP_CONTENDERS]
                cells.append(("process-key", workload, self.cpu_keys))
                cells.append((UVLOOP_CONTENDER, workload, self.cpu_keys))
            elif workload == "sleep5ms":
                for keys in self.keys:
                    cells += [(c, workload, keys) for c in self.io_contenders]
                    if keys == min(self.keys):
                        cells += [(c, workload, keys) for c in self.io_orderings]
            elif workload == "cpu2ms":
                cells += [(c, workload, self.cpu_keys) for c in CPU_CONTENDERS]
            else:
                raise ValueError(f"unknown workload {workload!r}")
        return cells

    def rate_runs(self, runs: Sequence[RateRun]) -> list[RateRun]:
        """The rate-limited runs of the workloads of this plan."""
        return [r for r in runs if r.workload in self.workloads]

    def contender_ids(self) -> list[str]:
        """Every contender this plan runs, in order of first use."""
        ids = [c for c, _, _ in self.cells()]
        for enabled, runs in ((self.latency, self.latency_runs), (self.restart, self.restart_runs)):
            if enabled:
                ids += [c for r in self.rate_runs(runs) for c in r.contenders]
        return list(dict.fromkeys(ids))

    def topic_keys(self) -> list[int]:
        return sorted({keys for _, _, keys in self.cells()})

    def summary(self) -> dict[str, Any]:
        return {
            "partitions": self.partitions, "keys": list(self.keys), "topic_records": self.topic_records,
            "records": {w: self.records[w] for w in self.workloads}, "max_seconds": self.max_seconds,
            "concurrency": self.concurrency, "workers": self.workers, "cpu_keys": self.cpu_keys,
            "latency": [_rate_run(r) for r in self.rate_runs(self.latency_runs)] if self.latency else None,
            "restart": [_rate_run(r) for r in self.rate_runs(self.restart_runs)] if self.restart else None,
            "restart_session_timeout_ms": RESTART_SESSION_TIMEOUT_MS,
        }


def _rate_run(run: RateRun) -> dict[str, Any]:
    return {"workload": run.workload, "rate": run.rate, "keys": run.keys, "seconds": run.seconds}


RESTART_SESSION_TIMEOUT_MS: Final = 6000
"""Session timeout of the SIGKILL/restart runs: the restarted member waits for the killed one's session to end."""

SUITES: Final[dict[str, Plan]] = {
    "all": Plan(),
    "core": Plan(workloads=("noop", "sleep5ms"), with_peers=False),
    "cpu": Plan(workloads=("cpu2ms", "noop"), keys=(1000,), with_peers=False),
    "eos": Plan(workloads=("sleep5ms",), keys=(1000,), with_peers=False, latency=False, restart=False,
                io_contenders=("async-key", "async-key-eos", "async-key", "async-key-eos"), io_orderings=(),
                max_seconds=10.0, records={"sleep5ms": 400_000}, topic_records=400_000),
}
"""``eos`` runs at-least-once and exactly-once twice each, alternating, on the same topic in the same run."""


@dataclass(slots=True)
class Bench:
    """One benchmark run's context: where things are, the environments, the report being filled."""

    bootstrap: str
    plan: Plan
    out_dir: Path
    peers_dir: Path
    run_dir: Path
    envs: dict[str, Environment]
    report: BenchReport
    specs: dict[str, ContenderSpec] = field(default_factory=dict)
    topics: dict[int, str] = field(default_factory=dict)

    def available(self, contender_id: str) -> bool:
        spec = self.specs[contender_id]
        return self.envs[spec.environment].ready and (self.plan.with_peers or spec.family != "peer")

    def env(self, contender_id: str) -> dict[str, str]:
        """The contender's environment variables: its interpreter's CPU calibration, where the harness is."""
        return contender_env(self.envs[self.specs[contender_id].environment].loops_per_ms or harness.loops_per_ms())

    def argv(self, contender_id: str, *, topic: str, group: str, workload: str, limit: int, max_seconds: float,
             log_path: Path | None = None, session_timeout_ms: int | None = None) -> list[str]:
        spec = self.specs[contender_id]
        concurrency = self.plan.workers if spec.cpu_bound or workload == "cpu2ms" else self.plan.concurrency
        argv = contender_argv(spec, self.envs[spec.environment], self.peers_dir, self.bootstrap, topic=topic,
                              group=group, workload=workload, limit=limit, max_seconds=max_seconds,
                              concurrency=concurrency, join_timeout_s=self.plan.join_timeout_s)
        if log_path is not None:
            argv += ["--log", str(log_path)]
        if session_timeout_ms is not None:
            argv += ["--session-timeout-ms", str(session_timeout_ms)]
        return argv


def contender_env(loops_per_ms: float) -> dict[str, str]:
    """A contender's environment variables: the CPU calibration of its interpreter, where the harness is."""
    return {**os.environ, harness.LOOPS_ENV: repr(loops_per_ms),
            harness.HARNESS_DIR_ENV: str(Path(harness.__file__).parent), "PYTHONUNBUFFERED": "1"}


def contender_argv(spec: ContenderSpec, env: Environment, peers_dir: Path, bootstrap: str, *, topic: str, group: str,
                   workload: str, limit: int, max_seconds: float, concurrency: int,
                   join_timeout_s: float) -> list[str]:
    """The command line of one contender run (see :func:`harness.parse_args`); callers append the options of
    their kind of run (``--log``, ``--session-timeout-ms``, ``--kafka``, ``--count-on-signal``)."""
    return [*command(spec, env, peers_dir),
            "--name", spec.name, "--bootstrap", bootstrap, "--topic", topic, "--group", group,
            "--workload", workload, "--limit", str(limit), "--max-seconds", str(max_seconds),
            "--ordering", spec.ordering or "key", "--concurrency", str(concurrency),
            "--join-timeout-s", str(join_timeout_s), *spec.extra]


def run_bench(bootstrap: str, plan: Plan, out_dir: Path, peers_dir: Path, venv_root: Path, run_dir: Path,
              name: str = "bench", readme: Path | None = None) -> BenchReport:
    """The whole benchmark; writes ``<name>-<time>.json``, ``<name>-latest.{json,md}``, plots, the README part."""
    started = time.monotonic()
    peers_dir, run_dir, venv_root = peers_dir.resolve(), run_dir.resolve(), venv_root.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    envs = prepare(peers_dir, venv_root, plan.with_peers)
    specs = {spec.id: spec for spec in catalog()}
    report = BenchReport(machine_info(envs, bootstrap), plan.summary())
    bench = Bench(bootstrap, plan, out_dir, peers_dir, run_dir, envs, report, specs)
    report.contenders = [specs[c].info(envs[specs[c].environment]) for c in plan.contender_ids()
                         if plan.with_peers or specs[c].family != "peer"]
    for keys in plan.topic_keys():
        bench.topics[keys] = prepared_topic(bootstrap, f"{keys}k", plan.topic_records, keys, plan.partitions)
    for contender_id, workload, keys in plan.cells():
        if bench.available(contender_id):
            report.throughput.append(_throughput(bench, contender_id, workload, keys))
    if plan.latency:
        report.latency = [_latency(bench, run, c) for run in plan.rate_runs(plan.latency_runs)
                          for c in run.contenders if bench.available(c)]
    if plan.restart:
        report.restart = [_restart(bench, run, c) for run in plan.rate_runs(plan.restart_runs)
                          for c in run.contenders if bench.available(c)]
    report.targets = compute_targets(report)
    report.duration_s = round(time.monotonic() - started, 1)
    write_outputs(report, out_dir, name, readme)
    return report


def machine_info(envs: dict[str, Environment], bootstrap: str | None = None) -> dict[str, Any]:
    """The run's machine, versions and commit; ``bootstrap`` (when given) names the Kafka it ran against."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "confluent_kafka": str(confluent_kafka.__version__),
        "librdkafka": confluent_kafka.libversion()[0],
        "pyrallel_consumer": __version__,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "kafka": (f"{local_kafka_version(bootstrap)} (KRaft, {brokers_seen(bootstrap, timeout_s=10.0)} broker(s))"
                  if bootstrap else "unknown"),
        "environments": {name: ({"version": env.version, **env.details,
                                 "cpu2ms_loops_per_record": round(2 * env.loops_per_ms)} if env.ready
                                else {"unavailable": env.reason}) for name, env in envs.items()},
    }


def new_group(contender_id: str) -> str:
    return f"bench-{contender_id}-{uuid.uuid4().hex[:8]}"


def _throughput(bench: Bench, contender_id: str, workload: str, keys: int) -> Throughput:
    plan = bench.plan
    m = Throughput(contender_id, workload, keys, plan.records[workload])
    argv = bench.argv(contender_id, topic=bench.topics[keys], group=new_group(contender_id), workload=workload,
                      limit=m.limit, max_seconds=plan.max_seconds)
    outcome = run_to_result(argv, bench.env(contender_id), bench.run_dir / f"{contender_id}-{workload}-{keys}.stderr",
                            bench.run_dir, timeout_s=plan.join_timeout_s + plan.max_seconds + 60)
    apply_result(m, outcome.result)
    m.peak_rss_mb = outcome.peak_rss_mb
    if outcome.cpu_s is not None and m.counted:
        m.cpu_s_per_1k = round(outcome.cpu_s / m.counted * 1000, 4)
    if m.error:
        log.warning("%s on %s, %d keys: %s", contender_id, workload, keys, m.error)
    else:
        log.info("%-34s %-8s %6d keys: %10.0f rec/s  (%d records in %.2f s, peak RSS %s MB, CPU %s s/1k)",
                 contender_id, workload, keys, m.records_per_s, m.counted, m.seconds, m.peak_rss_mb, m.cpu_s_per_1k)
    return m


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll ``condition`` until true or ``timeout_s``; its last value (also ``--suite share``'s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def log_rows(path: Path) -> list[tuple[int, int, int]]:
    """A handling log's rows (``--log``); none when the contender never wrote it."""
    try:
        return parse_log(path.read_bytes())
    except FileNotFoundError:
        return []


def log_lines(path: Path) -> int:
    """Lines of a handling log so far (it may be growing)."""
    try:
        return path.stat().st_size // harness.LOG_LINE_BYTES
    except FileNotFoundError:
        return 0


WARMUP_RECORDS: Final = 200
"""Produced before a rate-limited run; once the contender handled them it has joined the group."""


def _too_slow(bench: Bench, run: RateRun, contender_id: str) -> str:
    """Why a contender is left out of a rate-limited run (its measured throughput is below 1.25x the rate)."""
    rates = [m.records_per_s for m in bench.report.throughput
             if m.contender == contender_id and m.workload == run.workload and not m.error and m.counted]
    if rates and max(rates) < 1.25 * run.rate:
        return (f"not run: its measured {max(rates):,.0f} rec/s on {run.workload} is below 1.25x the "
                f"{run.rate:,} rec/s rate, so its latency would only grow")
    return ""


def _start_when_joined(bench: Bench, run: RateRun, contender_id: str, topic: str, group: str, log_path: Path,
                       limit: int, label: str, session_timeout_ms: int | None = None) -> tuple[ContenderProcess, str]:
    """Start a contender on a topic holding the warm-up records; return it and an error if it never handled them."""
    log_path.unlink(missing_ok=True)
    argv = bench.argv(contender_id, topic=topic, group=group, workload=run.workload, limit=limit,
                      max_seconds=600, log_path=log_path, session_timeout_ms=session_timeout_ms)
    proc = ContenderProcess(argv, bench.env(contender_id), log_path.with_suffix(".stderr"), bench.run_dir)
    if not wait_for(lambda: log_lines(log_path) >= WARMUP_RECORDS or proc.proc.poll() is not None,
                     bench.plan.join_timeout_s) or proc.proc.poll() is not None:
        return proc, f"{label}: the warm-up records were not handled: {proc.stderr_tail()}"
    return proc, ""


def _latency(bench: Bench, run: RateRun, contender_id: str) -> Latency:
    """Warm-up records until the contender handles them, then production at a fixed rate with produce times."""
    m = Latency(contender_id, run.rate, int(run.rate * run.seconds), workload=run.workload, keys=run.keys)
    m.error = _too_slow(bench, run, contender_id)
    if m.error:
        return m
    topic = prepared_topic(bench.bootstrap, "lat", WARMUP_RECORDS, run.keys, bench.plan.partitions)
    log_path = bench.run_dir / f"latency-{run.workload}-{contender_id}.log"
    proc, m.error = _start_when_joined(bench, run, contender_id, topic, new_group(contender_id), log_path,
                                       WARMUP_RECORDS + m.records, "latency")
    try:
        if not m.error:
            produce_at_rate(bench.bootstrap, topic, run.rate, run.seconds, run.keys, start_seq=WARMUP_RECORDS)
            wait_for(lambda: log_lines(log_path) >= WARMUP_RECORDS + m.records or proc.proc.poll() is not None,
                      30)
    finally:
        proc.kill()
        proc.finish(5)
    latency_stats(m, log_rows(log_path))
    log.info("latency %-8s %-28s p50 %s ms, p99 %s ms (%d records) %s", run.workload, contender_id, m.p50_ms,
             m.p99_ms, m.samples, m.error)
    return m


def _restart(bench: Bench, run: RateRun, contender_id: str) -> Restart:
    """Warm-up records until the contender handles them, then production at a fixed rate; SIGKILL half-way
    through the production (the contender and its workers), restart in the same group, count every handling."""
    m = Restart(contender_id, run.workload, run.keys, WARMUP_RECORDS + int(run.rate * run.seconds), rate=run.rate)
    m.error = _too_slow(bench, run, contender_id).replace("latency would only grow", "backlog would only grow")
    if m.error:
        return m
    topic = prepared_topic(bench.bootstrap, "restart", WARMUP_RECORDS, run.keys, bench.plan.partitions)
    group = new_group(contender_id)
    logs = [bench.run_dir / f"restart-{run.workload}-{contender_id}-{i}.log" for i in (1, 2)]
    producer = RateProducer(bench.bootstrap, topic, run.rate, run.seconds, run.keys, WARMUP_RECORDS)
    first, m.error = _start_when_joined(bench, run, contender_id, topic, group, logs[0], m.records, "first run",
                                        RESTART_SESSION_TIMEOUT_MS)
    try:
        if not m.error:
            producer.start()
            time.sleep(run.seconds / 2)
    finally:
        first.kill()
        first.finish(5)
    if m.error:
        return m
    logs[1].unlink(missing_ok=True)
    argv = bench.argv(contender_id, topic=topic, group=group, workload=run.workload, limit=m.records,
                      max_seconds=600, log_path=logs[1], session_timeout_ms=RESTART_SESSION_TIMEOUT_MS)
    second = ContenderProcess(argv, bench.env(contender_id), logs[1].with_suffix(".stderr"), bench.run_dir)
    finished = False
    try:
        producer.join()
        if producer.error:
            m.error = producer.error
        else:
            finished = wait_for(lambda: distinct_handled(logs) >= m.records, bench.plan.restart_drain_s, 0.2)
            time.sleep(0.5)  # anything still in flight is counted too
    finally:
        second.kill()
        second.finish(5)
    restart_stats(m, log_rows(logs[0]), log_rows(logs[1]), finished)
    log.info("restart %-8s %-28s %d handled before the kill, %d after the restart, %d duplicates, missing %s",
             run.workload, contender_id, m.handled_before_kill, m.handled_after_restart, m.duplicates, m.missing)
    return m


def distinct_handled(logs: Sequence[Path]) -> int:
    """Distinct records handled over the logs of one group (a kill and its restart, or several instances)."""
    return len({seq for path in logs for seq, _, _ in log_rows(path)})


# --- outputs -------------------------------------------------------------------------------------------------------


def write_outputs(report: BenchReport, out_dir: Path, name: str, readme: Path | None) -> Path:
    """JSON (timestamped and latest), the markdown tables, the plots, and the README's results section."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(report.to_json())
    (out_dir / f"{name}-latest.json").write_text(report.to_json())
    tables = markdown(report)
    (out_dir / f"{name}-latest.md").write_text(tables)
    figures: list[Path] = []
    try:
        from pyrallel_tools.benchmark.plots import write_plots

        figures = write_plots(report, out_dir, name)
    except ImportError as exc:
        log.warning("No plots: %s (pip install 'pyrallel-consumer[report]')", exc)
    if readme is not None:
        update_readme(readme, tables, figures)
    return path


def update_readme(readme: Path, tables: str, figures: Sequence[Path]) -> None:
    """Replace the text between the results markers of ``readme`` with the tables and the figures."""
    try:
        text = readme.read_text()
    except FileNotFoundError:
        log.warning("%s not found: its results section was not updated", readme)
        return
    if README_START not in text or README_END not in text:
        log.warning("%s has no %s / %s markers: its results section was not updated", readme, README_START,
                    README_END)
        return
    images = "\n\n".join(f"![{p.stem}]({os.path.relpath(p, readme.parent)})" for p in figures)
    body = f"{README_START}\n\n{tables}\n{images}\n\n{README_END}"
    head, rest = text.split(README_START, 1)
    readme.write_text(head + body + rest.split(README_END, 1)[1])


def rebuild_outputs(results: Path, out_dir: Path, name: str, readme: Path | None) -> BenchReport:
    """Tables, plots and README section again from a results file (no broker)."""
    from pyrallel_tools.benchmark.results import report_from_json

    try:
        report = report_from_json(results.read_text())
    except OSError as exc:
        raise ResultError(f"cannot read {results}: {exc}") from exc
    report.targets = compute_targets(report)
    write_outputs(report, out_dir, name, readme)
    return report


def plan_for(suite: str, **overrides: Any) -> Plan:
    """The suite's plan with the given fields replaced (None values are ignored)."""
    try:
        plan = SUITES[suite]
    except KeyError:
        raise ValueError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}") from None
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "records" in changes:
        changes["records"] = {**plan.records, **changes["records"]}
    return replace(plan, **changes)

