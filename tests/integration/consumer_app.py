"""A consumer process for restart tests: logs every handled record, optionally blocks one offset forever.

Usage: python consumer_app.py BOOTSTRAP GROUP TOPIC LOG_FILE [BLOCK_OFFSET] [ENGINE] [COMMIT_INTERVAL_MS]

With ENGINE=process the handler is ``consumer_app:handle_sync``, run by spawned worker processes; they get this
process's ``sys.argv`` and append to the same LOG_FILE (one line per record, flushed).
"""

from __future__ import annotations

import asyncio
import sys
import time

from pyrallel_consumer import ConsumerConfig, Ordering, PyrallelConsumer, Record

BOOTSTRAP, GROUP, TOPIC, LOG = sys.argv[1:5]
BLOCK = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "-" else -1
ENGINE = sys.argv[6] if len(sys.argv) > 6 else "async"
COMMIT_INTERVAL_MS = int(sys.argv[7]) if len(sys.argv) > 7 else 100

log_file = open(LOG, "a", buffering=1)  # noqa: SIM115 - one line per record, flushed per line


def _log(record: Record) -> None:
    log_file.write(f"{record.partition} {record.offset}\n")


async def handle(record: Record) -> None:
    if record.offset == BLOCK:
        await asyncio.sleep(3600)
    _log(record)


def handle_sync(record: Record) -> None:
    if record.offset == BLOCK:
        time.sleep(3600)
    _log(record)


async def main() -> None:
    config = ConsumerConfig(
        bootstrap_servers=BOOTSTRAP, group_id=GROUP, topics=[TOPIC], ordering=Ordering.UNORDERED,
        commit_interval_ms=COMMIT_INTERVAL_MS, task_timeout_ms=3_600_000, engine=ENGINE,
        # A worker holds one item running and one queued, so exactly one record waits behind the blocked one.
        ipc_batch_size=1,
        # The restarted app joins while the killed member is still in the group: a short session ends the wait.
        kafka={"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
    )
    handler = handle if ENGINE == "async" else "consumer_app:handle_sync"
    async with PyrallelConsumer(config, handler) as consumer:
        await consumer.wait_stopped()


if __name__ == "__main__":
    asyncio.run(main())
