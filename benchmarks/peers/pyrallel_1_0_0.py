"""Peer: the published ``pyrallel-consumer==1.0.0`` from PyPI (same import name as this repository's package),
run from its own virtualenv (Python >= 3.12, which it requires) and driven through its documented API: a
``KafkaConfig`` whose ``parallel_consumer`` section sets ``ordering_mode`` and ``execution.mode``, then
``PyrallelConsumer(config=..., worker=..., topic=...)`` with ``await start()`` / ``await stop()``.

``pyrallel_1_0_0.py {async|process} ARGS``. Async mode: ``execution.max_in_flight = --concurrency`` and an
``async def worker(item)``. Process mode: ``execution.process_config.process_count = --concurrency`` and a
picklable top-level ``def worker(item)``; it runs in worker processes, which append to the log the runner counts.
``dlq_enabled`` is turned off (its default is on) to match the other contenders, which have no dead-letter topic.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("PYRALLEL_BENCH_HARNESS_DIR")
                or str(Path(__file__).resolve().parents[2] / "src" / "pyrallel_consumer" / "benchmark"))
import harness
from pyrallel_consumer.dto import ExecutionMode, OrderingMode, WorkItem

from pyrallel_consumer.config import KafkaConfig
from pyrallel_consumer.consumer import PyrallelConsumer

ORDERING = {"key": OrderingMode.KEY_HASH, "partition": OrderingMode.PARTITION, "unordered": OrderingMode.UNORDERED}


def process_worker(item: WorkItem) -> None:
    harness.handle_in_worker(item.payload)


async def run(mode: str, args: harness.ContenderArgs) -> None:
    config = KafkaConfig(BOOTSTRAP_SERVERS=args.bootstrap, CONSUMER_GROUP=args.group,
                         SESSION_TIMEOUT_MS=args.session_timeout_ms, AUTO_OFFSET_RESET="earliest", dlq_enabled=False)
    config.parallel_consumer.ordering_mode = ORDERING[args.ordering]
    execution = config.parallel_consumer.execution
    follower = None
    if mode == "process":
        if not args.log:  # the workers' log is how this process learns what they handled
            fd, path = tempfile.mkstemp(prefix="bench-pyrallel-1.0.0-", suffix=".log")
            os.close(fd)
            args = dataclasses.replace(args, log=path)
        tracker = harness.Tracker(args.limit, args.max_seconds, None, args.join_timeout_s)
        harness.export_worker_env(args)
        execution.mode = ExecutionMode.PROCESS
        execution.process_config.process_count = args.concurrency
        worker: Any = process_worker
        follower = harness.LogFollower(str(args.log), tracker)
        follower.start()
    else:
        tracker = harness.new_tracker(args)
        execution.mode = ExecutionMode.ASYNC
        execution.max_in_flight = args.concurrency
        workload = args.workload

        async def worker(item: WorkItem) -> None:
            await harness.run_async(workload)
            tracker.done(item.payload)

    consumer = PyrallelConsumer(config=config, worker=worker, topic=args.topic)
    await consumer.start()
    try:
        await harness.wait_finished_async(tracker)
        harness.emit(tracker.result(args.name))  # before stop(), which may wait for its workers
    finally:
        await consumer.stop()
        tracker.close()


if __name__ == "__main__":
    modes = ("async", "process")
    if len(sys.argv) < 2 or sys.argv[1] not in modes:
        sys.exit("usage: pyrallel_1_0_0.py {async|process} ARGS...")
    mode = sys.argv[1]
    sys.exit(harness.run_contender(lambda args: harness.run_on_loop(lambda: run(mode, args), args.loop), sys.argv[2:]))
