"""A consume-transform-produce process for the exactly-once tests (tests/eos_support.py starts it).

Usage: python eos_app.py BOOTSTRAP GROUP SOURCE SINK [ENGINE] [INSTANCE|-] [SESSION_TIMEOUT_MS]

Every input record yields one output on SINK, keyed like the input, whose value names the input
(``<partition>:<offset>:<value>``), in the transaction that commits the input's offset. SIGTERM stops it with a
drain (the last transaction commits); a fatal error (a fenced producer) ends it with exit code 1 and the error.
Log lines (INFO) go to stdout: the tests read the aborts and the fencing there.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

from pyrallel_consumer import ConsumerConfig, Ordering, Output, PyrallelConsumer, Record

BOOTSTRAP, GROUP, SOURCE, SINK = sys.argv[1:5]
ENGINE = sys.argv[5] if len(sys.argv) > 5 else "async"
INSTANCE = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
SESSION_TIMEOUT_MS = sys.argv[7] if len(sys.argv) > 7 else "6000"


def _output(record: Record) -> list[Output]:
    value = b"%d:%d:%s" % (record.partition, record.offset, record.value or b"")
    return [Output(SINK, value, key=record.key)]


async def handle(record: Record) -> list[Output]:
    await asyncio.sleep(0.002)
    return _output(record)


def handle_sync(record: Record) -> list[Output]:
    time.sleep(0.002)
    return _output(record)


async def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    extra = {"instance_id": INSTANCE} if INSTANCE else {}
    config = ConsumerConfig(
        bootstrap_servers=BOOTSTRAP, group_id=GROUP, topics=[SOURCE], ordering=Ordering.KEY, engine=ENGINE,
        processing_guarantee="exactly_once", commit_interval_ms=200, transaction_timeout_ms=6000,
        kafka={"session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": "1000"}, **extra,
    )
    handler = handle if ENGINE == "async" else "eos_app:handle_sync"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with PyrallelConsumer(config, handler) as consumer:
        print("EOS-STARTED", flush=True)
        stopped = asyncio.ensure_future(consumer.wait_stopped())
        await asyncio.wait([stopped, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            print(f"EOS-FAILED {stopped.exception()!r}", flush=True)
            return 1
    print("EOS-STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
