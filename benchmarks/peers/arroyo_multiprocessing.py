"""Peer for the CPU-bound workload: Sentry's arroyo (``sentry-arroyo`` from PyPI, in its own virtualenv),
``RunTaskWithMultiprocessing`` with a pool of ``--concurrency`` processes, followed by ``CommitOffsets``.

arroyo sends micro-batches (here up to 64 records or 50 ms, like the process engine's ``ipc_batch_size`` of 64)
to the pool and hands results on in offset order, so it commits only completed records, once per second
(arroyo's default commit policy). Records of one key may run at the same time in different batches (no per-key
order), and there is no offset map: a restart handles again everything after the committed offset.
Results come back to this process, which counts them in a step placed before ``CommitOffsets``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("PYRALLEL_BENCH_HARNESS_DIR")
                or str(Path(__file__).resolve().parents[2] / "src" / "pyrallel_consumer" / "benchmark"))
import harness
from arroyo.backends.kafka import KafkaConsumer, KafkaPayload
from arroyo.backends.kafka.configuration import build_kafka_consumer_configuration
from arroyo.processing import StreamProcessor
from arroyo.processing.strategies import (
    CommitOffsets,
    ProcessingStrategy,
    ProcessingStrategyFactory,
    RunTaskWithMultiprocessing,
)
from arroyo.processing.strategies.run_task_with_multiprocessing import MultiprocessingPool
from arroyo.types import Commit, Message, Partition, Topic


def work(message: Message[KafkaPayload]) -> None:
    """Runs in the pool's processes."""
    harness.handle_in_worker(message.payload.value)


class Count(ProcessingStrategy[Any]):
    """Counts the results that come back from the pool, then passes them on to the commit step."""

    def __init__(self, next_step: ProcessingStrategy[Any], tracker: harness.Tracker) -> None:
        self.next_step, self.tracker, self.count = next_step, tracker, 0

    def submit(self, message: Message[Any]) -> None:
        self.next_step.submit(message)
        self.count += 1
        self.tracker.observe(self.count)

    def poll(self) -> None:
        self.next_step.poll()

    def join(self, timeout: float | None = None) -> None:
        self.next_step.join(timeout)

    def close(self) -> None:
        self.next_step.close()

    def terminate(self) -> None:
        self.next_step.terminate()


class Factory(ProcessingStrategyFactory[KafkaPayload]):
    def __init__(self, pool: MultiprocessingPool, tracker: harness.Tracker) -> None:
        self.pool, self.tracker = pool, tracker

    def create_with_partitions(
        self, commit: Commit, partitions: Mapping[Partition, int]
    ) -> ProcessingStrategy[KafkaPayload]:
        return RunTaskWithMultiprocessing(
            function=work, next_step=Count(CommitOffsets(commit), self.tracker),
            max_batch_size=64, max_batch_time=0.05, pool=self.pool,
        )


def run(args: harness.ContenderArgs) -> None:
    # Handled records are counted from the results; the workers' log only serves latency and duplicates.
    tracker = harness.Tracker(args.limit, args.max_seconds, None, args.join_timeout_s)
    harness.export_worker_env(args)
    config = build_kafka_consumer_configuration(
        default_config={}, bootstrap_servers=[args.bootstrap], group_id=args.group, auto_offset_reset="earliest",
        override_params={"session.timeout.ms": args.session_timeout_ms},
    )
    pool = MultiprocessingPool(num_processes=args.concurrency)
    processor = StreamProcessor(KafkaConsumer(config), Topic(args.topic), Factory(pool, tracker))

    def watch() -> None:
        try:
            harness.wait_finished(tracker)
            harness.emit(tracker.result(args.name))
        except TimeoutError as exc:
            harness.fail(args.name, exc)
        processor.signal_shutdown()

    watcher = threading.Thread(target=watch, name="watch", daemon=True)
    watcher.start()
    try:
        processor.run()
    finally:
        pool.close()


if __name__ == "__main__":
    sys.exit(harness.run_contender(run))
