"""Benchmark workloads as a small value type, for the blue/green consumer app's ``--workload`` option.

The bodies (and the CPU calibration every process shares) live in :mod:`pyrallel_tools.benchmark.harness`,
which the benchmark's contender processes use directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyrallel_consumer.record import Record
from pyrallel_tools.benchmark.harness import loops_per_ms, work_async, work_sync


@dataclass(frozen=True, slots=True)
class Workload:
    """A handler body: sleep, then burn CPU. Made by the consume app's option parser, on the main thread."""

    name: str
    sleep_s: float = 0.0
    cpu_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.cpu_ms > 0:
            # Calibrated when a CPU workload is asked for, before any worker process starts, so the workers
            # inherit the value (see LOOPS_ENV) instead of calibrating on a CPU that is busy by then.
            loops_per_ms()

    async def run_async(self, record: Record) -> None:
        await work_async(self.sleep_s, self.cpu_ms)

    def run_sync(self, record: Record) -> None:
        work_sync(self.sleep_s, self.cpu_ms)
