"""Hand-rolled peer: confluent-kafka's ``AIOConsumer`` (confluent_kafka.aio), the common asyncio pattern.

Each ``consume()`` batch of up to ``--concurrency`` records is handled with ``asyncio.gather`` (every record of the
batch at once, whatever its key), then committed synchronously: at-least-once, commits only completed batches; no
per-key order inside a batch, no overlap between batches (the slowest record of a batch holds up the next batch).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("PYRALLEL_BENCH_HARNESS_DIR")
                or str(Path(__file__).resolve().parents[2] / "src" / "pyrallel_consumer" / "benchmark"))
import harness
from confluent_kafka.aio import AIOConsumer


async def run(args: harness.ContenderArgs) -> dict[str, Any]:
    tracker = harness.new_tracker(args)
    workload = args.workload

    async def handle(msg: Any) -> None:
        await harness.run_async(workload)
        tracker.done(msg.value())

    consumer = AIOConsumer(harness.consumer_conf(args))
    await consumer.subscribe([args.topic])
    try:
        while not tracker.finished.is_set():
            tracker.check()
            batch = await consumer.consume(num_messages=args.concurrency, timeout=0.5)
            records = [msg for msg in batch if msg.error() is None]
            if records:
                await asyncio.gather(*(handle(msg) for msg in records))
                await consumer.commit(asynchronous=False)
    finally:
        await consumer.close()
        tracker.close()
    return tracker.result(args.name)


if __name__ == "__main__":
    sys.exit(harness.run_contender(lambda args: harness.run_on_loop(lambda: run(args), args.loop)))
