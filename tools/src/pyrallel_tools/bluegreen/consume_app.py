"""``pyrallel consume``: a consumer app on the library for blue/green validation runs, with injectable faults.

Every completed record is logged as one JSON line (seq, key, key_seq, partition, offset, color, instance, ts,
ok) - the validator's consumer log format - *before* the completion reaches the coordinator, so a record's
line is in the file before its offset can be committed: a killed process can cause duplicates in the log,
never a committed-but-unlogged record that the validator would call lost. Records that failed every attempt
are logged with ``"ok": false`` (the consumer reached them and skipped them on purpose: not a loss).

Faults make the unhappy paths of a switch reproducible: a processing delay and a failure rate per handler
attempt, a deterministic set of records that fail every attempt (``fail_every``: the records whose seq is a
multiple of it), a delay before every commit is sent (inside the commit latency the observer sees),
and a one-shot stall of the poll loop that, longer than ``max.poll.interval.ms``, gets the member evicted.
They are set at start (CLI, ``PYRALLEL_FAULT_*``, config file) and changed at runtime with ``PUT /faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from pyrallel_consumer import (
    Completion,
    ConsumerConfig,
    ConsumerObserver,
    LifecycleState,
    Output,
    PyrallelConsumer,
    Record,
)
from pyrallel_consumer.control_server import Request, Response
from pyrallel_tools.benchmark.workloads import Workload
from pyrallel_tools.bluegreen.fault_clients import FaultInjectingClients
from pyrallel_tools.bluegreen.load_producer import parse_identity
from pyrallel_tools.bluegreen.settings_routes import add_settings_routes

log = logging.getLogger(__name__)

HANDLER_REF = "pyrallel_tools.bluegreen.consume_app:handle_sync"
"""The handler engine=process workers import."""
STATE_ENV = "PYRALLEL_CONSUME_STATE"
"""Env var naming the JSON file through which workers of engine=process see the workload and current faults."""
_WORKER_REFRESH_S = 0.2
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|s)?")
_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1e-3}


class InjectedFailureError(RuntimeError):
    """Raised by the failure-rate and fail-every faults."""


def inject_failures(record: Record, failure_rate: float, fail_every: int, rng: random.Random) -> None:
    """Raise ``InjectedFailureError`` when a fault fails this attempt: with probability ``failure_rate``, or always
    when the record is a load producer's record whose seq is a multiple of ``fail_every`` (records without a seq
    never fail this way). Called per attempt by ``ConsumeApp.handle`` and by the process workers' ``handle_sync``."""
    if failure_rate and rng.random() < failure_rate:
        raise InjectedFailureError(f"injected failure (failure_rate={failure_rate})")
    if fail_every:
        identity = parse_identity(record.value)
        if identity is not None and identity[0] % fail_every == 0:
            raise InjectedFailureError(f"injected failure (fail_every={fail_every})")


class Faults(BaseModel):
    """Fault knobs; every field may change at runtime with ``PUT /faults``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_ms: float = Field(default=0.0, ge=0, le=600_000, description="Extra processing time of every attempt.")
    failure_rate: float = Field(default=0.0, ge=0, le=1, description="Probability that an attempt raises.")
    fail_every: int = Field(
        default=0, ge=0, le=1_000_000_000,
        description="Every attempt of a record whose seq is a multiple of this raises (0 = off): the same records "
                    "fail every time, in every process, so a test knows which ones end in the exhaustion policy.",
    )
    commit_delay_ms: float = Field(
        default=0.0, ge=0, le=600_000, description="Delay before every commit is sent (counted as commit latency)."
    )
    stall_ms: float = Field(
        default=0.0, ge=0, le=3_600_000,
        description="One-shot poll loop stall: at start (after stall_after_s), and whenever a PUT sets it > 0.",
    )
    stall_after_s: float = Field(default=0.0, ge=0, le=86_400, description="When the start-up stall happens.")


@dataclasses.dataclass(frozen=True, slots=True)
class RunLimits:
    """When the app stops by itself; None means no such limit."""

    duration_s: float | None = None
    max_records: int | None = None
    """Completed records (ok or failed), duplicates included."""
    idle_timeout_s: float | None = None
    """Seconds without a completed record while ACTIVE."""


def parse_workload(spec: str) -> Workload:
    """``noop``, ``sleep:<duration>`` or ``cpu:<duration>``; a duration is e.g. 5ms, 0.5s, 200us (bare number: ms)."""
    text = spec.strip().lower()
    if text == "noop":
        return Workload("noop")
    kind, _, amount = text.partition(":")
    match = _DURATION_RE.fullmatch(amount.strip())
    if kind not in ("sleep", "cpu") or match is None:
        raise ValueError(f"workload {spec!r} must be noop, sleep:<duration> or cpu:<duration> (e.g. sleep:5ms)")
    seconds = float(match.group(1)) * _UNITS_S[match.group(2)]
    if seconds > 3600:
        raise ValueError(f"workload {spec!r}: at most one hour per record")
    return Workload(text, sleep_s=seconds) if kind == "sleep" else Workload(text, cpu_ms=seconds * 1000)


class _AppObserver(ConsumerObserver):
    """Every record's outcome, for the run log; commit latencies as the library measures them (slow-commit fault
    included). Called by the consumer on its event loop."""

    def __init__(self, on_done: Callable[[Record, Completion], None]) -> None:
        self._on_done = on_done
        self.commits = 0
        self.latency_sum_s = 0.0
        self.latency_max_s = 0.0
        self.latency_last_s: float | None = None

    def record_completed(self, record: Record, completion: Completion) -> None:
        self._on_done(record, completion)

    def commit_finished(self, latency_s: float, ok: bool) -> None:
        self.commits += 1
        self.latency_sum_s += latency_s
        self.latency_max_s = max(self.latency_max_s, latency_s)
        self.latency_last_s = latency_s

    def snapshot(self) -> dict[str, Any]:
        mean = self.latency_sum_s / self.commits if self.commits else None
        return {"count": self.commits, "last_s": self.latency_last_s, "max_s": self.latency_max_s, "mean_s": mean}


def _open_log(path: Path) -> IO[str]:
    """Line-buffered append: each line is written (not fsynced) before the record's completion is passed on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", buffering=1, encoding="utf-8")  # closed by the run that opens it


class KeepIncomplete:
    """Exhaustion policy of ``--on-exhausted keep``: a record that failed every attempt is never let go.

    It stays uncommitted (its key blocked) until this instance is paused or stopped; whoever processes the
    partition next handles it again. A bad deployment thus leaves its failures to the one rolled back to.
    """

    outcome = "failed"

    async def __call__(self, record: Record, completion: Completion) -> bool:
        return False


class ConsumeApp:
    """One consumer instance of a validation run: handle, log, inject faults, stop at the limits."""

    def __init__(self, config: ConsumerConfig, workload: str, faults: Faults, log_path: Path | None,
                 limits: RunLimits, keep_failed: bool = False, generation: int = 0,
                 output_topic: str | None = None) -> None:
        self.config = config
        self.output_topic = output_topic
        """Exactly-once runs: each handled record returns one output (its key and value) to this topic."""
        self.generation = generation
        """The deployment's generation read before the start: lifecycle commands older than it are refused."""
        self.keep_failed = keep_failed
        self.workload_spec = workload
        self._workload = parse_workload(workload)
        self.faults = faults
        self.log_path = log_path
        self.limits = limits
        self.completed_ok = 0
        self.completed_failed = 0
        self.unparsed = 0
        self.stalls = 0
        self._kafka_clients = FaultInjectingClients(lambda: self.faults.commit_delay_ms / 1000)
        self.consumer: PyrallelConsumer | None = None
        self._observer = _AppObserver(self._on_done)
        self._rng = random.Random()  # fault dice, not security
        self._log: IO[str] | None = None
        self._state_path: Path | None = None
        self._started_at = time.monotonic()

    # ---- handling ------------------------------------------------------------------------------------------

    async def handle(self, record: Record) -> list[Output] | None:
        """Handler of engine=async: faults first, then the workload; the record's output with ``--output-topic``."""
        faults = self.faults
        if faults.delay_ms:
            await asyncio.sleep(faults.delay_ms / 1000)
        inject_failures(record, faults.failure_rate, faults.fail_every, self._rng)
        await self._workload.run_async(record)
        return output_of(record, self.output_topic)

    def _on_done(self, record: Record, completion: Completion) -> None:
        if completion.ok:
            self.completed_ok += 1
        else:
            self.completed_failed += 1
        identity = parse_identity(record.value)
        if identity is None:
            self.unparsed += 1
            return
        if not completion.ok and self.keep_failed:
            return  # not handled: the record stays uncommitted and is handled again elsewhere
        if self._log is not None:
            seq, key, key_seq = identity
            self._log.write(json.dumps({
                "seq": seq, "key": key, "key_seq": key_seq, "partition": record.partition, "offset": record.offset,
                "color": self.config.color or "", "instance": self.config.instance_id, "ts": time.time(),
                "ok": completion.ok,
            }) + "\n")

    # ---- faults --------------------------------------------------------------------------------------------

    def set_faults(self, faults: Faults, changed: Iterable[str] = ()) -> None:
        self.faults = faults
        log.info("Faults now %s", faults.model_dump())
        if self.config.engine == "process":
            self._publish_worker_state()
        if "stall_ms" in changed and faults.stall_ms > 0:
            self.stall(faults.stall_ms / 1000)

    def stall(self, seconds: float) -> None:
        if self.consumer is None:
            return
        self.stalls += 1
        log.warning("Fault: stalling the poll loop for %.1fs", seconds)
        self._kafka_clients.stall(seconds)

    def _publish_worker_state(self) -> None:
        """Write the workload and handler faults where engine=process workers read them (atomically replaced)."""
        if self._state_path is None:
            fd, name = tempfile.mkstemp(prefix="pyrallel-consume-", suffix=".json")
            os.close(fd)
            self._state_path = Path(name)
            os.environ[STATE_ENV] = name  # inherited by the workers the engine spawns later
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"workload": self.workload_spec, "delay_ms": self.faults.delay_ms,
                                   "failure_rate": self.faults.failure_rate, "fail_every": self.faults.fail_every,
                                   "output_topic": self.output_topic}))
        os.replace(tmp, self._state_path)

    # ---- status --------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        metrics = dataclasses.asdict(self.consumer.metrics()) if self.consumer is not None else {}
        metrics.pop("partitions", None)
        return {
            "color": self.config.color, "instance": self.config.instance_id,
            "state": self.consumer.lifecycle.state.value if self.consumer is not None else None,
            "completed_ok": self.completed_ok, "completed_failed": self.completed_failed, "unparsed": self.unparsed,
            "elapsed_s": round(time.monotonic() - self._started_at, 3), "commit_latency": self._observer.snapshot(),
            "stalls": self.stalls, "faults": self.faults.model_dump(), "metrics": metrics,
        }

    async def _stats_route(self, request: Request) -> Response:
        request.allow_query()
        return Response(200, self.stats())

    # ---- run -----------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None,
                  on_ready: Callable[[ConsumeApp], None] | None = None) -> dict[str, Any]:
        """Run until a limit is reached, ``stop`` is set or the consumer fails; stop with a drain; summarize."""
        stop = stop or asyncio.Event()
        handler: Any = self.handle
        if self.config.engine == "process":
            self._publish_worker_state()
            handler = HANDLER_REF
        consumer = self.consumer = PyrallelConsumer(self.config, handler, observer=self._observer,
                                                    on_exhausted=KeepIncomplete() if self.keep_failed else None,
                                                    kafka_clients=self._kafka_clients)
        consumer.lifecycle.generation = self.generation
        if consumer.control_server is not None:
            add_settings_routes(consumer.control_server, "/faults", lambda: self.faults, self.set_faults,
                                lambda: {"stalls": self.stalls})
            consumer.control_server.add_route("GET", "/stats", self._stats_route)
        self._log = _open_log(self.log_path) if self.log_path is not None else None
        stall: asyncio.TimerHandle | None = None
        reason = "start failed"
        try:
            await consumer.start()
            self._started_at = time.monotonic()
            try:
                if self.faults.stall_ms:
                    stall = asyncio.get_running_loop().call_later(
                        self.faults.stall_after_s, self.stall, self.faults.stall_ms / 1000)
                if on_ready is not None:
                    on_ready(self)
                reason = await self._wait_until_done(consumer, stop)
                log.info("Stopping (%s): draining in-flight records", reason)
            finally:
                if stall is not None:
                    stall.cancel()
                await consumer.stop(drain=True)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._state_path is not None:
                with contextlib.suppress(OSError):
                    self._state_path.unlink()
        error: str | None = None
        try:
            await consumer.wait_stopped()
        except Exception as exc:  # noqa: BLE001 - whatever stopped the consumer is reported, not raised
            error = f"{type(exc).__name__}: {exc}"
        return {**self.stats(), "stop_reason": reason, "error": error}

    async def _wait_until_done(self, consumer: PyrallelConsumer, stop: asyncio.Event) -> str:
        limits = self.limits
        started = last_progress = time.monotonic()
        seen = -1
        while True:
            now = time.monotonic()
            done = self.completed_ok + self.completed_failed
            if stop.is_set():
                return "stop requested"
            if consumer.lifecycle.state is LifecycleState.STOPPED:
                return "consumer stopped"
            if limits.duration_s is not None and now - started >= limits.duration_s:
                return "duration reached"
            if limits.max_records is not None and done >= limits.max_records:
                return "max records reached"
            if done != seen or consumer.lifecycle.state is not LifecycleState.ACTIVE:
                seen, last_progress = done, now
            if limits.idle_timeout_s is not None and now - last_progress >= limits.idle_timeout_s:
                return "idle timeout"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


# ---- engine=process workers -----------------------------------------------------------------------------


class _WorkerState:
    """A worker's view of the parent's state file, re-read when it changed (checked every 0.2 s at most)."""

    checked_at = 0.0
    version: tuple[int, int] | None = None
    workload = Workload("noop")
    delay_s = 0.0
    failure_rate = 0.0
    fail_every = 0
    output_topic: str | None = None
    rng = random.Random()  # fault dice, not security

    @classmethod
    def refresh(cls) -> None:
        now = time.monotonic()
        if now - cls.checked_at < _WORKER_REFRESH_S:
            return
        cls.checked_at = now
        path = os.environ.get(STATE_ENV)
        if not path:
            return
        try:
            stat = os.stat(path)
            version = (stat.st_ino, stat.st_mtime_ns)
            if version == cls.version:
                return
            data = json.loads(Path(path).read_text())
            cls.workload = parse_workload(str(data["workload"]))
            cls.delay_s = float(data["delay_ms"]) / 1000
            cls.failure_rate = float(data["failure_rate"])
            cls.fail_every = int(data.get("fail_every", 0))
            topic = data.get("output_topic")
            cls.output_topic = str(topic) if topic else None
            cls.version = version
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("Could not read the fault state %s: %s", path, exc)


def handle_sync(record: Record) -> list[Output] | None:
    """Handler of engine=process workers: the same faults, workload and output as ``ConsumeApp.handle``."""
    _WorkerState.refresh()
    if _WorkerState.delay_s:
        time.sleep(_WorkerState.delay_s)
    inject_failures(record, _WorkerState.failure_rate, _WorkerState.fail_every, _WorkerState.rng)
    _WorkerState.workload.run_sync(record)
    return output_of(record, _WorkerState.output_topic)


def output_of(record: Record, topic: str | None) -> list[Output] | None:
    """``--output-topic``: the record's key and value as one output (exactly-once), else nothing."""
    return [Output(topic, record.value, key=record.key, headers=record.headers)] if topic else None
