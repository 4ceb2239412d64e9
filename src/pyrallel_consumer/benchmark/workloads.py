"""Benchmark workloads, each available as a sync and an async handler body so every contender runs the same work."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyrallel_consumer.record import Record

LOOPS_ENV = "PYRALLEL_BENCH_LOOPS_PER_MS"
"""The calibration of :func:`burn_cpu`, handed to the processes this one starts (process engine workers)."""


def burn_cpu(milliseconds: float) -> int:
    """About ``milliseconds`` of pure-Python work: a fixed loop count, the same in every process (see below)."""
    total = 0
    for i in range(cpu_loops(milliseconds)):
        total += i * i % 7
    return total


def cpu_loops(milliseconds: float) -> int:
    """Loop iterations :func:`burn_cpu` runs for ``milliseconds``."""
    return int(_LOOPS_PER_MS * milliseconds)


def _calibrate() -> float:
    loops = 200_000
    started = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i * i % 7
    return loops / ((time.perf_counter() - started) * 1000)


def _loops_per_ms() -> float:
    """Calibrated once, by the first process that imports this module. Processes it starts inherit the value
    through the environment, so a worker that happens to calibrate on a busy CPU cannot run a shorter loop:
    every contender does exactly the same work per record."""
    inherited = os.environ.get(LOOPS_ENV)
    if inherited:
        return float(inherited)
    value = _calibrate()
    os.environ[LOOPS_ENV] = repr(value)
    return value


_LOOPS_PER_MS = _loops_per_ms()


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    sleep_s: float = 0.0
    cpu_ms: float = 0.0

    async def run_async(self, record: Record) -> None:
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        if self.cpu_ms:
            burn_cpu(self.cpu_ms)

    def run_sync(self, record: Record) -> None:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.cpu_ms:
            burn_cpu(self.cpu_ms)


WORKLOADS = {
    "noop": Workload("noop"),
    "sleep5ms": Workload("sleep5ms", sleep_s=0.005),
    "cpu2ms": Workload("cpu2ms", cpu_ms=2.0),
}


def noop_handler(record: Record) -> None:
    """The noop workload as a top-level handler that process engine workers can import."""
    WORKLOADS["noop"].run_sync(record)


def cpu2ms_handler(record: Record) -> None:
    """The cpu2ms workload (about 2 ms of pure Python per record) as an importable top-level handler."""
    WORKLOADS["cpu2ms"].run_sync(record)


SYNC_HANDLERS: dict[str, Callable[[Record], None]] = {"noop": noop_handler, "cpu2ms": cpu2ms_handler}
"""Importable synchronous handlers of the workloads that the process engine is benchmarked with."""
