"""Load producer of blue/green validation runs: numbered records at a fixed rate, and a log of what was acked.

Every value is a JSON object ``{"seq", "key", "key_seq", "payload"}``: ``seq`` is global, ``key_seq`` counts
per key, so the validator can tell loss, duplicates and per-key order from the consumers' logs alone (a Kafka
Connect FileStreamSink file of the raw values works too). Only *acknowledged* sends are logged, one JSON
line each (seq, key, key_seq, partition, offset, ts): a record the broker never confirmed may or may not be
in the topic, so it must not count as produced. The idempotent producer keeps retries from duplicating or
reordering records within a partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import CollectorRegistry, Counter, start_http_server
from pydantic import BaseModel, ConfigDict, Field

from pyrallel_consumer import LibrdkafkaLog
from pyrallel_consumer.control_server import HttpServer
from pyrallel_tools.bluegreen.settings_routes import add_settings_routes

log = logging.getLogger(__name__)

_MAX_BATCH = 1000
"""Most records produced in one go before the loop yields (keeps the HTTP server responsive at high rates)."""
_FLUSH_TIMEOUT_S = 30.0
_QUEUE_FULL_WAIT_S = 0.01


class LoadSettings(BaseModel):
    """The knobs that may change during a run (file, env, CLI at start; ``PUT /config`` while running)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=100.0, gt=0, le=1_000_000, description="Records per second.")
    size: int = Field(default=256, ge=0, le=10 * 1_048_576,
                      description="Bytes of every value (the JSON envelope grows past it when it is small).")


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What to produce where; fixed for a run."""

    bootstrap_servers: str
    topic: str
    log_path: Path
    keys: int = 100
    count: int | None = None
    duration_s: float | None = None
    seed: int | None = None
    kafka: tuple[tuple[str, str], ...] = ()
    control_port: int | None = None
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        if self.count is None and self.duration_s is None:
            raise ValueError("a load run needs a count, a duration or both, so that it ends by itself")
        if self.keys < 1:
            raise ValueError("keys must be >= 1")


@dataclass(frozen=True, slots=True)
class LoadSummary:
    attempted: int
    acked: int
    errors: int
    unacked: int
    """Sent but neither acked nor failed when the final flush gave up: they may be in the topic."""
    elapsed_s: float
    control_url: str | None
    metrics_url: str | None

    def to_dict(self) -> dict[str, Any]:
        rate = self.acked / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return {"attempted": self.attempted, "acked": self.acked, "errors": self.errors, "unacked": self.unacked,
                "elapsed_s": round(self.elapsed_s, 3), "acked_per_s": round(rate, 1)}


def _open_log(path: Path) -> IO[str]:
    """Line-buffered append: a line reaches the file when its record is acked, even if the process dies later."""
    return open(path, "a", buffering=1, encoding="utf-8")  # closed by the run that opens it


def parse_identity(value: bytes | None) -> tuple[int, str, int] | None:
    """(seq, key, key_seq) of a value ``record_value`` made; None for anything else."""
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    seq, key, key_seq = data.get("seq"), data.get("key"), data.get("key_seq")
    if type(seq) is not int or type(key) is not str or type(key_seq) is not int:
        return None
    return seq, key, key_seq


def record_value(seq: int, key: str, key_seq: int, size: int, rng: random.Random) -> bytes:
    """The JSON value, padded with random hex to ``size`` bytes (or just the envelope when that is larger)."""
    head = f'{{"seq":{seq},"key":{json.dumps(key)},"key_seq":{key_seq},"payload":"'
    pad = max(0, size - len(head) - 2)
    return (head + rng.randbytes((pad + 1) // 2).hex()[:pad] + '"}').encode()


class LoadProducer:
    """Produces ``plan`` at ``settings.rate``; the rate and size may be changed while it runs."""

    def __init__(self, plan: LoadPlan, settings: LoadSettings) -> None:
        self.plan = plan
        self.settings = settings
        self._rng = random.Random(plan.seed)  # the load's shape, not security
        self._key_names = [f"k{i}" for i in range(plan.keys)]
        self._key_seqs = [0] * plan.keys
        self._attempted = 0
        self._acked = 0
        self._errors = 0
        self._rate_changed = True
        self._registry = CollectorRegistry()
        self._sent_total = Counter("pyrallel_load_records_sent", "Records the broker acknowledged.",
                                   registry=self._registry)
        self._errors_total = Counter("pyrallel_load_send_errors", "Records whose send failed.",
                                     registry=self._registry)
        self._log: IO[str] | None = None
        self.server: HttpServer | None = None
        self.control_url: str | None = None
        self.metrics_url: str | None = None

    @property
    def registry(self) -> CollectorRegistry:
        return self._registry

    def counters(self) -> dict[str, int]:
        return {"attempted": self._attempted, "acked": self._acked, "errors": self._errors}

    def update(self, settings: LoadSettings, _changed: Iterable[str] = ()) -> None:
        if settings.rate != self.settings.rate:
            self._rate_changed = True
        log.info("Load settings: rate %.1f/s, size %d bytes", settings.rate, settings.size)
        self.settings = settings

    async def run(self, stop: asyncio.Event | None = None, on_ready: Callable[[LoadProducer], None] | None = None,
                  ) -> LoadSummary:
        """Produce until the count or the duration is reached, or ``stop`` is set; then wait for the acks."""
        stop = stop or asyncio.Event()
        conf: dict[str, Any] = {"bootstrap.servers": self.plan.bootstrap_servers, "linger.ms": 5,
                                "logger": LibrdkafkaLog("pyrallel_tools.librdkafka.load_producer")}
        conf.update(dict(self.plan.kafka))
        conf["enable.idempotence"] = True
        producer = Producer(conf)
        metrics_server = None
        if self.plan.control_port is not None:
            self.server = HttpServer("127.0.0.1", self.plan.control_port, name="load producer")
            add_settings_routes(self.server, "/config", lambda: self.settings, self.update, self.counters)
            await self.server.start()
            self.control_url = self.server.url
        if self.plan.metrics_port is not None:
            metrics_server, _thread = start_http_server(self.plan.metrics_port, "127.0.0.1", self._registry)
            self.metrics_url = f"http://127.0.0.1:{metrics_server.server_port}/metrics"
        started = time.monotonic()
        self._log = _open_log(self.plan.log_path)
        try:
            if on_ready is not None:
                on_ready(self)
            await self._send_loop(producer, stop, started)
            unacked = await self._flush(producer)
        finally:
            self._log.close()
            self._log = None
            if self.server is not None:
                await self.server.close()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
        summary = LoadSummary(self._attempted, self._acked, self._errors, unacked, time.monotonic() - started,
                              self.control_url, self.metrics_url)
        log.info("Load run finished: %s", summary.to_dict())
        return summary

    async def _send_loop(self, producer: Producer, stop: asyncio.Event, started: float) -> None:
        plan = self.plan
        deadline = started + plan.duration_s if plan.duration_s is not None else None
        base_time, base_count = started, 0
        while not stop.is_set():
            now = time.monotonic()
            if (plan.count is not None and self._attempted >= plan.count) or (deadline is not None and now >= deadline):
                return
            if self._rate_changed:  # pace from here on, without catching up on the old rate's schedule
                self._rate_changed = False
                base_time, base_count = now, self._attempted
            rate = self.settings.rate
            due = base_count + int((now - base_time) * rate) + 1 - self._attempted
            if plan.count is not None:
                due = min(due, plan.count - self._attempted)
            full = False
            for _ in range(min(due, _MAX_BATCH)):
                if not self._send_one(producer):
                    full = True
                    break
            producer.poll(0)
            if full:
                await asyncio.sleep(_QUEUE_FULL_WAIT_S)
            elif due > _MAX_BATCH:
                await asyncio.sleep(0)
            else:
                next_at = base_time + (self._attempted - base_count) / rate
                await asyncio.sleep(min(max(next_at - time.monotonic(), 0.0), 0.05))

    def _send_one(self, producer: Producer) -> bool:
        """Produce the next record; False when the local queue is full (retried on the next tick)."""
        k = self._rng.randrange(self.plan.keys)
        seq, key, key_seq = self._attempted, self._key_names[k], self._key_seqs[k]
        value = record_value(seq, key, key_seq, self.settings.size, self._rng)
        try:
            producer.produce(self.plan.topic, key=key.encode(), value=value,
                             on_delivery=lambda err, msg: self._delivered(err, msg, seq, key, key_seq))
        except BufferError:  # nothing was taken: seq and key_seq are used by the next attempt
            return False
        except KafkaException as exc:  # refused before sending (e.g. too large): a failed send
            self._failed(seq, exc.args[0] if exc.args else exc)
        self._key_seqs[k] += 1
        self._attempted += 1
        return True

    def _delivered(self, err: KafkaError | None, msg: Message, seq: int, key: str, key_seq: int) -> None:
        if err is not None:
            self._failed(seq, err)
            return
        self._acked += 1
        self._sent_total.inc()
        if self._log is not None:
            self._log.write(json.dumps({"seq": seq, "key": key, "key_seq": key_seq, "partition": msg.partition(),
                                        "offset": msg.offset(), "ts": time.time()}) + "\n")

    def _failed(self, seq: int, error: object) -> None:
        self._errors += 1
        self._errors_total.inc()
        if self._errors <= 5:
            log.warning("Send of seq %d failed: %s", seq, error)

    async def _flush(self, producer: Producer) -> int:
        """Serve delivery reports until every send is settled or the flush timeout passes; the rest is unacked."""
        deadline = time.monotonic() + _FLUSH_TIMEOUT_S
        while len(producer) and time.monotonic() < deadline:
            producer.poll(0)
            await asyncio.sleep(0.01)
        with contextlib.suppress(KafkaException):
            producer.poll(0)
        unacked = len(producer)
        if unacked:
            log.warning("%d record(s) were neither acked nor failed after %.0fs", unacked, _FLUSH_TIMEOUT_S)
        return int(unacked)
