"""Hand-rolled peer: a plain confluent-kafka consumer and a thread pool, batch by batch.

Each ``consume()`` batch of up to 1,000 records goes through ``ThreadPoolExecutor.map`` (``--concurrency`` threads:
1,000 for the I/O-bound workload, whose handler uses ``time.sleep``; 2 for the CPU-bound one), then is committed
synchronously: at-least-once, commits only completed batches; no per-key order inside a batch, no overlap between
batches (the slowest record of a batch holds up the next one).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("PYRALLEL_BENCH_HARNESS_DIR")
                or str(Path(__file__).resolve().parents[2] / "src" / "pyrallel_consumer" / "benchmark"))
import harness
from confluent_kafka import Consumer

BATCH = 1000


def run(args: harness.ContenderArgs) -> dict[str, Any]:
    tracker = harness.new_tracker(args)
    workload = args.workload

    def handle(msg: Any) -> None:
        harness.run_sync(workload)
        tracker.done(msg.value())

    consumer = Consumer(harness.consumer_conf(args))
    consumer.subscribe([args.topic])
    try:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            while not tracker.finished.is_set():
                tracker.check()
                batch = consumer.consume(num_messages=BATCH, timeout=0.5)
                records = [msg for msg in batch if msg.error() is None]
                if records:
                    list(pool.map(handle, records))
                    consumer.commit(asynchronous=False)
    finally:
        consumer.close()
        tracker.close()
    return tracker.result(args.name)


if __name__ == "__main__":
    sys.exit(harness.run_contender(run))
