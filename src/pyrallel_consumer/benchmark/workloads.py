"""Benchmark workloads as a small value type, for the blue/green consumer app's ``--workload`` option.

The bodies (and the CPU calibration every process shares) live in :mod:`pyrallel_consumer.benchmark.harness`,
which the benchmark's contender processes use directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyrallel_consumer.benchmark.harness import LOOPS_ENV, burn_cpu, cpu_loops, loops_per_ms, work_async, work_sync
from pyrallel_consumer.record import Record

__all__ = ["LOOPS_ENV", "WORKLOADS", "Workload", "burn_cpu", "cpu_loops"]

loops_per_ms()  # calibrated on import, so worker processes started later inherit the value (see LOOPS_ENV)


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    sleep_s: float = 0.0
    cpu_ms: float = 0.0

    async def run_async(self, record: Record) -> None:
        await work_async(self.sleep_s, self.cpu_ms)

    def run_sync(self, record: Record) -> None:
        work_sync(self.sleep_s, self.cpu_ms)


WORKLOADS = {
    "noop": Workload("noop"),
    "sleep5ms": Workload("sleep5ms", sleep_s=0.005),
    "cpu2ms": Workload("cpu2ms", cpu_ms=2.0),
}
