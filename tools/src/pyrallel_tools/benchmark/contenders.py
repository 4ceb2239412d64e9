"""This library's contenders of ``pyrallel bench``, one per process: ``python -m
pyrallel_tools.benchmark.contenders {async|process|async-eos|share} --name ... --topic ...``
(see :func:`harness.parse_args`).

* ``async``: the async engine; the handler awaits the workload and counts in the same task.
* ``process``: the process engine with ``--concurrency`` worker processes; the handler
  (:func:`process_handler`) runs in the workers, where nothing can be counted for this process, so the
  consumer's own completion counter, ``metrics().records_succeeded``, is read every 5 ms.
* ``async-eos``: the async engine under ``processing_guarantee="exactly_once"``; the handler awaits the workload
  and returns one output per record (to ``<group>-out``, created with the input's partition count). A record
  counts once its transaction committed (the committed offsets, read every 20 ms), not when its handler returned;
  the library's defaults otherwise, as for ``async``: a transaction every second (commit_interval_ms), or after
  10,000 outputs (transaction_max_records).
* ``share``: :class:`PyrallelShareConsumer` in a share group (KIP-932; ``group_type="share"``, no order, the
  group starting at the earliest record); the handler awaits the workload and counts, as for ``async``.

Each runs on the event loop ``--loop`` names (asyncio's, or uvloop's) and prints one JSON result line
(:func:`harness.emit`). With ``--count-on-signal`` the window starts at SIGUSR1
(``pyrallel bench --suite scale`` sends it to every instance of a group once the group has settled), and SIGUSR2
ends it early (sent to an instance that owns no partition once the others finished).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.consumer import PyrallelConsumer
from pyrallel_consumer.output import Output
from pyrallel_consumer.record import Ordering, Record
from pyrallel_consumer.share_consumer import PyrallelShareConsumer
from pyrallel_tools.benchmark import harness
from pyrallel_tools.localkafka.topics import create_topic

PROCESS_HANDLER = "pyrallel_tools.benchmark.contenders:process_handler"
_POLL_S = 0.005
_COMMITTED_POLL_S = 0.02
"""The exactly-once contender's reading of the committed offsets: a metrics snapshot per read, so less often than
the process contender's counter (a transaction commits every 100 ms anyway)."""


def process_handler(record: Record) -> None:
    """The process engine's handler: the workload, and the log line when the runner asked for one."""
    harness.handle_in_worker(record.value)


def consumer_config(args: harness.ContenderArgs, engine: str) -> ConsumerConfig:
    if engine == "share":  # the share consumer takes no session.timeout.ms (the group's setting)
        return ConsumerConfig(bootstrap_servers=args.bootstrap, group_id=args.group, topics=[args.topic],
                              group_type="share", ordering=Ordering.UNORDERED, max_in_flight=args.concurrency,
                              kafka=dict(args.kafka))
    kafka = {"session.timeout.ms": str(args.session_timeout_ms), **dict(args.kafka)}
    if engine == "async-eos":
        return ConsumerConfig(bootstrap_servers=args.bootstrap, group_id=args.group, topics=[args.topic],
                              ordering=Ordering(args.ordering), max_in_flight=args.concurrency, kafka=kafka,
                              processing_guarantee="exactly_once")
    if engine == "process":
        return ConsumerConfig(bootstrap_servers=args.bootstrap, group_id=args.group, topics=[args.topic],
                              ordering=Ordering(args.ordering), engine="process",
                              process_workers=args.concurrency, kafka=kafka)
    return ConsumerConfig(bootstrap_servers=args.bootstrap, group_id=args.group, topics=[args.topic],
                          ordering=Ordering(args.ordering), max_in_flight=args.concurrency, kafka=kafka)


async def run(engine: str, args: harness.ContenderArgs) -> dict[str, Any]:
    tracker = harness.new_tracker(args)
    if args.count_on_signal:
        # Loop callbacks, not bare signal handlers: they cannot interrupt done() while that holds the lock.
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, tracker.start_counting)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, tracker.end_window)
    handler: Any
    if engine == "process":
        harness.export_worker_env(args)
        handler = PROCESS_HANDLER
    elif engine == "async-eos":
        handler = _eos_handler(args)
    else:
        workload = args.workload

        async def handler(record: Record) -> None:
            await harness.run_async(workload)
            tracker.done(record.value)

    config = consumer_config(args, engine)
    consumer: PyrallelConsumer | PyrallelShareConsumer
    poller = None
    if engine == "share":
        consumer = PyrallelShareConsumer(config, handler)
        await consumer.start()
    else:
        consumer = group_consumer = PyrallelConsumer(config, handler)
        await consumer.start()
        if engine == "process":
            poller = asyncio.create_task(_poll_completions(group_consumer, tracker))
        elif engine == "async-eos":
            poller = asyncio.create_task(_poll_committed(group_consumer, tracker))
    try:
        await harness.wait_finished_async(tracker)
    finally:
        if poller is not None:
            poller.cancel()
        await consumer.stop(drain=False)
        tracker.close()
    return tracker.result(args.name)


def _eos_handler(args: harness.ContenderArgs) -> Any:
    """The exactly-once contender's handler: the workload, then one output per record to ``<group>-out``."""
    sink = f"{args.group}-out"
    create_topic(args.bootstrap, sink, _partitions(args))
    workload = args.workload

    async def handler(record: Record) -> list[Output]:
        await harness.run_async(workload)
        return [Output(sink, record.value, key=record.key)]

    return handler


def _partitions(args: harness.ContenderArgs) -> int:
    from confluent_kafka.admin import AdminClient

    topic = AdminClient({"bootstrap.servers": args.bootstrap}).list_topics(args.topic, timeout=10).topics[args.topic]
    return len(topic.partitions)


async def _poll_committed(consumer: PyrallelConsumer, tracker: harness.Tracker) -> None:
    """Count records whose transaction committed: the committed offsets' progress since the first assignment."""
    started: dict[tuple[str, int], int] = {}
    while not tracker.finished.is_set():
        committed = 0
        for p in consumer.metrics().partitions:
            if p.committed_offset is not None:
                first = started.setdefault((p.topic, p.partition), p.committed_offset)
                committed += p.committed_offset - first
        if committed:
            tracker.observe(committed)
        await asyncio.sleep(_COMMITTED_POLL_S)


async def _poll_completions(consumer: PyrallelConsumer, tracker: harness.Tracker) -> None:
    while not tracker.finished.is_set():
        tracker.observe(consumer.metrics().records_succeeded)
        await asyncio.sleep(_POLL_S)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("async", "process", "async-eos", "share"):
        sys.stderr.write("usage: python -m pyrallel_tools.benchmark.contenders {async|process|async-eos|share} "
                         "ARGS...\n")
        return 2
    engine = argv[0]
    return harness.run_contender(lambda args: harness.run_on_loop(lambda: run(engine, args), args.loop), argv[1:])


if __name__ == "__main__":
    sys.exit(main())
