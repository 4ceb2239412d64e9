"""The records of a ``pyrallel bench`` run: pre-produced keyed topics, and production at a fixed rate.

The runner (:mod:`pyrallel_tools.benchmark.runner`) and ``pyrallel bench --profile``
(:mod:`pyrallel_tools.benchmark.profiling`) prepare their topics here from the main thread. The rate-limited
runs produce at a fixed rate, each value carrying its produce time: the latency run from the main thread, the
SIGKILL/restart run from a :class:`RateProducer` thread while the contender is killed and restarted.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import confluent_kafka
from confluent_kafka import Producer

from pyrallel_tools.benchmark import harness
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.topics import create_topic, produce_keyed

log = logging.getLogger(__name__)


def prepared_topic(bootstrap: str, label: str, records: int, keys: int, partitions: int,
                   value_size: int = 64) -> str:
    """A new topic ``bench-<label>-<random>`` holding ``records`` records keyed round-robin over ``keys`` keys, each
    value its sequence number and ``value_size`` bytes of padding (:func:`produce_keyed`)."""
    topic = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions)
    if records:
        produce_keyed(bootstrap, topic, records, keys=keys, value_size=value_size)
    log.info("Topic %s: %d records, %d keys, %d partitions, values of %d bytes", topic, records, keys, partitions,
             value_size + harness.SEQ_DIGITS + 1)
    return topic


def produce_at_rate(bootstrap: str, topic: str, rate: int, seconds: float, keys: int, start_seq: int) -> int:
    """Produce ``rate`` records per second for ``seconds``, each value carrying its produce time (µs since the
    epoch, see :func:`harness.parse_value`); return the number produced, every one acknowledged by the broker (its
    delivery report): LocalKafkaError when one failed or was left unflushed, so the sequence numbers
    ``start_seq`` onwards are exactly the records a run must handle.

    The schedule starts once the first record was delivered: a new producer holds its first records until it has
    connected and, being idempotent, got its producer id (0.5 s when its first try came before the connection).
    Records produced on schedule meanwhile would reach the consumer as one burst, and the records after it would
    queue behind the burst's keys: measured latency of the producer's start, not of the consumer."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True})
    count = int(rate * seconds)
    pad = b"x" * 32
    errors: list[str] = []

    def on_delivery(err: confluent_kafka.KafkaError | None, _msg: confluent_kafka.Message) -> None:
        if err is not None and len(errors) < 5:
            errors.append(str(err))

    started = time.monotonic()
    for i in range(count):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        seq = start_seq + i
        value = f"{seq:0{harness.SEQ_DIGITS}d}|{time.time_ns() // 1000:0{harness.TS_DIGITS}d}|".encode() + pad
        producer.produce(topic, value=value, key=f"k{seq % keys}".encode(), on_delivery=on_delivery)
        producer.poll(0)
        if i == 0:
            if producer.flush(30):
                raise LocalKafkaError(f"Producing to {topic!r}: the first record was not delivered within 30 s")
            started = time.monotonic() - 1 / rate  # the second record is due now
    remaining = producer.flush(30)
    if remaining or errors:
        raise LocalKafkaError(f"Producing to {topic!r} at {rate}/s: {remaining} records left unflushed, delivery "
                              f"errors: {'; '.join(errors) or 'none'}")
    return count


class RateProducer(threading.Thread):
    """:func:`produce_at_rate` in the background; ``error`` says what went wrong, if anything."""

    def __init__(self, bootstrap: str, topic: str, rate: int, seconds: float, keys: int, start_seq: int) -> None:
        super().__init__(name="rate-producer", daemon=True)
        self.args = (bootstrap, topic, rate, seconds, keys, start_seq)
        self.error = ""

    def run(self) -> None:
        try:
            produce_at_rate(*self.args)
        except (LocalKafkaError, confluent_kafka.KafkaException, BufferError) as exc:
            self.error = f"producing at a fixed rate failed: {exc}"
