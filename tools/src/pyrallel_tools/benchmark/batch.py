"""``pyrallel bench --suite batch``: a batch handler against the per-record handler, for a bulk write.

The handler models a database write: every call costs ``call_ms`` plus ``record_ms`` per record it carries, and
holds one of ``connections`` connections meanwhile (a pool; 0 = no limit, a service that scales out). The
per-record handler pays the call cost for every record; the batch handler once per batch of up to
``batch_size`` records. Both run in this process on the async engine, one after the other, each in a group of its
own on the same pre-produced topic; then on the process engine, where each of ``process_workers`` workers is one
connection (``time.sleep`` in :func:`process_handle` and :func:`process_handle_batch`):

* throughput: records per second from the first handled record to the last, for at most ``max_seconds``;
* latency: records produced at ``rate`` per second with their produce time, end-to-end latency percentiles
  (handler call finished - produced) for the per-record handler and for the batch handler at each linger; the
  linger is what a batch costs in latency when traffic is too low to fill batches.

The CLI calls :func:`run_batch_bench` from its main thread; each case runs its own event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyrallel_consumer import BatchResult, ConsumerConfig, ConsumerObserver, PyrallelConsumer, Record
from pyrallel_tools.benchmark import harness
from pyrallel_tools.benchmark.production import RateProducer, prepared_topic
from pyrallel_tools.benchmark.results import percentile

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What one ``--suite batch`` run measures (about 2 minutes on 2 cores with the defaults)."""

    records: int = 30_000
    partitions: int = 8
    keys: int = 1000
    batch_size: int = 100
    call_ms: float = 5.0
    record_ms: float = 0.05
    connections: tuple[int, ...] = (10, 0)
    max_in_flight: int = 1000
    max_seconds: float = 10.0
    rate: int = 1000
    rate_seconds: float = 10.0
    lingers_ms: tuple[int, ...] = (5, 20)
    latency_connections: int = 10
    process_workers: int = 2
    """Worker processes of the process-engine case (0: skip it); each is one connection."""
    join_timeout_s: float = 60.0


@dataclass(slots=True)
class Throughput:
    handler: str
    connections: int
    handled: int = 0
    rate: float = 0.0
    mean_batch: float | None = None
    error: str = ""
    engine: str = "async"


@dataclass(slots=True)
class Latency:
    handler: str
    linger_ms: int | None
    samples: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_batch: float | None = None
    error: str = ""


@dataclass(slots=True)
class BatchReport:
    plan: dict[str, Any]
    throughput: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    """connections -> batch rate / per-record rate."""
    duration_s: float = 0.0


class _Database:
    """The modelled bulk write: ``call_ms`` + ``record_ms`` per record, on one of ``connections`` connections."""

    def __init__(self, plan: BatchPlan, connections: int) -> None:
        self._call_s = plan.call_ms / 1000
        self._record_s = plan.record_ms / 1000
        self._pool = asyncio.Semaphore(connections) if connections else None

    async def write(self, records: int) -> None:
        if self._pool is None:
            await asyncio.sleep(self._call_s + self._record_s * records)
            return
        async with self._pool:
            await asyncio.sleep(self._call_s + self._record_s * records)


class _Counter:
    """Handled records: count, first and last time, produce-to-done latencies (ms), batch sizes."""

    def __init__(self) -> None:
        self.handled = 0
        self.first = self.last = 0.0
        self.latencies: list[tuple[int, float]] = []
        """(produce time in µs, produce-to-done latency in ms) of the records that carry a produce time."""
        self.calls = 0

    def done(self, records: list[Record]) -> None:
        now = time.perf_counter()
        if not self.handled:
            self.first = now
        self.handled += len(records)
        self.last = now
        self.calls += 1
        done_us = time.time_ns() // 1000
        for record in records:
            _, produced = harness.parse_value(record.value)
            if produced:
                self.latencies.append((produced, (done_us - produced) / 1000))


def _config(bootstrap: str, topic: str, plan: BatchPlan, batch: bool, linger_ms: int | None) -> ConsumerConfig:
    values: dict[str, Any] = {"bootstrap_servers": bootstrap, "group_id": f"bench-batch-{uuid.uuid4().hex[:8]}",
                              "topics": [topic], "max_in_flight": plan.max_in_flight}
    if batch:
        values.update(batch_max_records=plan.batch_size, batch_linger_ms=linger_ms if linger_ms is not None else 20)
    return ConsumerConfig(**values)


def _consumer(bootstrap: str, topic: str, plan: BatchPlan, batch: bool, connections: int, counter: _Counter,
              linger_ms: int | None = None) -> PyrallelConsumer:
    database = _Database(plan, connections)
    config = _config(bootstrap, topic, plan, batch, linger_ms)

    async def handle_batch(records: list[Record]) -> BatchResult | None:
        await database.write(len(records))
        counter.done(records)
        return None

    async def handle(record: Record) -> None:
        await database.write(1)
        counter.done([record])

    if batch:
        return PyrallelConsumer(config, batch_handler=handle_batch)
    return PyrallelConsumer(config, handle)


async def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


CALL_S = BatchPlan().call_ms / 1000
RECORD_S = BatchPlan().record_ms / 1000
"""The process engine's handlers run in worker processes, which know the default plan's cost only."""


def process_handle(record: Record) -> None:
    """Process engine, per record: one write of one record on this worker's connection."""
    time.sleep(CALL_S + RECORD_S)


def process_handle_batch(records: list[Record]) -> None:
    """Process engine, batch: one write of every record of the batch."""
    time.sleep(CALL_S + RECORD_S * len(records))


class _BatchSizes(ConsumerObserver):
    """The size of every batch the consumer dispatched (its handlers run in other processes)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def batch_dispatched(self, records: int) -> None:
        self.sizes.append(records)


def _throughput_process(bootstrap: str, topic: str, plan: BatchPlan, batch: bool) -> Throughput:
    """Records per second from the first completed record to the last, read from the consumer's metrics."""
    m = Throughput("batch" if batch else "per-record", plan.process_workers, engine="process")
    values: dict[str, Any] = {"bootstrap_servers": bootstrap, "group_id": f"bench-batch-{uuid.uuid4().hex[:8]}",
                              "topics": [topic], "max_in_flight": plan.max_in_flight, "engine": "process",
                              "process_workers": plan.process_workers}
    if batch:
        values.update(batch_max_records=plan.batch_size)
    config = ConsumerConfig(**values)
    sizes = _BatchSizes()

    async def run() -> None:
        consumer = (PyrallelConsumer(config, batch_handler=process_handle_batch, observer=sizes) if batch
                    else PyrallelConsumer(config, process_handle, observer=sizes))
        async with consumer:
            first = last = 0.0
            first_count = count = 0
            deadline = time.monotonic() + plan.join_timeout_s
            while count < plan.records:
                await asyncio.sleep(0.02)
                done = consumer.metrics().records_succeeded
                now = time.perf_counter()
                if done > count:
                    if not first_count:
                        first, first_count = now, done
                    count, last = done, now
                if (first_count and now - first >= plan.max_seconds) or (not first_count
                                                                         and time.monotonic() > deadline):
                    break
        m.handled = count
        m.rate = round((count - first_count) / (last - first), 1) if last > first else 0.0
        m.mean_batch = round(sum(sizes.sizes) / len(sizes.sizes), 1) if sizes.sizes else None
        if not count:
            m.error = "no record handled"

    asyncio.run(run())
    log.info("batch suite: throughput %-10s process engine, %d workers: %.0f rec/s (%d records) %s", m.handler,
             plan.process_workers, m.rate, m.handled, m.error)
    return m


def _throughput(bootstrap: str, topic: str, plan: BatchPlan, batch: bool, connections: int) -> Throughput:
    m = Throughput("batch" if batch else "per-record", connections)
    counter = _Counter()

    async def run() -> None:
        async with _consumer(bootstrap, topic, plan, batch, connections, counter):
            if not await _until(lambda: counter.handled > 0, plan.join_timeout_s):
                m.error = "no record handled"
                return
            await _until(lambda: counter.handled >= plan.records or time.perf_counter() - counter.first
                         >= plan.max_seconds, plan.max_seconds + 60)
            handled, first, last, calls = counter.handled, counter.first, counter.last, counter.calls
        m.handled = handled
        m.rate = round((handled - 1) / (last - first), 1) if last > first else 0.0
        m.mean_batch = round(handled / calls, 1) if batch and calls else None

    asyncio.run(run())
    log.info("batch suite: throughput %-10s connections=%d: %.0f rec/s (%d records) %s", m.handler, connections,
             m.rate, m.handled, m.error)
    return m


def _latency(bootstrap: str, plan: BatchPlan, batch: bool, linger_ms: int | None) -> Latency:
    m = Latency("batch" if batch else "per-record", linger_ms)
    counter = _Counter()
    topic = prepared_topic(bootstrap, "batch-lat", 0, plan.keys, plan.partitions)
    expected = int(plan.rate * plan.rate_seconds)

    async def run() -> None:
        consumer = _consumer(bootstrap, topic, plan, batch, plan.latency_connections, counter, linger_ms)
        async with consumer:
            joined = await _until(lambda: len(consumer.metrics().partitions) == plan.partitions, plan.join_timeout_s)
            if not joined:
                m.error = "the consumer did not get every partition"
                return
            producer = RateProducer(bootstrap, topic, plan.rate, plan.rate_seconds, plan.keys, 0)
            producer.start()
            await asyncio.get_running_loop().run_in_executor(None, producer.join)
            await _until(lambda: counter.handled >= expected, 30)
            m.error = producer.error
        m.mean_batch = round(counter.handled / counter.calls, 1) if batch and counter.calls else None

    asyncio.run(run())
    start = min((produced for produced, _ in counter.latencies), default=0) + 500_000
    values = sorted(ms for produced, ms in counter.latencies if produced >= start)  # the first 0.5 s left out
    if values:
        m.samples = len(values)
        m.p50_ms, m.p99_ms, m.max_ms = percentile(values, 50), percentile(values, 99), round(values[-1], 2)
    else:
        m.error = m.error or "no record handled"
    log.info("batch suite: latency %-10s linger=%s: p50 %s ms, p99 %s ms (%d records) %s", m.handler, linger_ms,
             m.p50_ms, m.p99_ms, m.samples, m.error)
    return m


def run_batch_bench(bootstrap: str, plan: BatchPlan, out_dir: Path) -> BatchReport:
    """Every case of the plan; writes ``batch-latest.json`` and ``batch-latest.md`` into ``out_dir``."""
    started = time.monotonic()
    report = BatchReport(asdict(plan))
    topic = prepared_topic(bootstrap, "batch", plan.records, plan.keys, plan.partitions)
    for connections in plan.connections:
        per_record = _throughput(bootstrap, topic, plan, False, connections)
        batched = _throughput(bootstrap, topic, plan, True, connections)
        report.throughput += [per_record, batched]
        if per_record.rate and batched.rate:
            report.ratios[str(connections)] = round(batched.rate / per_record.rate, 1)
    if plan.process_workers:
        per_record = _throughput_process(bootstrap, topic, plan, False)
        batched = _throughput_process(bootstrap, topic, plan, True)
        report.throughput += [per_record, batched]
        if per_record.rate and batched.rate:
            report.ratios[f"process-{plan.process_workers}"] = round(batched.rate / per_record.rate, 1)
    report.latency.append(_latency(bootstrap, plan, False, None))
    report.latency += [_latency(bootstrap, plan, True, linger) for linger in plan.lingers_ms]
    report.duration_s = round(time.monotonic() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "batch-latest.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (out_dir / "batch-latest.md").write_text(markdown(report))
    return report


def markdown(report: BatchReport) -> str:
    """The two tables of a run: throughput per connection limit (with the ratio), latency per linger."""
    plan = report.plan
    lines = [
        f"Handler cost: {plan['call_ms']:g} ms per call + {plan['record_ms']:g} ms per record; batches of up to "
        f"{plan['batch_size']}; {plan['keys']:,} keys, {plan['partitions']} partitions, max_in_flight "
        f"{plan['max_in_flight']}; async engine unless said otherwise.",
        "",
        "| connections | per-record rec/s | batch rec/s | mean batch | batch / per-record |",
        "|---|---|---|---|---|",
    ]
    by_case = {(t.engine, t.handler, t.connections): t for t in report.throughput}
    cases = [("async", c, str(c), str(c or "unlimited")) for c in plan["connections"]]
    workers = plan.get("process_workers", 0)
    if workers:
        cases.append(("process", workers, f"process-{workers}", f"{workers} (process engine, one per worker)"))
    for engine, connections, key, label in cases:
        single = by_case.get((engine, "per-record", connections))
        batch = by_case.get((engine, "batch", connections))
        if single is None or batch is None:
            continue
        ratio = report.ratios.get(key)
        lines.append(f"| {label} | {single.rate:,.0f}{_err(single.error)} | "
                     f"{batch.rate:,.0f}{_err(batch.error)} | {batch.mean_batch} | "
                     f"{f'{ratio:g}x' if ratio else '-'} |")
    lines += [
        "",
        f"Latency at {plan['rate']:,} records/s for {plan['rate_seconds']:g} s, {plan['latency_connections']} "
        "connections (produce to handler done):",
        "",
        "| handler | linger | mean batch | p50 ms | p99 ms | max ms | records |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in report.latency:
        lines.append(f"| {m.handler} | {'-' if m.linger_ms is None else f'{m.linger_ms} ms'} | "
                     f"{m.mean_batch if m.mean_batch is not None else '-'} | {m.p50_ms} | {m.p99_ms} | {m.max_ms} | "
                     f"{m.samples:,}{_err(m.error)} |")
    return "\n".join(lines) + "\n"


def _err(error: str) -> str:
    return f" ({error})" if error else ""

