"""A share-group member process for the SIGKILL test: handles the first HANDLED records it acquires, then hangs.

Usage: python share_app.py BOOTSTRAP GROUP TOPIC LOG_FILE HANDLED ENGINE

Every handled record is one line ``handled SEQ`` in LOG_FILE (flushed) before its handler returns; a record that
arrives after HANDLED were handled writes ``blocked SEQ`` and never returns, so the process is certain to hold
acquired records when the test kills it. With ENGINE=process the handler is ``share_app:handle_sync``, run by
spawned worker processes that get this process's ``sys.argv`` and append to the same LOG_FILE (the limit is then
per worker).
"""

from __future__ import annotations

import asyncio
import sys
import time

from pyrallel_consumer import ConsumerConfig, PyrallelShareConsumer, Record

BOOTSTRAP, GROUP, TOPIC, LOG = sys.argv[1:5]
HANDLED = int(sys.argv[5])
ENGINE = sys.argv[6]

log_file = open(LOG, "a", buffering=1)  # noqa: SIM115 - one line per record, flushed per line
handled = 0


def _handle(record: Record) -> bool:
    """Log the record as handled and return True, or log it as blocked and return False (the caller hangs)."""
    global handled
    seq = int((record.value or b"").split(b"|", 1)[0])
    if handled >= HANDLED:
        log_file.write(f"blocked {seq}\n")
        return False
    handled += 1
    log_file.write(f"handled {seq}\n")
    return True


async def handle(record: Record) -> None:
    if not _handle(record):
        await asyncio.sleep(3600)


def handle_sync(record: Record) -> None:
    if not _handle(record):
        time.sleep(3600)


async def main() -> None:
    config = ConsumerConfig(bootstrap_servers=BOOTSTRAP, group_id=GROUP, topics=[TOPIC], group_type="share",
                            ordering="unordered", engine=ENGINE, max_in_flight=4, max_retries=0,
                            task_timeout_ms=3_600_000)
    handler = handle if ENGINE == "async" else "share_app:handle_sync"
    async with PyrallelShareConsumer(config, handler) as consumer:
        await consumer.wait_stopped()


if __name__ == "__main__":
    asyncio.run(main())
