"""A consumer process for restart tests: logs every handled record, optionally blocks one offset forever.

Usage: python consumer_app.py BOOTSTRAP GROUP TOPIC LOG_FILE [BLOCK_OFFSET] [ENGINE]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from pyrallel_consumer import ConsumerConfig, Ordering, PyrallelConsumer, Record

BOOTSTRAP, GROUP, TOPIC, LOG = sys.argv[1:5]
BLOCK = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "-" else -1
ENGINE = sys.argv[6] if len(sys.argv) > 6 else "async"

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
    with open(os.environ["APP_LOG"], "a") as out:
        out.write(f"{record.partition} {record.offset}\n")


async def main() -> None:
    config = ConsumerConfig(
        bootstrap_servers=BOOTSTRAP, group_id=GROUP, topics=[TOPIC], ordering=Ordering.UNORDERED,
        commit_interval_ms=100, task_timeout_ms=3_600_000, engine=ENGINE,
    )
    handler = handle if ENGINE == "async" else "consumer_app:handle_sync"
    async with PyrallelConsumer(config, handler) as consumer:
        await consumer.wait_stopped()


if __name__ == "__main__":
    asyncio.run(main())
