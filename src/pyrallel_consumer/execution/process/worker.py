"""What runs in a worker process: load the handler, report ready (or why not), then run work items.

The supervisor starts :func:`worker_main` in a ``spawn``ed process, which imports this module by name; it
imports only the child's side of the engine (the codec, the slot, the handler loader and the contract's
``describe_error``), never the parent's supervision. In the worker, the main thread reads work and runs the
handler, a flusher thread sends completions that waited, a watch thread ends the process when the parent dies,
and any thread that logs sends its records over the same pipe.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

from pyrallel_consumer.batch import batch_failures
from pyrallel_consumer.execution.engine import describe_error
from pyrallel_consumer.execution.process import codec
from pyrallel_consumer.execution.process.handler_ref import load_handler
from pyrallel_consumer.execution.process.slot import Slot, attempt_begins, attempt_ends
from pyrallel_consumer.output import outputs_of

log = logging.getLogger(__name__)

_EXIT_FLUSHER_FAILED: Final = 70
_FLUSH_INTERVAL_S: Final = 0.005


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker is started with (pickled into the spawned process)."""

    handler_ref: str
    log_levels: dict[str, int]
    max_message_bytes: int
    flush_every: int


def worker_main(spec: WorkerSpec, inbox: Connection[Any, Any], outbox: Connection[Any, Any], slot: Slot) -> None:
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
        handler = load_handler(spec.handler_ref)
    except BaseException as exc:  # noqa: BLE001 - whatever breaks the import is reported to start()
        channel.send((codec.FATAL, "{}: {}".format(*_describe(exc))))
        return
    channel.send((codec.READY,))
    try:
        _serve(handler, channel, slot, spec.flush_every)
    except (EOFError, BrokenPipeError):
        return  # the parent is gone: nobody is left to report to


class _Channel:
    """Worker side of the two pipes: messages in, messages out (shared with log records)."""

    def __init__(self, inbox_fd: int, outbox_fd: int, max_message_bytes: int) -> None:
        self._in = inbox_fd
        self._out = outbox_fd
        self._poll = select.poll()  # not select(): an inherited fd number may be >= FD_SETSIZE (1024)
        self._poll.register(inbox_fd, select.POLLIN)
        self._unpacker = codec.unpacker(max_buffer_size=max_message_bytes + codec.READ_CHUNK)
        self._lock = threading.Lock()

    def send(self, message: object) -> None:
        view = memoryview(codec.encode_message(message))
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
            data = os.read(self._in, codec.READ_CHUNK)
            if not data:
                raise EOFError("the parent closed the pipe")
            self._unpacker.feed(data)


class _PipeLogHandler(logging.handlers.QueueHandler):
    """QueueHandler whose queue is the worker's pipe: prepare() flattens the record, enqueue() ships it."""

    def __init__(self, channel: _Channel) -> None:
        logging.Handler.__init__(self)
        self._channel = channel

    def enqueue(self, record: logging.LogRecord) -> None:
        self._channel.send(codec.encode_log(record))


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
        self._results: list[codec.Result] = []
        self._waiting = threading.Event()

    def add(self, result: codec.Result) -> None:
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
            self._channel.send((codec.DONE, results))

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
            if message[0] == codec.STOP:
                return
            todo.extend(message[1])
            continue
        outbox.add(_attempt(handler, todo.popleft(), slot))


def _attempt(handler: Callable[..., object], fields: tuple[Any, ...], slot: Slot) -> codec.Result:
    """One handler call, published in the slot while it runs."""
    if codec.is_batch(fields):
        return _attempt_batch(handler, fields, slot)
    item_id = fields[0]
    trace = codec.trace_of(fields)
    attempt_begins(slot, item_id)
    try:
        if trace is None:
            outputs = outputs_of(handler(codec.decode_record(fields)))
        else:
            with _carried(trace):
                outputs = outputs_of(handler(codec.decode_record(fields)))
    except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit or KeyboardInterrupt is a failed attempt
        return codec.failure(item_id, *_describe(exc))
    finally:
        attempt_ends(slot)
    return codec.success(item_id, outputs)


def _carried(trace: dict[str, str]) -> AbstractContextManager[None]:
    """The record's span context made current (tracing is on); opentelemetry is imported only then."""
    from pyrallel_consumer.observability.tracing import carried

    return carried(trace)


def _attempt_batch(handler: Callable[..., object], fields: tuple[Any, ...], slot: Slot) -> codec.Result:
    """One call of a batch handler with the records of a batch item; the batch id stands in the slot meanwhile."""
    batch_id = fields[0]
    records = [codec.decode_record(record) for record in fields[1]]
    trace = codec.trace_of(fields[1][0]) if fields[1] else None
    attempt_begins(slot, batch_id)
    try:
        if trace is None:
            returned = handler(list(records))  # a copy: positions must survive a handler's sort
        else:
            with _carried(trace):
                returned = handler(list(records))
    except BaseException as exc:  # noqa: BLE001 - as for one record: any exception fails the attempt
        return codec.failure(batch_id, *_describe(exc))
    finally:
        attempt_ends(slot)
    try:
        failures = batch_failures(records, returned)
    except BaseException as exc:  # noqa: BLE001 - an invalid BatchResult fails the whole attempt
        return codec.failure(batch_id, *_describe(exc))
    if not failures:
        return codec.success(batch_id)
    return codec.partial(batch_id, [(position, *error) for position, error in sorted(failures.items())])


def _describe(exc: BaseException) -> tuple[str, str]:
    """:func:`describe_error` that cannot fail: an exception whose ``__str__`` raises must not kill the worker."""
    try:
        return describe_error(exc)
    except BaseException:  # noqa: BLE001 - whatever str() raises, the attempt is still reported
        return type(exc).__name__, f"<the {type(exc).__name__} could not be formatted as text>"
