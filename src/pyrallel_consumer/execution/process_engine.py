"""ProcessExecutionEngine: a supervised pool of worker processes for CPU-bound synchronous handlers.

Why it is built this way:

* Workers are started with the ``spawn`` context: the parent runs threads (librdkafka, the log listener), and
  forking a threaded process can deadlock the child.
* Records never get pickled. Each work item is encoded once with msgpack when it is submitted (which also gives
  its size for ``max_item_bytes``) and written, in micro-batches of up to ``ipc_batch_size`` items, to the
  worker's own pipe; completions come back batched the same way. A pipe per worker tells the parent exactly
  which items each worker holds, which is what supervision needs.
* The parent side runs entirely on the event loop that called ``start()`` (``add_reader``/``add_writer`` on
  non-blocking pipe ends, process sentinels for deaths), so completions are delivered there without locks and
  the loop never blocks on a full pipe.
* Every worker publishes the item it is running and when that attempt started in a small shared-memory slot.
  The parent kills a worker whose attempt outlives ``timeout_s`` (the only way to stop pure Python CPU code),
  and when a worker dies it knows which item was running: only that item is charged an attempt, the items
  queued behind it are re-queued for free. A worker that dies between items charges the last item it started
  (or the next it would run), so a crash that repeats cannot re-queue a record for ever.
* Worker log records go through a ``QueueHandler`` in the worker, over the same pipe, to a ``QueueListener``
  in the parent that hands them to the parent's loggers: whole records, never interleaved half-lines. A pipe
  per worker is used instead of a shared ``multiprocessing.Queue`` because a worker killed while holding that
  queue's shared lock would silence every other worker.

Spawned workers import the parent's ``__main__`` module (the usual ``multiprocessing`` rule: guard the entry
point with ``if __name__ == "__main__":``) and the handler by its module and qualified name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import inspect
import logging
import logging.handlers
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import queue
import random
import re
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any, Final

import msgpack

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.execution.engine import (
    Completion,
    CompletionCallback,
    EngineError,
    ExecutionEngine,
    HandlerTimeoutError,
    RetryPolicy,
    WorkItem,
    describe_error,
)
from pyrallel_consumer.record import Record

log = logging.getLogger(__name__)

SyncHandler = Callable[[Record], None]
Slot = ctypes.Array[ctypes.c_double]
"""Shared memory of one worker: [id of the running item or -1, time.monotonic() when its attempt started,
id of the last item it started or -1]."""

# parent -> worker messages
_WORK: Final = 0
_STOP: Final = 1
# worker -> parent messages
_READY: Final = 0
_FATAL: Final = 1
_DONE: Final = 2
_LOG: Final = 3

_EXIT_FLUSHER_FAILED: Final = 70
_UNICODE_ERRORS: Final = "backslashreplace"
"""Lone surrogates (an undecodable file name in an error message) are escaped, not a reason to lose a message."""

_STARTUP_TIMEOUT_S: Final = 120.0
_STOP_GRACE_S: Final = 5.0
_FLUSH_INTERVAL_S: Final = 0.005
_READ_CHUNK: Final = 1 << 18
_MIN_BATCH_BYTES: Final = 4 << 20
_MAX_RESPAWN_DELAY_S: Final = 30.0
_MAX_LOG_CHARS: Final = 1 << 20
_LOG_FIELDS: Final = (
    "name", "msg", "levelno", "levelname", "pathname", "filename", "module", "lineno", "funcName",
    "created", "msecs", "relativeCreated", "thread", "threadName", "processName", "process",
)
_HANDLER_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_packer = msgpack.Packer()


class RecordTooLargeError(ValueError):
    """A record's msgpack form is larger than ``max_item_bytes``; it is failed without reaching a worker."""


class WorkerDiedError(RuntimeError):
    """The worker process running an attempt died (crash, ``os._exit``, SIGKILL, out of memory)."""


# ---- handler references -----------------------------------------------------------------------------------


def handler_reference(handler: object) -> str:
    """``"module:qualname"`` of a handler that worker processes can import; EngineError for anything else."""
    if isinstance(handler, str):
        if not _HANDLER_REF.fullmatch(handler):
            raise EngineError(f"handler string {handler!r} must look like 'package.module:function'")
        return handler
    if inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler):
        raise EngineError(
            f"{handler!r} is an async function; the process engine runs synchronous handlers "
            "def handle(record) -> None (use engine='async' for async handlers)"
        )
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None)
    if not callable(handler) or not isinstance(module, str) or not isinstance(qualname, str):
        raise EngineError(
            f"{handler!r} is not a handler function; pass a top-level def handle(record) or 'module:function'"
        )
    ref = f"{module}:{qualname}"
    if "<" in qualname:
        raise EngineError(
            f"handler {ref} cannot be imported by worker processes (a lambda or a nested function); "
            "define it at the top level of a module"
        )
    try:
        resolved = _resolve(ref)
    except (ImportError, AttributeError, TypeError) as exc:
        raise EngineError(f"handler {ref} cannot be imported by worker processes: {exc}") from exc
    if resolved is not handler:
        raise EngineError(f"handler {ref} cannot be imported by worker processes: that name is another object")
    return ref


def _resolve(ref: str) -> Callable[..., object]:
    module_name, _, qualname = ref.partition(":")
    target: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{ref} is not callable")
    return target


def _load_handler(ref: str) -> Callable[..., object]:
    handler = _resolve(ref)
    if inspect.iscoroutinefunction(handler):
        raise TypeError(
            f"{ref} is an async function; the process engine runs synchronous handlers (use engine='async')"
        )
    return handler


def encode_record(item_id: int, record: Record) -> bytes:
    """The msgpack form of one work item: what crosses the pipe and what ``max_item_bytes`` limits."""
    payload: bytes = msgpack.packb(
        (item_id, record.topic, record.partition, record.offset, record.key, record.value, record.headers,
         record.timestamp)
    )
    return payload


def decode_record(fields: tuple[Any, ...]) -> Record:
    """The record of an :func:`encode_record` payload unpacked with ``use_list=False, raw=False``."""
    return Record(*fields[1:])


# ---- worker process ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _WorkerSpec:
    handler_ref: str
    log_levels: dict[str, int]
    max_message_bytes: int
    flush_every: int


class _Channel:
    """Worker side of the two pipes: a msgpack stream in, a msgpack stream out (shared with log records)."""

    def __init__(self, inbox_fd: int, outbox_fd: int, max_message_bytes: int) -> None:
        self._in = inbox_fd
        self._out = outbox_fd
        self._poll = select.poll()  # not select(): an inherited fd number may be >= FD_SETSIZE (1024)
        self._poll.register(inbox_fd, select.POLLIN)
        self._unpacker = msgpack.Unpacker(use_list=False, raw=False, max_buffer_size=max_message_bytes + _READ_CHUNK)
        self._lock = threading.Lock()

    def send(self, message: object) -> None:
        view = memoryview(msgpack.packb(message, unicode_errors=_UNICODE_ERRORS))
        with self._lock:  # handler threads may log while the main thread reports completions
            while view:
                view = view[os.write(self._out, view) :]

    def receive(self, block: bool) -> Any:
        """The next message; None when ``block`` is false and nothing has arrived. EOFError once the parent is gone."""
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                pass
            if not block and not self._poll.poll(0):
                return None
            data = os.read(self._in, _READ_CHUNK)
            if not data:
                raise EOFError("the parent closed the pipe")
            self._unpacker.feed(data)


class _PipeLogHandler(logging.handlers.QueueHandler):
    """QueueHandler whose queue is the worker's pipe: prepare() flattens the record, enqueue() ships it."""

    def __init__(self, channel: _Channel) -> None:
        logging.Handler.__init__(self)
        self._channel = channel

    def enqueue(self, record: logging.LogRecord) -> None:
        fields = {name: getattr(record, name, None) for name in _LOG_FIELDS}
        fields["msg"] = str(fields["msg"])[:_MAX_LOG_CHARS]
        self._channel.send((_LOG, fields))


def _worker_main(spec: _WorkerSpec, inbox: Connection[Any, Any], outbox: Connection[Any, Any], slot: Slot) -> None:
    """Entry point of a worker process: load the handler, report ready (or why not), then serve work items."""
    # Ctrl-C and SIGTERM (systemd signals the whole control group) are for the parent, which drains and then
    # stops the workers itself; the parent watch and the parent's SIGKILL still end them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, name="pyrallel-parent-watch", daemon=True).start()
    channel = _Channel(inbox.fileno(), outbox.fileno(), spec.max_message_bytes)
    root = logging.getLogger()
    root.handlers[:] = [_PipeLogHandler(channel)]
    for name, level in spec.log_levels.items():
        logging.getLogger(name or None).setLevel(level)
    try:
        handler = _load_handler(spec.handler_ref)
    except BaseException as exc:  # noqa: BLE001 - whatever breaks the import is reported to start()
        channel.send((_FATAL, "{}: {}".format(*_describe(exc))))
        return
    channel.send((_READY,))
    try:
        _serve(handler, channel, slot, spec.flush_every)
    except (EOFError, BrokenPipeError):
        return  # the parent is gone: nobody is left to report to


def _exit_with_parent() -> None:
    """A worker must not outlive a parent that was killed: a stuck handler would otherwise run on for ever."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


class _Outbox:
    """Completions waiting to be sent, in batches. The main thread sends a full batch itself; a flusher thread
    sends what waited ``_FLUSH_INTERVAL_S``, so a quick result never waits behind a long handler call (and is
    rarely lost when a hung worker gets killed)."""

    def __init__(self, channel: _Channel, flush_every: int) -> None:
        self._channel = channel
        self._flush_every = flush_every
        self._lock = threading.Lock()
        self._results: list[tuple[Any, ...]] = []
        self._waiting = threading.Event()

    def add(self, result: tuple[Any, ...]) -> None:
        with self._lock:
            self._results.append(result)
            count = len(self._results)
        if count >= self._flush_every:
            self.flush()
        elif count == 1:
            self._waiting.set()

    def flush(self) -> None:
        with self._lock:
            results, self._results = self._results, []
        if results:
            self._channel.send((_DONE, results))

    def run_flusher(self) -> None:
        try:
            while True:
                self._waiting.wait()
                time.sleep(_FLUSH_INTERVAL_S)
                self._waiting.clear()  # before the swap: a result added after it sets the event again
                self.flush()
        except OSError:
            return  # the parent is gone
        except BaseException:  # results it dropped must be re-run: exit, so the parent re-queues them
            log.critical("The result flusher failed; worker process %d exits", os.getpid(), exc_info=True)
            os._exit(_EXIT_FLUSHER_FAILED)


def _serve(handler: Callable[..., object], channel: _Channel, slot: Slot, flush_every: int) -> None:
    """Run items in arrival order; report completions in batches, and always before waiting for more work."""
    outbox = _Outbox(channel, flush_every)
    threading.Thread(target=outbox.run_flusher, name="pyrallel-flusher", daemon=True).start()
    todo: deque[tuple[Any, ...]] = deque()
    while True:
        if not todo:
            outbox.flush()
        message = channel.receive(block=not todo)
        if message is not None:
            if message[0] == _STOP:
                return
            todo.extend(message[1])
            continue
        outbox.add(_attempt(handler, todo.popleft(), slot))


def _attempt(handler: Callable[..., object], fields: tuple[Any, ...], slot: Slot) -> tuple[Any, ...]:
    """One handler call: ``(item_id,)`` on success, ``(item_id, error_type, message)`` on failure."""
    item_id = fields[0]
    slot[2] = item_id
    slot[1] = time.monotonic()
    slot[0] = item_id
    try:
        handler(decode_record(fields))
    except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit or KeyboardInterrupt is a failed attempt
        return (item_id, *_describe(exc))
    finally:
        slot[0] = -1.0
    return (item_id,)


def _describe(exc: BaseException) -> tuple[str, str]:
    """:func:`describe_error` that cannot fail: an exception whose ``__str__`` raises must not kill the worker."""
    try:
        return describe_error(exc)
    except BaseException:  # noqa: BLE001 - whatever str() raises, the attempt is still reported
        return type(exc).__name__, f"<the {type(exc).__name__} could not be formatted as text>"


# ---- parent side ------------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Item:
    item_id: int
    payload: bytes
    submitted: float
    attempts: int = 0
    retry: asyncio.TimerHandle | None = None


class _Worker:
    """The parent's view of one worker process and of the items it holds."""

    def __init__(self, process: SpawnProcess, pid: int, to_worker: Connection[Any, Any],
                 from_worker: Connection[Any, Any], slot: Slot, task_limit: int, exited: asyncio.Future[None]) -> None:
        self.process = process
        self.pid = pid
        self.to_worker = to_worker
        self.from_worker = from_worker
        self.out_fd = to_worker.fileno()
        self.in_fd = from_worker.fileno()
        os.set_blocking(self.out_fd, False)
        os.set_blocking(self.in_fd, False)
        self.slot = slot
        self.unpacker = msgpack.Unpacker(use_list=False, raw=False)
        self.outbuf = bytearray()
        self.held: dict[int, _Item] = {}
        self.assigned = 0
        self.task_limit = task_limit
        self.ready = False
        self.retiring = False  # gets no more work: recycled, killed, or the engine is stopping
        self.stop_sent = False
        self.stop_timer: asyncio.TimerHandle | None = None  # kills it if STOP does not end it in time
        self.reported = False  # delivered a result: it ran items, so it is not broken from the start
        self.timed_out: int | None = None  # the item whose attempt outlived the timeout; the worker was killed
        self.fatal: str | None = None
        self.exited = exited

    def running(self) -> tuple[int, float] | None:
        """(item id, attempt start) from the shared slot; None between items or on a torn read."""
        item_id = self.slot[0]
        if item_id < 0:
            return None
        started = self.slot[1]
        if self.slot[0] != item_id:
            return None
        return int(item_id), started

    def last_started(self) -> int:
        """Id of the last item it started (-1 for none); read after its death, when nothing writes the slot."""
        return int(self.slot[2])

    def close(self) -> None:
        self.to_worker.close()
        self.from_worker.close()


class _ForwardToParentLoggers(logging.Handler):
    """Hands a worker's record to the parent's logger of the same name, so the parent's configuration applies."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _kill_workers(workers: list[_Worker]) -> None:
    """Workers ignore SIGTERM, so multiprocessing's exit hook (SIGTERM, then join) would wait for ever on those
    of an engine that was never shut down: kill them before it runs."""
    for worker in workers:
        worker.process.kill()


def _logging_levels() -> dict[str, int]:
    """Levels the parent set explicitly, so workers drop the same records before they cross the pipe."""
    levels = {"": logging.getLogger().getEffectiveLevel()}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels


class ProcessExecutionEngine(ExecutionEngine):
    """Runs a synchronous ``def handle(record) -> None`` in a pool of supervised worker processes."""

    def __init__(self, handler: SyncHandler | str, retry: RetryPolicy, config: ConsumerConfig) -> None:
        self._handler: object = handler
        self._retry = retry
        self._size = config.process_workers or os.cpu_count() or 1
        self._max_item_bytes = config.max_item_bytes
        self._tasks_per_child = config.max_tasks_per_child
        self._batch = config.ipc_batch_size
        self._capacity = 2 * config.ipc_batch_size  # items a worker holds: one batch running, one queued
        self._max_batch_bytes = max(_MIN_BATCH_BYTES, config.max_item_bytes)
        self._ctx = multiprocessing.get_context("spawn")
        self._spec: _WorkerSpec | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_complete: CompletionCallback | None = None
        self._items: dict[int, _Item] = {}
        self._pending: deque[_Item] = deque()
        self._workers: list[_Worker] = []
        self._workers_started = 0
        self._spawn_failures = 0
        self._startup: asyncio.Future[None] | None = None
        self._started = False
        self._closed = False
        self._terminating = False
        self._terminated = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._dispatch_scheduled = False
        self._watch_timer: asyncio.TimerHandle | None = None
        self._respawn_timer: asyncio.TimerHandle | None = None
        self._log_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._log_listener = logging.handlers.QueueListener(self._log_queue, _ForwardToParentLoggers())

    @property
    def workers_started(self) -> int:
        """Worker processes started so far, replacements included."""
        return self._workers_started

    @property
    def pool_size(self) -> int:
        """Worker processes kept running: ``process_workers``, or one per CPU core."""
        return self._size

    # ---- life cycle ----------------------------------------------------------------------------------------

    async def start(self, on_complete: CompletionCallback) -> None:
        if self._started:
            raise EngineError("start() may be called once")
        ref = handler_reference(self._handler)
        self._started = True
        self._spec = _WorkerSpec(ref, _logging_levels(), self._max_batch_bytes + 64, max(1, self._batch // 2))
        self._loop = loop = asyncio.get_running_loop()
        self._log_listener.start()
        multiprocessing.util.Finalize(self, _kill_workers, args=(self._workers,), exitpriority=0)
        self._startup = loop.create_future()
        try:
            for _ in range(self._size):
                self._spawn()
            await asyncio.wait_for(self._startup, _STARTUP_TIMEOUT_S)
        except BaseException as exc:
            self._closed = True
            await self._terminate()  # also when start() itself is cancelled: no worker may outlive a failed start
            if isinstance(exc, TimeoutError):
                raise EngineError(
                    f"worker processes did not load handler {ref} within {_STARTUP_TIMEOUT_S:g}s"
                ) from exc
            if isinstance(exc, OSError):
                raise EngineError(f"could not start worker processes: {exc}") from exc
            raise
        self._on_complete = on_complete
        log.debug("Process engine started %d worker(s) for %s", self._size, ref)

    def submit(self, item: WorkItem) -> None:
        if self._on_complete is None or self._closed:
            raise EngineError("submit() before start() or after shutdown()")
        payload = encode_record(item.item_id, item.record)
        entry = _Item(item.item_id, payload, time.perf_counter())
        self._items[item.item_id] = entry
        self._idle.clear()
        if len(payload) > self._max_item_bytes:
            self._require_loop().call_soon(self._reject_too_large, entry, item.record)
            return
        self._pending.append(entry)
        self._schedule_dispatch()

    def cancel(self, item_ids: Iterable[int]) -> None:
        for item_id in item_ids:
            item = self._items.pop(item_id, None)
            if item is not None and item.retry is not None:
                item.retry.cancel()
        if not self._items:
            self._idle.set()

    def in_flight(self) -> int:
        return len(self._items)

    async def shutdown(self, drain: bool, timeout_s: float) -> None:
        if self._closed:
            if self._started:
                await self._terminated.wait()
            return
        self._closed = True
        if not self._started:
            return
        if self._startup is not None and not self._startup.done():
            self._startup.set_exception(EngineError("shutdown() was called while start() waited for the workers"))
        if drain and self._items:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        leftover = list(self._items)
        if leftover:
            log.info("Cancelling %d in-flight record(s) at shutdown", len(leftover))
        self.cancel(leftover)
        await self._terminate()

    async def _terminate(self) -> None:
        """Stop every worker (idle ones cleanly, busy ones by force) and wait until none is left. A second call
        (shutdown() while start() fails) waits for the first."""
        if self._terminating:
            await self._terminated.wait()
            return
        self._terminating = True
        for timer in (self._respawn_timer, self._watch_timer):
            if timer is not None:
                timer.cancel()
        for worker in self._workers:
            worker.retiring = True
            if worker.held or not worker.ready:
                worker.process.kill()
            else:
                self._send_stop(worker)
        await asyncio.gather(*(w.exited for w in self._workers))
        self._log_listener.stop()
        self._terminated.set()

    # ---- workers -------------------------------------------------------------------------------------------

    def _spawn(self) -> None:
        loop, spec = self._require_loop(), self._spec
        if spec is None:
            raise EngineError("the engine is not started")
        from_parent, to_worker = self._ctx.Pipe(duplex=False)
        from_worker, to_parent = self._ctx.Pipe(duplex=False)
        slot = self._ctx.RawArray(ctypes.c_double, [-1.0, 0.0, -1.0])
        process = self._ctx.Process(
            target=_worker_main, args=(spec, from_parent, to_parent, slot),
            name=f"pyrallel-worker-{self._workers_started + 1}", daemon=True,
        )
        try:
            process.start()
        except BaseException:
            to_worker.close()
            from_worker.close()
            raise
        finally:
            from_parent.close()
            to_parent.close()
        self._workers_started += 1
        limit = 0
        if self._tasks_per_child:
            limit = max(1, round(self._tasks_per_child * random.uniform(0.9, 1.1)))
        worker = _Worker(process, process.pid or -1, to_worker, from_worker, slot, limit, loop.create_future())
        self._workers.append(worker)
        loop.add_reader(worker.in_fd, self._on_readable, worker)
        loop.add_reader(process.sentinel, self._on_exit, worker)

    def _ensure_pool(self) -> None:
        """Start replacements for retired or dead workers; back off while workers keep failing to start."""
        if self._terminating or self._on_complete is None or self._respawn_timer is not None:
            return
        if self._spawn_failures:
            delay = min(_MAX_RESPAWN_DELAY_S, 0.5 * 2 ** (self._spawn_failures - 1))
            self._respawn_timer = self._require_loop().call_later(delay, self._fill_pool)
        else:
            self._fill_pool()

    def _fill_pool(self) -> None:
        self._respawn_timer = None
        if self._terminating:
            return
        missing = self._size - sum(1 for w in self._workers if not w.retiring)
        try:
            for _ in range(missing):
                self._spawn()
        except OSError:
            log.exception("Could not start a worker process")
            self._spawn_failures += 1
            self._ensure_pool()

    def _send_stop(self, worker: _Worker) -> None:
        """STOP, and a kill after a grace period: a thread or atexit hook left by the handler must not keep a
        stopped worker alive."""
        if not worker.stop_sent:
            worker.stop_sent = True
            self._write(worker, msgpack.packb((_STOP,)))
            worker.stop_timer = self._require_loop().call_later(_STOP_GRACE_S, self._kill_stopped, worker)

    def _kill_stopped(self, worker: _Worker) -> None:
        log.warning("Worker process %d did not stop within %gs; killing it", worker.pid, _STOP_GRACE_S)
        worker.process.kill()

    def _on_exit(self, worker: _Worker) -> None:
        """Settle a worker's exit. Its ``exited`` future is resolved whatever happens: shutdown waits for it."""
        loop = self._require_loop()
        loop.remove_reader(worker.process.sentinel)
        try:
            self._read_all(worker)
        except Exception:
            log.exception("Could not read what worker process %d sent before it exited", worker.pid)
        finally:
            if worker.stop_timer is not None:
                worker.stop_timer.cancel()
            loop.remove_reader(worker.in_fd)
            loop.remove_writer(worker.out_fd)
            worker.process.join()
            code = worker.process.exitcode
            worker.process.close()
            worker.close()
            self._workers.remove(worker)
            worker.exited.set_result(None)
        if not worker.ready:
            reason = worker.fatal or (
                f"the worker {_describe_exit(code)} before loading it (see its stderr; a worker re-imports the "
                "__main__ module, whose entry point must be guarded by if __name__ == '__main__')"
            )
            if self._on_complete is None:
                if self._startup is not None and not self._startup.done():
                    self._startup.set_exception(EngineError(f"worker process could not load the handler: {reason}"))
            elif not self._terminating:
                self._spawn_failures += 1
                log.error("Worker process %d failed to start: %s", worker.pid, reason)
        elif not (worker.stop_sent or worker.timed_out is not None or self._terminating):
            log.warning("Worker process %d %s; re-queueing the %d item(s) it held",
                        worker.pid, _describe_exit(code), len(worker.held))
            if not worker.reported:
                self._spawn_failures += 1  # died before any result: replacing it at once could loop hot
        self._requeue_held(worker, code)
        self._ensure_pool()
        self._schedule_dispatch()

    def _requeue_held(self, worker: _Worker, code: int | None) -> None:
        """Charge an attempt to the item that was running when the worker died; re-queue the rest for free."""
        if worker.timed_out is not None:
            culprit: int | None = worker.timed_out
            error = describe_error(HandlerTimeoutError(self._retry.timeout_s))
        else:
            running = worker.running()
            if running is not None:
                culprit, when = running[0], "while handling the record"
            else:
                last = worker.last_started()
                culprit = last if last in worker.held else next(iter(worker.held), None)
                when = "outside the handler, before reporting the record's result"
            error = (WorkerDiedError.__name__, f"worker process {worker.pid} {_describe_exit(code)} {when}")
        for item_id, item in reversed(worker.held.items()):
            if self._items.get(item_id) is not item:
                continue
            if item_id == culprit:
                item.attempts += 1
                self._failed_attempt(item, *error)
            else:
                self._pending.appendleft(item)
        worker.held.clear()

    def _kill_for_timeout(self, worker: _Worker, item_id: int) -> None:
        log.warning("Item %d exceeded the %gs handler timeout; killing worker process %d",
                    item_id, self._retry.timeout_s, worker.pid)
        worker.timed_out = item_id
        worker.retiring = True
        worker.process.kill()
        self._ensure_pool()

    def _watch_timeouts(self) -> None:
        """Kill workers whose running attempt outlived timeout_s; re-arm at the next deadline while any is busy."""
        self._watch_timer = None
        timeout = self._retry.timeout_s
        now = time.monotonic()
        wake = now + timeout
        busy = False
        for worker in list(self._workers):
            if not worker.held or worker.timed_out is not None:
                continue
            busy = True
            running = worker.running()
            if running is None:
                continue
            item_id, started = running
            if now - started >= timeout:
                self._kill_for_timeout(worker, item_id)
            else:
                wake = min(wake, started + timeout)
        if busy:
            self._arm_watch(wake - now)

    def _arm_watch(self, delay: float) -> None:
        if self._watch_timer is None and not self._terminating:
            self._watch_timer = self._require_loop().call_later(max(delay, 0.001), self._watch_timeouts)

    # ---- pipes ---------------------------------------------------------------------------------------------

    def _write(self, worker: _Worker, data: bytes) -> None:
        """Write without blocking; what the pipe cannot take now is written when it becomes writable."""
        if worker.outbuf:
            worker.outbuf += data
            return
        try:
            written = os.write(worker.out_fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the worker is gone; its sentinel reports the exit
        if written < len(data):
            worker.outbuf += data[written:]
            self._require_loop().add_writer(worker.out_fd, self._on_writable, worker)

    def _on_writable(self, worker: _Worker) -> None:
        try:
            written = os.write(worker.out_fd, worker.outbuf)
        except BlockingIOError:
            return
        except OSError:
            written = len(worker.outbuf)
        del worker.outbuf[:written]
        if not worker.outbuf:
            self._require_loop().remove_writer(worker.out_fd)

    def _on_readable(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.in_fd, _READ_CHUNK)
        except BlockingIOError:
            return
        if not data:
            self._require_loop().remove_reader(worker.in_fd)  # EOF: the sentinel reports the exit
            return
        self._feed(worker, data)

    def _read_all(self, worker: _Worker) -> None:
        """Everything a dead worker sent before it died: completions and log records are still valid."""
        while True:
            try:
                data = os.read(worker.in_fd, _READ_CHUNK)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self._feed(worker, data)

    def _feed(self, worker: _Worker, data: bytes) -> None:
        worker.unpacker.feed(data)
        for message in worker.unpacker:
            kind = message[0]
            if kind == _DONE:
                self._on_results(worker, message[1])
            elif kind == _LOG:
                self._log_queue.put_nowait(logging.makeLogRecord(message[1]))
            elif kind == _READY:
                self._on_ready(worker)
            else:
                worker.fatal = message[1]

    def _on_ready(self, worker: _Worker) -> None:
        worker.ready = True
        startup = self._startup
        if startup is not None and not startup.done() and all(w.ready for w in self._workers):
            startup.set_result(None)
        self._schedule_dispatch()

    # ---- items ---------------------------------------------------------------------------------------------

    def _schedule_dispatch(self) -> None:
        """Dispatch once per loop iteration, so items submitted together travel together."""
        if not self._dispatch_scheduled and self._loop is not None:
            self._dispatch_scheduled = True
            self._loop.call_soon(self._dispatch)

    def _free(self, worker: _Worker) -> int:
        if not worker.ready or worker.retiring:
            return 0
        free = self._capacity - len(worker.held)
        if worker.task_limit:
            free = min(free, worker.task_limit - worker.assigned)
        return free

    def _dispatch(self) -> None:
        """Hand pending items to the least-loaded workers, spread evenly, up to a batch per message."""
        self._dispatch_scheduled = False
        while self._pending:
            candidates = [w for w in self._workers if self._free(w) > 0]
            if not candidates:
                return
            worker = min(candidates, key=lambda w: len(w.held))
            share = -(-len(self._pending) // len(candidates))
            batch = self._take(min(share, self._free(worker), self._batch))
            if not batch:
                return
            self._send_work(worker, batch)

    def _take(self, count: int) -> list[_Item]:
        batch: list[_Item] = []
        size = 0
        while self._pending and len(batch) < count:
            item = self._pending.popleft()
            if self._items.get(item.item_id) is not item:
                continue  # cancelled while it waited
            if batch and size + len(item.payload) > self._max_batch_bytes:
                self._pending.appendleft(item)
                break
            batch.append(item)
            size += len(item.payload)
        return batch

    def _send_work(self, worker: _Worker, batch: list[_Item]) -> None:
        for item in batch:
            worker.held[item.item_id] = item
        worker.assigned += len(batch)
        header = _packer.pack_array_header(2) + _packer.pack(_WORK) + _packer.pack_array_header(len(batch))
        self._write(worker, b"".join([header, *(item.payload for item in batch)]))
        if worker.task_limit and worker.assigned >= worker.task_limit:
            worker.retiring = True  # recycled: finishes what it holds, then gets STOP
            self._ensure_pool()
        self._arm_watch(self._retry.timeout_s)

    def _on_results(self, worker: _Worker, results: tuple[tuple[Any, ...], ...]) -> None:
        worker.reported = True
        self._spawn_failures = 0  # a worker that delivers results is healthy: respawns need not wait any more
        for result in results:
            item = worker.held.pop(result[0], None)
            if item is None or self._items.get(item.item_id) is not item:
                continue  # cancelled while it ran: the result is dropped
            item.attempts += 1
            if len(result) == 1:
                self._finish(item, True)
            else:
                self._failed_attempt(item, result[1], result[2])
        if worker.retiring and not worker.held and worker.timed_out is None:
            self._send_stop(worker)
        self._schedule_dispatch()

    def _failed_attempt(self, item: _Item, error_type: str, message: str) -> None:
        if item.attempts > self._retry.max_retries:
            self._finish(item, False, error_type, message)
            return
        log.debug("Attempt %d of item %d failed: %s: %s; retrying", item.attempts, item.item_id, error_type, message)
        item.retry = self._require_loop().call_later(self._retry.delay_s(item.attempts), self._requeue, item)

    def _requeue(self, item: _Item) -> None:
        item.retry = None
        if self._items.get(item.item_id) is item:
            self._pending.appendleft(item)
            self._schedule_dispatch()

    def _reject_too_large(self, item: _Item, record: Record) -> None:
        if self._items.get(item.item_id) is not item:
            return
        item.attempts = 1
        self._finish(
            item, False, RecordTooLargeError.__name__,
            f"record {record.topic}[{record.partition}]@{record.offset} is {len(item.payload)} bytes as msgpack, "
            f"more than max_item_bytes={self._max_item_bytes}",
        )

    def _finish(self, item: _Item, ok: bool, error_type: str | None = None, message: str | None = None) -> None:
        del self._items[item.item_id]
        if not self._items:
            self._idle.set()
        completion = Completion(item.item_id, ok, item.attempts, time.perf_counter() - item.submitted,
                                error_type, message)
        if self._on_complete is not None:
            try:
                self._on_complete(completion)
            except Exception:
                log.exception("The completion callback failed for item %d", item.item_id)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise EngineError("the engine is not started")
        return self._loop
