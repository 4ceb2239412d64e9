"""Benchmarks against the real local broker: every contender consumes the same pre-produced topic.

Throughput is measured from the first completed record to the last, so group join and worker start-up are
left out for every contender alike. Results are ratios against a sequential baseline measured in the same run
(and, for the CPU-bound suite, of the process engine against the async engine).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka import Consumer

from pyrallel_consumer import __version__
from pyrallel_consumer.benchmark.workloads import SYNC_HANDLERS, WORKLOADS, Workload, cpu_loops
from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.consumer import PyrallelConsumer
from pyrallel_consumer.localkafka.topics import create_topic, produce_keyed
from pyrallel_consumer.record import Ordering, Record

log = logging.getLogger(__name__)

_POLL_S = 0.005
"""How often the completion counter of a PyrallelConsumer contender is read."""


@dataclass(slots=True)
class Measurement:
    contender: str
    workload: str
    keys: int
    records: int
    seconds: float
    records_per_s: float
    us_per_record: float = 0.0
    """Wall-clock microseconds per record at that rate (1e6 / records_per_s)."""
    ratio_to_baseline: float | None = None
    ratio_to_async: float | None = None
    note: str = ""


@dataclass(slots=True)
class BenchResult:
    machine: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            "| workload | keys | contender | records | rec/s | µs/record | x baseline | x async |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for m in self.measurements:
            rows.append(
                f"| {m.workload} | {m.keys} | {m.contender} | {m.records} | {m.records_per_s:,.0f} "
                f"| {m.us_per_record:,.1f} | {_ratio(m.ratio_to_baseline)} | {_ratio(m.ratio_to_async)} |"
            )
        if self.notes:
            rows += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(rows)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio_of(measured: Measurement, reference: Measurement) -> float | None:
    if not reference.records_per_s:
        return None
    return round(measured.records_per_s / reference.records_per_s, 2)


def _machine() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "confluent_kafka": str(confluent_kafka.__version__),
        "librdkafka": confluent_kafka.libversion()[0],
        "pyrallel_consumer": __version__,
        "git_commit": commit,
        "kafka": "4.1.1 (local, KRaft, 127.0.0.1)",
    }


def run_baseline(
    bootstrap: str, topic: str, workload: Workload, limit: int, max_seconds: float, keys: int = 0
) -> Measurement:
    """A plain confluent-kafka loop calling the handler one record at a time, committing per batch.

    It counts in its own loop (see :class:`_Clock`), for at most ``max_seconds`` after the first record.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap, "group.id": f"bench-base-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    clock = _Clock(limit)
    deadline = time.monotonic() + max_seconds + 60
    try:
        while not clock.finished.is_set() and time.monotonic() < deadline:
            batch = consumer.consume(num_messages=500, timeout=0.5)
            for msg in batch:
                if msg.error() is not None:
                    continue
                workload.run_sync(_record(msg))
                clock.observe(clock.last_count + 1)
                if clock.last_count == 1:
                    deadline = time.monotonic() + max_seconds
                if clock.finished.is_set() or time.monotonic() >= deadline:
                    break
            if batch:
                consumer.commit(asynchronous=True)
    finally:
        consumer.close()
    return _measure("baseline (sequential)", workload, keys, clock)


def _record(msg: Any) -> Record:
    return Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())


class _Clock:
    """Counts of completed records and when they were seen; the rate counts what completed after the first
    observation, up to the one that reached ``records`` (later observations are ignored)."""

    def __init__(self, records: int) -> None:
        self.records = records
        self.first_count = self.last_count = 0
        self.first = self.last = 0.0
        self.finished = asyncio.Event()

    def observe(self, completed: int) -> None:
        if self.finished.is_set() or completed <= self.last_count:
            return
        now = time.perf_counter()
        if not self.first_count:
            self.first_count, self.first = completed, now
        self.last_count, self.last = completed, now
        if completed >= self.records:
            self.finished.set()


def _measure(contender: str, workload: Workload, keys: int, clock: _Clock) -> Measurement:
    counted, seconds = clock.last_count - clock.first_count, max(clock.last - clock.first, 1e-9)
    rate = counted / seconds if counted > 0 else 0.0
    return Measurement(contender, workload.name, keys, clock.last_count, round(seconds, 3), round(rate, 1),
                       round(1e6 / rate, 1) if rate else 0.0)


async def run_pyrallel(
    bootstrap: str, topic: str, workload: Workload, records: int, *, engine: str = "async",
    ordering: Ordering = Ordering.KEY, max_in_flight: int = 1000, process_workers: int = 0, keys: int = 0,
    timeout_s: float = 600.0,
) -> Measurement:
    """PyrallelConsumer with the given engine, until ``records`` records were handled.

    How completions are counted:
    * async engine: in the handler itself, after the workload, like the baseline (exact; a poller would not do,
      because CPU-bound handlers keep the event loop busy and a poll could run only once every few seconds);
    * process engine: the handler runs in worker processes where nothing can be counted for the parent, so the
      consumer's own completion counter, ``metrics().records_succeeded``, is polled every 5 ms on the parent's
      event loop (which stays idle enough to poll on time). Count and time are read together at each poll, and
      the rate counts only the completions between the first poll that saw one and the poll that saw the last,
      so the 5 ms granularity shortens the window slightly but does not bias the rate.
    """
    clock = _Clock(records)
    handled = 0

    async def run_and_count(record: Record) -> None:
        nonlocal handled
        await workload.run_async(record)
        handled += 1
        clock.observe(handled)

    handler: Any = run_and_count if engine == "async" else SYNC_HANDLERS[workload.name]
    config = ConsumerConfig(
        bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}", topics=[topic], ordering=ordering,
        max_in_flight=max_in_flight, commit_interval_ms=1000, engine=engine, process_workers=process_workers,
    )
    consumer = PyrallelConsumer(config, handler)
    await consumer.start()
    try:
        await asyncio.wait_for(_wait_finished(consumer, clock, poll=engine != "async"), timeout_s)
    finally:
        await consumer.stop(drain=False)
    name = f"pyrallel {engine} {ordering.value}"
    if engine == "process":
        name += f" ({process_workers or os.cpu_count()} workers)"
    return _measure(name, workload, keys, clock)


async def _wait_finished(consumer: PyrallelConsumer, clock: _Clock, poll: bool) -> None:
    """Until ``clock`` saw every record; with ``poll``, feed it the consumer's completion counter every 5 ms."""
    while poll and not clock.finished.is_set():
        clock.observe(consumer.metrics().records_succeeded)
        await asyncio.sleep(_POLL_S)
    await clock.finished.wait()


def _prepared_topic(bootstrap: str, prefix: str, records: int, keys: int) -> str:
    topic = f"bench-{prefix}-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, 8)
    produce_keyed(bootstrap, topic, records, keys=keys)
    return topic


def run_core_benchmark(bootstrap: str, records: int, out_dir: Path, baseline_seconds: float = 8.0) -> BenchResult:
    """The core benchmark: baseline vs async engine, no-op and 5 ms sleep with 100 and 1,000 keys."""
    result = BenchResult(_machine())
    plans: list[tuple[str, int]] = [("noop", 100), ("sleep5ms", 100), ("sleep5ms", 1000)]
    topics = {keys: _prepared_topic(bootstrap, f"{keys}k", records, keys) for keys in sorted({k for _, k in plans})}
    for workload_name, keys in plans:
        workload = WORKLOADS[workload_name]
        topic = topics[keys]
        base = run_baseline(bootstrap, topic, workload, records, baseline_seconds, keys)
        result.measurements.append(base)
        measured = asyncio.run(run_pyrallel(bootstrap, topic, workload, records, keys=keys))
        measured.ratio_to_baseline = _ratio_of(measured, base)
        result.measurements.append(measured)
        log.info("%s %d keys: baseline %.0f rec/s, async %.0f rec/s (%.1fx)", workload_name, keys,
                 base.records_per_s, measured.records_per_s, measured.ratio_to_baseline or 0)
    _write(result, out_dir, "core")
    return result


def run_cpu_benchmark(
    bootstrap: str, records: int, out_dir: Path, baseline_seconds: float = 8.0, workers: int = 2, keys: int = 1000
) -> BenchResult:
    """CPU-bound handlers beyond the GIL, all measured in this run.

    cpu2ms (about 2 ms of pure Python per record, the same loop count in every process) over one pre-produced
    topic of 8 partitions: the sequential baseline, the async engine (every handler on the one event loop) and
    the process engine with ``workers`` worker processes. Then a no-op handler on both engines over a topic five
    times larger: the difference of their wall-clock microseconds per record is what the process engine's IPC
    (msgpack micro-batches over pipes, completions batched back) costs per record against an asyncio task.
    """
    result = BenchResult(_machine())
    cpu, noop = WORKLOADS["cpu2ms"], WORKLOADS["noop"]
    result.machine["cpu2ms_loops_per_record"] = cpu_loops(cpu.cpu_ms)
    cpu_topic = _prepared_topic(bootstrap, "cpu", records, keys)
    noop_records = 5 * records
    noop_topic = _prepared_topic(bootstrap, "noop", noop_records, keys)

    base = run_baseline(bootstrap, cpu_topic, cpu, records, baseline_seconds, keys)
    on_async = asyncio.run(run_pyrallel(bootstrap, cpu_topic, cpu, records, keys=keys))
    on_process = asyncio.run(run_pyrallel(bootstrap, cpu_topic, cpu, records, engine="process",
                                          process_workers=workers, keys=keys))
    on_async.ratio_to_baseline = _ratio_of(on_async, base)
    on_process.ratio_to_baseline = _ratio_of(on_process, base)
    on_process.ratio_to_async = _ratio_of(on_process, on_async)
    noop_async = asyncio.run(run_pyrallel(bootstrap, noop_topic, noop, noop_records, keys=keys))
    noop_process = asyncio.run(run_pyrallel(bootstrap, noop_topic, noop, noop_records, engine="process",
                                            process_workers=workers, keys=keys))
    noop_process.ratio_to_async = _ratio_of(noop_process, noop_async)
    result.measurements += [base, on_async, on_process, noop_async, noop_process]
    result.notes += [
        f"cpu2ms: process engine ({workers} workers) {on_process.ratio_to_async or 0:.2f}x the async engine, "
        f"{on_process.ratio_to_baseline or 0:.2f}x the baseline; async {on_async.ratio_to_baseline or 0:.2f}x "
        f"the baseline ({os.cpu_count()} CPUs)",
        f"no-op handler: {noop_process.us_per_record:.1f} µs/record on the process engine, "
        f"{noop_async.us_per_record:.1f} on the async engine (wall-clock): the process engine's IPC costs "
        f"{noop_process.us_per_record - noop_async.us_per_record:+.1f} µs/record against an asyncio task per record",
    ]
    for note in result.notes:
        log.info("%s", note)
    _write(result, out_dir, "cpu")
    return result


def _write(result: BenchResult, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    payload = {"machine": result.machine, "measurements": [asdict(m) for m in result.measurements],
               "notes": result.notes}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    (out_dir / f"{name}-latest.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out_dir / f"{name}-latest.md").write_text(result.table() + "\n")
    return path

