"""The references: a plain confluent-kafka loop, one record at a time.

``sequential.py baseline ARGS``: the sequential baseline. ``consume()`` batches of 500, the handler called on each
record in turn, an asynchronous commit after every batch (at-least-once; order per partition).
``sequential.py bare ARGS``: a bare ``consume()`` loop with no handler and no commit, the ceiling of what one Python
process reads from librdkafka; the no-op workload's reference.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("PYRALLEL_BENCH_HARNESS_DIR")
                or str(Path(__file__).resolve().parents[2] / "src" / "pyrallel_consumer" / "benchmark"))
import harness
from confluent_kafka import Consumer


def run(args: harness.ContenderArgs, handle: bool) -> dict[str, Any]:
    tracker = harness.new_tracker(args)
    consumer = Consumer(harness.consumer_conf(args))
    consumer.subscribe([args.topic])
    count = 0
    try:
        while not tracker.finished.is_set():
            tracker.check()
            batch = consumer.consume(num_messages=500 if handle else 1000, timeout=0.5)
            if not handle:
                count += sum(1 for msg in batch if msg.error() is None)
                tracker.observe(count)
                continue
            for msg in batch:
                if msg.error() is not None:
                    continue
                harness.run_sync(args.workload)
                tracker.done(msg.value())
                if tracker.finished.is_set():
                    break
            if batch:
                consumer.commit(asynchronous=True)
    finally:
        consumer.close()
        tracker.close()
    return tracker.result(args.name)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("baseline", "bare"):
        sys.exit("usage: sequential.py {baseline|bare} ARGS...")
    with_handler = sys.argv[1] == "baseline"
    sys.exit(harness.run_contender(lambda args: run(args, with_handler), sys.argv[2:]))
