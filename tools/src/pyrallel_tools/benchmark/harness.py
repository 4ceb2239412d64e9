"""The contender side of ``pyrallel bench``: what every Python contender process shares. Standard library only.

Every contender (the sequential baseline, the engines of this library, the hand-rolled peers, the published
``pyrallel-consumer`` 1.0.0 and arroyo in their own virtualenvs) is a small script run as a subprocess. Peer
scripts run under other interpreters, where this package is not installed (or is another package of the same
name), so they import this module as a top-level module: ``sys.path`` gets :data:`HARNESS_DIR_ENV` (this file's
directory). It therefore imports nothing outside the standard library.

What it provides, so that every contender does exactly the same work and is measured the same way:

* the workloads (no-op, a 5 ms sleep, about 2 ms of pure-Python CPU work) as sync and async bodies;
* :class:`Tracker`: counts handled records; throughput is measured from the first handled record to the last;
  optionally appends one fixed-width line per handled record to a log (sequence number, produce time, done
  time) from which the runner computes latencies and duplicates; the log is written with ``O_APPEND`` writes
  that survive a SIGKILL of the writer and may come from several processes;
* the command line every contender accepts, and :func:`emit`, which prints the one JSON result line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

T = TypeVar("T")

LOOPS_ENV: Final = "PYRALLEL_BENCH_LOOPS_PER_MS"
"""The calibration of :func:`burn_cpu`, handed by the runner to every process of one interpreter (the worker
processes of a contender inherit it): every process of that interpreter runs the same loop count. Interpreters
are calibrated separately (the same loop takes about 20% longer on Python 3.12 than on 3.11), so the CPU-bound
workload costs about 2 ms of CPU per record in every contender."""
HARNESS_DIR_ENV: Final = "PYRALLEL_BENCH_HARNESS_DIR"
"""Directory of this file, for peer scripts that import it as the top-level module ``harness``."""
WORKLOAD_ENV: Final = "PYRALLEL_BENCH_WORKLOAD"
LOG_ENV: Final = "PYRALLEL_BENCH_LOG"
"""Workload and log path for handlers that run in worker processes (they read them from the environment)."""
RESULT_PREFIX: Final = "PYRALLEL_BENCH_RESULT "
"""Marks the one stdout line that carries a contender's JSON result."""
LOOPS: Final = ("asyncio", "uvloop")
"""Event loops of the asyncio contenders (``--loop``)."""

SEQ_DIGITS: Final = 12
TS_DIGITS: Final = 16
LOG_LINE_BYTES: Final = SEQ_DIGITS + 2 * TS_DIGITS + 3
"""``SSSSSSSSSSSS PPPPPPPPPPPPPPPP DDDDDDDDDDDDDDDD\\n``: sequence number, produce and done time (µs since epoch)."""

WORKLOADS: Final[dict[str, tuple[float, float]]] = {
    "noop": (0.0, 0.0),
    "sleep5ms": (0.005, 0.0),
    "cpu2ms": (0.0, 2.0),
}
"""Workload name -> (seconds of sleep, milliseconds of pure-Python CPU work) per record."""


def burn_cpu(milliseconds: float) -> int:
    """About ``milliseconds`` of pure-Python work: a fixed loop count, the same in every process (see below)."""
    total = 0
    for i in range(cpu_loops(milliseconds)):
        total += i * i % 7
    return total


def cpu_loops(milliseconds: float) -> int:
    """Loop iterations :func:`burn_cpu` runs for ``milliseconds``."""
    return int(loops_per_ms() * milliseconds)


def _calibrate() -> float:
    loops = 200_000
    started = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i * i % 7
    return loops / ((time.perf_counter() - started) * 1000)


def calibrate(repeats: int = 5) -> float:
    """Loops of :func:`burn_cpu` per millisecond on this interpreter: the median of ``repeats`` measurements."""
    return statistics.median(_calibrate() for _ in range(repeats))


_calibration: list[float] = []


def loops_per_ms() -> float:
    """Calibrated once, by the first process that needs it; processes it starts inherit the value through the
    environment, so a process that happens to calibrate on a busy CPU cannot run a shorter loop."""
    if not _calibration:
        inherited = os.environ.get(LOOPS_ENV)
        value = float(inherited) if inherited else calibrate()
        os.environ[LOOPS_ENV] = repr(value)
        _calibration.append(value)
    return _calibration[0]


def check_workload(name: str) -> tuple[float, float]:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}") from None


def work_sync(sleep_s: float, cpu_ms: float) -> None:
    """A workload body for synchronous handlers: ``time.sleep`` for the I/O-bound part."""
    if sleep_s:
        time.sleep(sleep_s)
    if cpu_ms:
        burn_cpu(cpu_ms)


async def work_async(sleep_s: float, cpu_ms: float) -> None:
    """A workload body for asyncio handlers: ``asyncio.sleep`` for the I/O-bound part."""
    if sleep_s:
        await asyncio.sleep(sleep_s)
    if cpu_ms:
        burn_cpu(cpu_ms)


def run_sync(workload: str) -> None:
    """The named workload's body for synchronous contenders."""
    work_sync(*WORKLOADS[workload])


async def run_async(workload: str) -> None:
    """The named workload's body for asyncio contenders."""
    await work_async(*WORKLOADS[workload])


def parse_value(value: bytes | None) -> tuple[int, int]:
    """(sequence number, produce time in µs since epoch or 0) of a benchmark record's value.

    Values start with the zero-padded sequence number and ``|``; records produced for latency runs carry the
    produce time next: ``000000000042|1732460000123456|xxxx``.
    """
    if not value or len(value) <= SEQ_DIGITS:
        return -1, 0
    seq = int(value[:SEQ_DIGITS])
    end = SEQ_DIGITS + 1 + TS_DIGITS
    if len(value) > end and value[end:end + 1] == b"|":
        return seq, int(value[SEQ_DIGITS + 1:end])
    return seq, 0


def log_line(seq: int, produced_us: int, done_us: int) -> bytes:
    return f"{seq:0{SEQ_DIGITS}d} {produced_us:0{TS_DIGITS}d} {done_us:0{TS_DIGITS}d}\n".encode()


def open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


class Tracker:
    """Counts handled records; finished once ``limit`` were handled or ``max_seconds`` after the first one.

    The rate counts what was handled after the first observation up to the last one, so start-up and group join
    are left out for every contender alike. :meth:`done` is for contenders whose handlers run in this process
    (thread-safe); :meth:`observe` for those that only see a completion counter. A tracker made with
    ``counting=False`` counts nothing until :meth:`start_counting` (members of one group measured over one window
    once the group has settled: ``--count-on-signal``), and :meth:`end_window` ends an idle member's window.
    """

    def __init__(self, limit: int, max_seconds: float, log_path: str | None = None,
                 join_timeout_s: float = 60.0, counting: bool = True) -> None:
        self.limit = limit
        self.max_seconds = max_seconds
        self.join_timeout_s = join_timeout_s
        self.counting = counting
        self.created = time.perf_counter()
        self.first_count = self.last_count = 0
        self.first = self.last = 0.0
        self.first_ts = self.last_ts = 0.0
        self.first_cpu = self.last_cpu = 0.0
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._log_fd = open_log(log_path) if log_path else -1

    def done(self, value: bytes | None) -> None:
        """One record handled in this process (any thread)."""
        if self._log_fd >= 0:
            seq, produced = parse_value(value)
            os.write(self._log_fd, log_line(seq, produced, time.time_ns() // 1000))
        with self._lock:
            self._observe_locked(self.last_count + 1)

    def observe(self, completed: int) -> None:
        """The completion counter read ``completed``."""
        with self._lock:
            self._observe_locked(completed)

    def start_counting(self) -> None:
        """The window starts with the next record handled; the join timeout applies again from now."""
        with self._lock:
            self.counting = True
            self.created = time.perf_counter()

    def end_window(self) -> None:
        """The runner ends the window (SIGUSR2, ``--count-on-signal``) of an instance of a group that owned no
        partition when the group settled, once the others finished: it finishes at once, having counted whatever
        it handled since the window started (nothing when it stayed idle; then it reports no CPU either)."""
        with self._lock:
            if self.finished.is_set():
                return
            if self.first_count:
                self._finish(time.time())
            else:
                self.finished.set()

    def _observe_locked(self, completed: int) -> None:
        if self.finished.is_set() or completed <= self.last_count:
            return
        if not self.counting:
            self.last_count = completed
            return
        now = time.perf_counter()
        if not self.first_count:
            self.first_count, self.first, self.first_ts, self.first_cpu = completed, now, time.time(), _cpu()
        self.last_count, self.last = completed, now
        if completed >= self.limit or now - self.first >= self.max_seconds:
            self._finish(time.time())

    def _finish(self, last_ts: float) -> None:
        self.last_ts, self.last_cpu = last_ts, _cpu()
        self.finished.set()

    def check(self) -> None:
        """For loops between batches: raise TimeoutError when nothing was handled within the join timeout; finish
        when ``max_seconds`` passed since the first record even if no record came since (the topic ran dry)."""
        now = time.perf_counter()
        if not self.first_count:
            if now - self.created > self.join_timeout_s:
                raise TimeoutError(f"no record handled within {self.join_timeout_s:.0f} s of the start")
        elif now - self.first > self.max_seconds + 1 and not self.finished.is_set():
            self._finish(self.first_ts + (self.last - self.first))

    def result(self, contender: str, **extra: Any) -> dict[str, Any]:
        counted = self.last_count - self.first_count if self.first_count else 0  # nothing before the window
        seconds = self.last - self.first
        if not self.last_ts:
            self.last_ts = self.first_ts + seconds
        return {
            "contender": contender,
            "handled": self.last_count,
            "counted": counted,
            "seconds": round(seconds, 4),
            "records_per_s": round(counted / seconds, 1) if counted > 0 and seconds > 0 else 0.0,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "cpu_self_s": round(self.last_cpu - self.first_cpu, 4) if self.last_cpu else None,
            **extra,
        }

    def close(self) -> None:
        if self._log_fd >= 0:
            os.close(self._log_fd)
            self._log_fd = -1


def _cpu() -> float:
    """User + system CPU seconds of this process, all threads (not its children), to the microsecond."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LogFollower(threading.Thread):
    """Feeds a :class:`Tracker` the number of lines of a log that worker processes append to, every 5 ms: for
    contenders whose handlers run in processes that cannot count for the parent."""

    def __init__(self, path: str, tracker: Tracker) -> None:
        super().__init__(name="log-follower", daemon=True)
        self.path, self.tracker = path, tracker

    def run(self) -> None:
        while not self.tracker.finished.is_set():
            with contextlib.suppress(FileNotFoundError):
                self.tracker.observe(os.stat(self.path).st_size // LOG_LINE_BYTES)
            time.sleep(0.005)


class WorkerLog:
    """In a worker process: run the workload named by :data:`WORKLOAD_ENV` and append the record to the log
    named by :data:`LOG_ENV` (if any). One instance per process, opened on first use."""

    def __init__(self) -> None:
        self.workload = os.environ.get(WORKLOAD_ENV, "noop")
        check_workload(self.workload)
        path = os.environ.get(LOG_ENV)
        self.fd = open_log(path) if path else -1

    def handle(self, value: bytes | None) -> None:
        run_sync(self.workload)
        if self.fd >= 0:
            seq, produced = parse_value(value)
            os.write(self.fd, log_line(seq, produced, time.time_ns() // 1000))


_worker_log: list[WorkerLog] = []


def handle_in_worker(value: bytes | None) -> None:
    """The handler body of contenders whose handlers run in worker processes."""
    if not _worker_log:
        _worker_log.append(WorkerLog())
    _worker_log[0].handle(value)


def export_worker_env(args: ContenderArgs) -> None:
    """Before worker processes start: what :func:`handle_in_worker` reads there."""
    os.environ[WORKLOAD_ENV] = args.workload
    if args.log:
        os.environ[LOG_ENV] = args.log
    loops_per_ms()


@dataclass(frozen=True, slots=True)
class ContenderArgs:
    name: str
    bootstrap: str
    topic: str
    group: str
    workload: str
    limit: int
    max_seconds: float
    ordering: str
    concurrency: int
    log: str | None
    session_timeout_ms: int
    join_timeout_s: float
    kafka: tuple[tuple[str, str], ...] = ()
    """Extra librdkafka properties (``--kafka NAME=VALUE``), for contenders built on confluent-kafka."""
    count_on_signal: bool = False
    """Count nothing until SIGUSR1 (``--count-on-signal``; the async and process contenders)."""
    loop: str = "asyncio"
    """The event loop of asyncio contenders (``--loop``): the standard library's, or uvloop's."""


def parse_args(argv: Sequence[str] | None = None) -> ContenderArgs:
    """The command line every contender accepts (the runner builds it)."""
    parser = argparse.ArgumentParser(description="One contender of pyrallel bench; prints one JSON result line.")
    parser.add_argument("--name", required=True, help="Contender name in the results.")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--limit", type=int, required=True, help="Stop after this many handled records.")
    parser.add_argument("--max-seconds", type=float, required=True,
                        help="Stop this many seconds after the first handled record.")
    parser.add_argument("--ordering", default="key", choices=["key", "partition", "unordered"])
    parser.add_argument("--concurrency", type=int, default=1000,
                        help="Records in flight at most (threads, tasks, batch size, or worker processes).")
    parser.add_argument("--log", default=None, help="Append one line per handled record to this file.")
    parser.add_argument("--session-timeout-ms", type=int, default=45_000)
    parser.add_argument("--join-timeout-s", type=float, default=60.0,
                        help="Give up when no record was handled this long after the start.")
    parser.add_argument("--kafka", action="append", default=[], metavar="NAME=VALUE",
                        help="An extra librdkafka property (repeatable).")
    parser.add_argument("--count-on-signal", action="store_true",
                        help="Count nothing until SIGUSR1: the runner sends it to every member of a group once the "
                             "group has settled, so their windows start together; SIGUSR2 ends the window (a member "
                             "owning no partition; pyrallel_tools contenders only).")
    parser.add_argument("--loop", default="asyncio", choices=LOOPS,
                        help="The event loop of asyncio contenders (uvloop must be installed for 'uvloop').")
    ns = parser.parse_args(argv)
    kafka = []
    for item in ns.kafka:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--kafka expects NAME=VALUE, got {item!r}")
        kafka.append((name, value))
    return ContenderArgs(
        name=ns.name, bootstrap=ns.bootstrap, topic=ns.topic, group=ns.group, workload=ns.workload,
        limit=ns.limit, max_seconds=ns.max_seconds, ordering=ns.ordering, concurrency=ns.concurrency,
        log=ns.log, session_timeout_ms=ns.session_timeout_ms, join_timeout_s=ns.join_timeout_s, kafka=tuple(kafka),
        count_on_signal=ns.count_on_signal, loop=ns.loop,
    )


def run_on_loop(main: Callable[[], Coroutine[Any, Any, T]], loop: str) -> T:
    """``asyncio.run(main())`` on the event loop named by ``--loop``: for the asyncio contenders' entry points.
    uvloop is imported only when asked for, so peers' environments without it run the default loop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def new_tracker(args: ContenderArgs) -> Tracker:
    loops_per_ms()
    return Tracker(args.limit, args.max_seconds, args.log, args.join_timeout_s, counting=not args.count_on_signal)


def wait_finished(tracker: Tracker, poll_s: float = 0.05) -> None:
    """Block until the tracker finished (see :meth:`Tracker.check`)."""
    while not tracker.finished.wait(poll_s):
        tracker.check()


async def wait_finished_async(tracker: Tracker, poll_s: float = 0.005) -> None:
    """:func:`wait_finished` for an event loop, polling (the tracker may be fed from other threads)."""
    while not tracker.finished.is_set():
        tracker.check()
        await asyncio.sleep(poll_s)


def consumer_conf(args: ContenderArgs) -> dict[str, Any]:
    """librdkafka settings of the contenders built on a plain confluent-kafka consumer: manual commits."""
    return {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": args.session_timeout_ms,
        **dict(args.kafka),
    }


def run_contender(body: Callable[[ContenderArgs], dict[str, Any] | None], argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run ``body`` and print its result (unless it printed it itself with :func:`emit`,
    before a slow shutdown, and returned None), or the error as the result; return the exit code."""
    args = parse_args(argv)
    try:
        result = body(args)
        if result is not None:
            emit(result)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the contender's error in the results
        fail(args.name, exc)
        return 1
    return 0


def emit(result: dict[str, Any]) -> None:
    """Print the contender's result line (and flush: the process may be ended right after)."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def fail(name: str, error: BaseException | str) -> None:
    emit({"contender": name, "error": str(error) or type(error).__name__})
