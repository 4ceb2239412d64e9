"""What the exactly-once tests share: an input producer that keeps the broker's delivery reports, consumer
processes of ``tests/integration/eos_app.py``, and the judge - a read_committed reader of the output topic.

Every input record (partition, offset) must yield exactly one output (its value names the input) visible to a
read_committed reader; outputs of one key must appear in the order of their inputs. The judge reads once every
consumer has stopped, and only after the output topic has no open transaction left (the read_committed end equals
the log end), so a killed producer's transaction has been aborted by the broker and nothing can appear later.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

APP = Path(__file__).parent / "integration" / "eos_app.py"
_QUIET = logging.getLogger("tests.eos.clients")
_QUIET.setLevel(logging.CRITICAL)


class InputProducer(threading.Thread):
    """Keyed records at about ``rate``/s until stop() (or ``limit_s``); ``delivered`` maps what the broker
    acknowledged, (partition, offset), to its key."""

    def __init__(self, bootstrap: str, topic: str, rate: int = 200, keys: int = 40, limit_s: float = 300) -> None:
        super().__init__(name="eos-input-producer", daemon=True)
        self.bootstrap, self.topic, self.rate, self.keys, self.limit_s = bootstrap, topic, rate, keys, limit_s
        self.delivered: dict[tuple[int, int], bytes] = {}
        self.failed = 0
        self._stop_event = threading.Event()

    def _report(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered[(msg.partition() or 0, msg.offset() or 0)] = msg.key() or b""
        else:
            self.failed += 1

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 5, "logger": _QUIET})
        started, sent = time.monotonic(), 0
        while not self._stop_event.is_set() and time.monotonic() - started < self.limit_s:
            producer.produce(self.topic, value=b"v%d" % sent, key=b"k%d" % (sent % self.keys),
                             on_delivery=self._report)
            sent += 1
            producer.poll(0)
            self._stop_event.wait(max(0.0, started + sent / self.rate - time.monotonic()))
        while producer.flush(5) > 0:  # a broker down: its records wait for it (acks=all, idempotent)
            if time.monotonic() - started > self.limit_s + 120:
                break

    def stop(self) -> None:
        self._stop_event.set()
        self.join(180)


class EosConsumer:
    """One consumer process (``eos_app.py``) turning every input into one output in a transaction."""

    def __init__(self, tmp: Path, bootstrap: str, group: str, source: str, sink: str, name: str,
                 instance: str | None = None, engine: str = "async", session_timeout_ms: int = 6000) -> None:
        self.name = name
        self.out = tmp / f"{name}.out"
        argv = [sys.executable, str(APP), bootstrap, group, source, sink, engine, instance or "-",
                str(session_timeout_ms)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(APP.parent), os.environ.get("PYTHONPATH", "")])}
        with self.out.open("wb") as output:
            self.proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def owned(self) -> set[int]:
        """Partitions it owns as far as its log says (Assigned / Revoking / Lost lines of the poller)."""
        owned: set[int] = set()
        for line in self.output().splitlines():
            for verb in ("Assigned ", "Revoking ", "Lost "):
                if f" {verb}" in line:
                    named = {int(p) for p in re.findall(r"\[(\d+)\]", line.split(f" {verb}", 1)[1])}
                    owned = owned | named if verb == "Assigned " else owned - named
        return owned

    def lines(self, marker: str) -> int:
        return sum(1 for line in self.output().splitlines() if marker in line)

    def signal(self, sig: signal.Signals) -> None:
        os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 60) -> int | None:
        """SIGTERM (a drained stop: its last transaction commits), then SIGKILL after ``timeout_s``."""
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@dataclass(frozen=True, slots=True)
class EosVerdict:
    """One row of the exactly-once table."""

    scenario: str
    inputs: int
    outputs: int
    duplicates: int
    missing: int
    order_violations: int
    unexpected: int

    def row(self) -> str:
        return (f"| {self.scenario} | {self.inputs} | {self.outputs} | {self.duplicates} | {self.missing} | "
                f"{self.order_violations} |")


def _reader(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-judge", "enable.auto.commit": False,
                     "isolation.level": "read_committed", "auto.offset.reset": "earliest", "logger": _QUIET})


def _settled(bootstrap: str, topic: str, partitions: int) -> bool:
    """No open transaction on ``topic``: its read_committed end (last stable offset) equals its log end."""
    committed, uncommitted = _reader(bootstrap), Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-judge",
                                                           "isolation.level": "read_uncommitted",
                                                           "logger": _QUIET})
    try:
        for p in range(partitions):
            tp = TopicPartition(topic, p)
            if committed.get_watermark_offsets(tp, timeout=10)[1] != uncommitted.get_watermark_offsets(
                    tp, timeout=10)[1]:
                return False
        return True
    finally:
        committed.close()
        uncommitted.close()


END = b"__end__"
"""A sentinel produced (not transactionally) to every output partition once nothing is open: the reader is done with
a partition when it reads it (a read_committed position does not always move past a trailing commit marker)."""


def read_outputs(bootstrap: str, topic: str, partitions: int, timeout_s: float = 120) -> list[tuple[int, bytes, bytes]]:
    """Every output a read_committed reader sees, as (output partition, key, value), in each partition's order.

    Waits (up to ``timeout_s``) until no transaction is open on the topic, writes the END sentinel to every partition
    and reads each partition up to it. Call it once every consumer has stopped.
    """
    deadline = time.monotonic() + timeout_s
    while not _settled(bootstrap, topic, partitions):
        if time.monotonic() > deadline:
            raise AssertionError(f"a transaction stayed open on {topic} for {timeout_s}s")
        time.sleep(0.2)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "logger": _QUIET})
    for p in range(partitions):
        producer.produce(topic, value=END, key=END, partition=p)
    if producer.flush(30) > 0:
        raise AssertionError("the END sentinels were not acknowledged")
    reader = _reader(bootstrap)
    seen: list[tuple[int, bytes, bytes]] = []
    try:
        reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        left = set(range(partitions))
        while left:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} did not reach the END of {sorted(left)} in {timeout_s}s")
            for msg in reader.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                if msg.value() == END:
                    left.discard(msg.partition() or 0)
                else:
                    seen.append((msg.partition() or 0, msg.key() or b"", msg.value() or b""))
    finally:
        reader.close()
    return seen


def judge_outputs(scenario: str, delivered: dict[tuple[int, int], bytes],
                  outputs: list[tuple[int, bytes, bytes]]) -> EosVerdict:
    """Count duplicates, missing inputs and key-order violations of ``outputs`` against ``delivered`` inputs.

    An output's value is ``<input partition>:<input offset>:<input value>`` (eos_app.py); its key is the input's.
    """
    counts: Counter[tuple[int, int]] = Counter()
    last_of_key: dict[bytes, tuple[int, int]] = {}
    order_violations = unexpected = 0
    for _out_partition, key, value in outputs:
        part, offset, _rest = value.split(b":", 2)
        source = (int(part), int(offset))
        counts[source] += 1
        if source not in delivered or delivered[source] != key:
            unexpected += 1
        previous = last_of_key.get(key)
        if previous is not None and previous[0] == source[0] and previous[1] > source[1]:
            order_violations += 1
        last_of_key[key] = source
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    missing = sum(1 for source in delivered if source not in counts)
    return EosVerdict(scenario, len(delivered), len(outputs), duplicates, missing, order_violations, unexpected)


def assert_exactly_once(verdict: EosVerdict) -> None:
    print(f"\nexactly-once: {verdict}")
    assert verdict.inputs > 0
    assert verdict.unexpected == 0, verdict
    assert verdict.missing == 0, verdict
    assert verdict.duplicates == 0, verdict
    assert verdict.order_violations == 0, verdict


class OutputWatcher:
    """A read_committed reader of the output topic for waiting on progress (the judge reads afresh at the end)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._reader = _reader(bootstrap)
        self._reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.sources: set[tuple[int, int]] = set()

    def poll(self) -> int:
        """Take in what was committed since the last call; the number of distinct inputs with an output so far."""
        for msg in self._reader.consume(1000, 0.2):
            if msg.error() is None and msg.value():
                part, offset, _rest = (msg.value() or b"").split(b":", 2)
                self.sources.add((int(part), int(offset)))
        return len(self.sources)

    def covers(self, delivered: dict[tuple[int, int], bytes]) -> bool:
        self.poll()
        return set(delivered) <= self.sources

    def close(self) -> None:
        self._reader.close()


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout_s`` (a bound, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)
