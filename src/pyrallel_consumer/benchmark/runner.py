"""Benchmarks against the real local broker: every contender consumes the same pre-produced topic.

Throughput is measured from the first handled record to the last, so group-join time is left out for
every contender alike. Results are ratios against a sequential baseline measured in the same run.
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
from pyrallel_consumer.benchmark.workloads import WORKLOADS, Workload
from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.consumer import PyrallelConsumer
from pyrallel_consumer.localkafka.topics import create_topic, produce_keyed
from pyrallel_consumer.record import Ordering, Record

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Measurement:
    contender: str
    workload: str
    keys: int
    records: int
    seconds: float
    records_per_s: float
    ratio_to_baseline: float | None = None
    note: str = ""


@dataclass(slots=True)
class BenchResult:
    machine: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)

    def table(self) -> str:
        rows = ["| workload | keys | contender | records | rec/s | x baseline |", "|---|---:|---|---:|---:|---:|"]
        for m in self.measurements:
            ratio = f"{m.ratio_to_baseline:.1f}" if m.ratio_to_baseline is not None else "-"
            rows.append(f"| {m.workload} | {m.keys} | {m.contender} | {m.records} | {m.records_per_s:,.0f} | {ratio} |")
        return "\n".join(rows)


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
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "pyrallel_consumer": __version__,
        "git_commit": commit,
        "kafka": "4.1.1 (local, KRaft, 127.0.0.1)",
    }


def run_baseline(bootstrap: str, topic: str, workload: Workload, limit: int, max_seconds: float) -> Measurement:
    """A plain confluent-kafka loop calling the handler one record at a time, committing per batch."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap, "group.id": f"bench-base-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    handled, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + max_seconds + 60
    try:
        while handled < limit and time.monotonic() < deadline:
            batch = consumer.consume(num_messages=500, timeout=0.5)
            for msg in batch:
                if msg.error() is not None:
                    continue
                workload.run_sync(_record(msg))
                handled += 1
                last = time.perf_counter()
                if handled == 1:
                    first = last
                    deadline = time.monotonic() + max_seconds
                if handled >= limit or time.monotonic() >= deadline:
                    break
            if batch:
                consumer.commit(asynchronous=True)
    finally:
        consumer.close()
    return _measure("baseline (sequential)", workload, handled, first, last)


def _record(msg: Any) -> Record:
    return Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())


def _measure(contender: str, workload: Workload, handled: int, first: float, last: float, keys: int = 0) -> Measurement:
    seconds = max(last - first, 1e-9)
    rate = (handled - 1) / seconds if handled > 1 else 0.0
    return Measurement(contender, workload.name, keys, handled, round(seconds, 3), round(rate, 1))


async def run_pyrallel_async(
    bootstrap: str, topic: str, workload: Workload, records: int, ordering: Ordering, max_in_flight: int,
    timeout_s: float,
) -> Measurement:
    """PyrallelConsumer with the async engine, until ``records`` records were handled."""
    handled = 0
    first = last = 0.0
    finished = asyncio.Event()

    async def handler(record: Record) -> None:
        nonlocal handled, first, last
        await workload.run_async(record)
        handled += 1
        last = time.perf_counter()
        if handled == 1:
            first = last
        if handled >= records:
            finished.set()

    config = ConsumerConfig(
        bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}", topics=[topic], ordering=ordering,
        max_in_flight=max_in_flight, commit_interval_ms=1000,
    )
    consumer = PyrallelConsumer(config, handler)
    await consumer.start()
    try:
        await asyncio.wait_for(finished.wait(), timeout_s)
    finally:
        await consumer.stop(drain=False)
    return _measure(f"pyrallel async {ordering.value}", workload, handled, first, last)


def run_core_benchmark(bootstrap: str, records: int, out_dir: Path, baseline_seconds: float = 8.0) -> BenchResult:
    """The core benchmark: baseline vs async engine, no-op and 5 ms sleep with 100 and 1,000 keys."""
    result = BenchResult(_machine())
    plans: list[tuple[str, int]] = [("noop", 100), ("sleep5ms", 100), ("sleep5ms", 1000)]
    topics: dict[int, str] = {}
    for _, keys in plans:
        if keys not in topics:
            topics[keys] = f"bench-{keys}k-{uuid.uuid4().hex[:6]}"
            create_topic(bootstrap, topics[keys], 8)
            produce_keyed(bootstrap, topics[keys], records, keys=keys)
    for workload_name, keys in plans:
        workload = WORKLOADS[workload_name]
        topic = topics[keys]
        base = run_baseline(bootstrap, topic, workload, records, baseline_seconds)
        base.keys = keys
        result.measurements.append(base)
        measured = asyncio.run(run_pyrallel_async(bootstrap, topic, workload, records, Ordering.KEY, 1000, 600))
        measured.keys = keys
        if base.records_per_s:
            measured.ratio_to_baseline = round(measured.records_per_s / base.records_per_s, 1)
        result.measurements.append(measured)
        log.info("%s %d keys: baseline %.0f rec/s, async %.0f rec/s (%.1fx)", workload_name, keys,
                 base.records_per_s, measured.records_per_s, measured.ratio_to_baseline or 0)
    _write(result, out_dir, "core")
    return result


def _write(result: BenchResult, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    payload = {"machine": result.machine, "measurements": [asdict(m) for m in result.measurements]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    (out_dir / f"{name}-latest.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out_dir / f"{name}-latest.md").write_text(result.table() + "\n")
    return path

