"""One member of a ``pyrallel bench --suite rebalance`` group, in its own process (so that no member's GIL or event
loop slows another): ``python -m pyrallel_tools.benchmark.rebalance_member {plain|pyrallel} --bootstrap ...``.

* ``plain``: a ``confluent_kafka.Consumer`` with ``partition.assignment.strategy=cooperative-sticky``, subscribe
  and a poll loop (auto commit, as librdkafka defaults it); records are dropped.
* ``pyrallel``: a :class:`~pyrallel_consumer.PyrallelConsumer` with a no-op handler. Its rebalance callbacks are
  seen through the public ``KafkaClients`` hook: the consumer it creates is wrapped so that ``subscribe`` wraps
  the library's own callbacks (no change to the library).

Both get the same librdkafka settings: the library's fetch defaults, cooperative-sticky, then ``--kafka``.
Each appends one JSON line per ownership change to ``--log`` (see :mod:`rebalance_timeline`): ``subscribe``
right before joining, ``assign`` when the assign callback returns (the library has then set the partitions up;
librdkafka assigns right after a plain callback returns), ``revoke`` / ``lost`` when the callback is entered
(processing of those partitions stops there), ``leave`` when the member starts leaving and ``closed`` (owning
nothing) once it has left. SIGTERM or SIGINT makes it leave cleanly (``close()`` / ``stop()``); it also leaves
by itself after ``--max-seconds``, so a member the runner lost track of does not live on.

``pyrallel bench --suite recovery`` (:mod:`pyrallel_tools.benchmark.recovery`) runs the same members with
``--handled-log`` (when records of each partition were handled, see :class:`HandledLog`) and, for its
static-membership contenders, ``--group-instance-id``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from pyrallel_consumer import ConsumerConfig, KafkaClients, PyrallelConsumer, Record
from pyrallel_consumer.kafka.settings import FETCH_DEFAULTS
from pyrallel_tools.kafka_pairs import parse_kafka_pairs

Callback = Callable[[Any, list[TopicPartition]], None]


class OwnershipLog:
    """The member's ownership, appended as JSON lines (``O_APPEND``, one write per line). Called from the rebalance
    callbacks (librdkafka's thread: the poll loop's, or the library's poller thread) and from the main thread."""

    def __init__(self, path: str, member: str) -> None:
        self.member = member
        self._owned: frozenset[int] = frozenset()
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def event(self, kind: str, gained: Iterable[int] = (), dropped: Iterable[int] = (), everything: bool = False,
              at: float | None = None) -> None:
        """Log ``kind`` with the ownership after it (``everything``: the member owns nothing any more)."""
        t = time.time() if at is None else at
        with self._lock:
            self._owned = frozenset() if everything else (self._owned | set(gained)) - set(dropped)
            line = json.dumps({"t": t, "member": self.member, "kind": kind, "owned": sorted(self._owned)})
            os.write(self._fd, (line + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)

    def wrap(self, on_assign: Callback | None, on_revoke: Callback | None,
             on_lost: Callback | None) -> dict[str, Callback]:
        """Rebalance callbacks that run the given ones (if any) and log the change around them."""
        def assigned(consumer: Any, partitions: list[TopicPartition]) -> None:
            if on_assign is not None:
                on_assign(consumer, partitions)
            self.event("assign", gained=[tp.partition for tp in partitions])

        def revoked(consumer: Any, partitions: list[TopicPartition]) -> None:
            self.event("revoke", dropped=[tp.partition for tp in partitions])
            if on_revoke is not None:
                on_revoke(consumer, partitions)

        def lost(consumer: Any, partitions: list[TopicPartition]) -> None:
            self.event("lost", dropped=[tp.partition for tp in partitions])
            if on_lost is not None:
                on_lost(consumer, partitions)

        return {"on_assign": assigned, "on_revoke": revoked, "on_lost": lost}


class HandledLog:
    """When the member handled records, as JSON lines ``{"t", "member", "partition", "offset"}`` (``O_APPEND``).

    Written from the one thread that handles records (the plain poll loop, or the library's event loop). A line
    is written for a partition's record when the previous line of that partition is older than ``every_s``, so
    the first record handled after a gap (a restart, a new assignment) is always logged at its exact time while
    a steady stream costs a few lines per second. The recovery suite reads these lines.
    """

    def __init__(self, path: str, member: str, every_s: float) -> None:
        self.member, self.every_s = member, every_s
        self._last: dict[int, float] = {}
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def handled(self, partition: int, offset: int) -> None:
        t = time.time()
        if t - self._last.get(partition, 0.0) < self.every_s:
            return
        self._last[partition] = t
        line = json.dumps({"t": t, "member": self.member, "partition": partition, "offset": offset})
        os.write(self._fd, (line + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


class _RecordingConsumer:
    """The library's real consumer, with ``subscribe`` logging the ownership; everything else is the real one's."""

    def __init__(self, inner: Consumer, ownership: OwnershipLog) -> None:
        self._inner = inner
        self._ownership = ownership

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def subscribe(self, topics: list[str], on_assign: Callback | None = None, on_revoke: Callback | None = None,
                  on_lost: Callback | None = None) -> None:
        self._ownership.event("subscribe")
        self._inner.subscribe(topics, **self._ownership.wrap(on_assign, on_revoke, on_lost))


class RecordingClients(KafkaClients):
    """KafkaClients (public API) whose consumer logs its ownership changes; created on the main thread."""

    def __init__(self, ownership: OwnershipLog) -> None:
        self.ownership = ownership

    def new_consumer(self, conf: dict[str, Any]) -> Any:
        return _RecordingConsumer(super().new_consumer(conf), self.ownership)


def plain_conf(bootstrap: str, group: str, kafka: dict[str, str],
               group_instance_id: str | None = None) -> dict[str, Any]:
    """The plain member's librdkafka settings: what the library would set for rebalancing and fetching (and for
    static membership, ``group.instance.id``, as the library sets it from ``group_instance_id``)."""
    static = {"group.instance.id": group_instance_id} if group_instance_id else {}
    return {**FETCH_DEFAULTS, "bootstrap.servers": bootstrap, "group.id": group,
            "partition.assignment.strategy": "cooperative-sticky", **static, **kafka}


def run_plain(args: argparse.Namespace, kafka: dict[str, str], ownership: OwnershipLog,
              handled: HandledLog | None) -> None:
    """Subscribe and poll until SIGTERM/SIGINT or ``--max-seconds``, then close (which revokes)."""
    leaving = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: leaving.set())
    consumer = Consumer(plain_conf(args.bootstrap, args.group, kafka, args.group_instance_id))
    ownership.event("subscribe")
    consumer.subscribe([args.topic], **ownership.wrap(None, None, None))
    deadline = time.monotonic() + args.max_seconds
    while not leaving.is_set() and time.monotonic() < deadline:
        message = consumer.poll(0.05)
        if handled is not None and message is not None and message.error() is None:
            handled.handled(message.partition() or 0, message.offset() or 0)
    ownership.event("leave")
    consumer.close()
    ownership.event("closed", everything=True)


async def run_pyrallel(args: argparse.Namespace, kafka: dict[str, str], ownership: OwnershipLog,
                       handled: HandledLog | None) -> None:
    """start(), wait for SIGTERM/SIGINT or ``--max-seconds``, then stop() with a drain (which revokes); a
    consumer that stopped by itself makes the member exit with its error."""
    leaving = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, leaving.set)

    async def handle(record: Record) -> None:
        """No work (the suites measure hand-over and recovery, not handling); noted in --handled-log if given."""
        if handled is not None:
            handled.handled(record.partition, record.offset)

    config = ConsumerConfig(bootstrap_servers=args.bootstrap, group_id=args.group, topics=[args.topic], kafka=kafka,
                            group_instance_id=args.group_instance_id)
    consumer = PyrallelConsumer(config, handle, kafka_clients=RecordingClients(ownership))
    await consumer.start()
    stopped = asyncio.ensure_future(consumer.wait_stopped())
    asked = asyncio.ensure_future(leaving.wait())
    await asyncio.wait({stopped, asked}, timeout=args.max_seconds, return_when=asyncio.FIRST_COMPLETED)
    asked.cancel()
    if stopped.done():  # it stopped by itself (e.g. fenced by another member with its group.instance.id)
        ownership.event("closed", everything=True)
        stopped.result()  # raises the error that stopped it: the member exits non-zero, the runner notices
        return
    stopped.cancel()
    ownership.event("leave")
    await consumer.stop(drain=True)
    ownership.event("closed", everything=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One member of a pyrallel bench rebalance group.")
    parser.add_argument("kind", choices=["plain", "pyrallel"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--member", required=True, help="Name in the log.")
    parser.add_argument("--log", required=True, help="Append the ownership changes (JSON lines) here.")
    parser.add_argument("--kafka", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="Leave by itself after this long.")
    parser.add_argument("--handled-log", help="Append when records of each partition were handled (JSON lines).")
    parser.add_argument("--handled-every", type=float, default=0.1,
                        help="Seconds between two handled lines of one partition (0: a line per record).")
    parser.add_argument("--group-instance-id", help="Static membership: group.instance.id / group_instance_id.")
    args = parser.parse_args(argv)
    try:
        kafka = parse_kafka_pairs(args.kafka)
    except ValueError as exc:
        parser.error(str(exc))
    ownership = OwnershipLog(args.log, args.member)
    handled = HandledLog(args.handled_log, args.member, args.handled_every) if args.handled_log else None
    try:
        if args.kind == "plain":
            run_plain(args, kafka, ownership, handled)
        else:
            asyncio.run(run_pyrallel(args, kafka, ownership, handled))
    finally:
        ownership.close()
        if handled is not None:
            handled.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
