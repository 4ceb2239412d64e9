"""Benchmark workloads, each available as a sync and an async handler body so every contender runs the same work."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pyrallel_consumer.record import Record


def burn_cpu(milliseconds: float) -> int:
    """About ``milliseconds`` of pure-Python work (a fixed loop count, calibrated once per process)."""
    total = 0
    for i in range(int(_LOOPS_PER_MS * milliseconds)):
        total += i * i % 7
    return total


def _calibrate() -> float:
    loops = 200_000
    started = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i * i % 7
    return loops / ((time.perf_counter() - started) * 1000)


_LOOPS_PER_MS = _calibrate()


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
