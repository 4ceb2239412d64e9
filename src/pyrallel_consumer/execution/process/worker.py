"""What runs in a worker process: load the handler, report ready (or why not), then run work items.

The supervisor starts :func:`worker_main` in a ``spawn``ed process, which imports this module by name; it
imports only the child's side of the engine (the codec, the slot, the handler loader and the contract's
``describe_error``), never the parent's supervision. In the worker, the main thread reads work and runs the
handler, a flusher thread sends completions that waited, a watch thread ends the process when the parent dies,
and any thread that logs sends its records over the same pipe.

With ``key_deserializer`` / ``value_deserializer`` configured, the worker imports its own deserializers by reference
(a schema-registry one cannot be pickled: it holds an HTTP client) and deserializes each record before its handler,
inside the attempt; a record that cannot be deserialized fails without reaching the handler (the parent does not
retry it). Only then does it import confluent-kafka (``kafka/deserializing.py``).
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
from typing import TYPE_CHECKING, Any, Final

from pyrallel_consumer.batch import batch_failures
from pyrallel_consumer.deserialization import DeserializationError
from pyrallel_consumer.execution.engine import describe_error
from pyrallel_consumer.execution.process import codec
from pyrallel_consumer.execution.process.handler_ref import load_handler
from pyrallel_consumer.execution.process.slot import Slot, attempt_begins, attempt_ends
from pyrallel_consumer.output import outputs_of
from pyrallel_consumer.record import Record

if TYPE_CHECKING:
    from pyrallel_consumer.kafka.deserializing import RecordDeserializer

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
    deserializers: tuple[str | None, str | None] = (None, None)
    """Import references of the key and value deserializers; None leaves that part as bytes."""


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
        deserializer = _load_deserializer(*spec.deserializers)
    except BaseException as exc:  # noqa: BLE001 - whatever breaks the import is reported to start()
        channel.send((codec.FATAL, "{}: {}".format(*_describe(exc))))
        return
    channel.send((codec.READY,))
    try:
        _serve(handler, deserializer, channel, slot, spec.flush_every)
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


def _load_deserializer(key: str | None, value: str | None) -> RecordDeserializer | None:
    if key is None and value is None:
        return None  # confluent-kafka stays unloaded
    from pyrallel_consumer.kafka.deserializing import RecordDeserializer

    return RecordDeserializer.of(key, value)


def _serve(handler: Callable[..., object], deserializer: RecordDeserializer | None, channel: _Channel, slot: Slot,
           flush_every: int) -> None:
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
        outbox.add(_attempt(handler, deserializer, todo.popleft(), slot))


def _attempt(handler: Callable[..., object], deserializer: RecordDeserializer | None, fields: tuple[Any, ...],
             slot: Slot) -> codec.Result:
    """One handler call (the record deserialized first), published in the slot while it runs."""
    if codec.is_batch(fields):
        return _attempt_batch(handler, deserializer, fields, slot)
    item_id = fields[0]
    trace = codec.trace_of(fields)
    attempt_begins(slot, item_id)
    try:
        record = codec.decode_record(fields)
        if trace is None:
            outputs = outputs_of(handler(record if deserializer is None else deserializer.record(record)))
        else:
            with _carried(trace):
                outputs = outputs_of(handler(record if deserializer is None else deserializer.record(record)))
    except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit or KeyboardInterrupt is a failed attempt
        return codec.failure(item_id, *_describe(exc))
    finally:
        attempt_ends(slot)
    return codec.success(item_id, outputs)


def _carried(trace: dict[str, str]) -> AbstractContextManager[None]:
    """The record's span context made current (tracing is on); opentelemetry is imported only then."""
    from pyrallel_consumer.observability.tracing import carried

    return carried(trace)


def _attempt_batch(handler: Callable[..., object], deserializer: RecordDeserializer | None, fields: tuple[Any, ...],
                   slot: Slot) -> codec.Result:
    """One call of a batch handler with the records of a batch item; the batch id stands in the slot meanwhile.

    Records that cannot be deserialized are left out of the call and reported failed at their positions (the
    ledger completes them without retries), beside whatever the call did to the others.
    """
    batch_id = fields[0]
    trace = codec.trace_of(fields[1][0]) if fields[1] else None
    attempt_begins(slot, batch_id)
    try:
        if trace is None:
            records, poisoned = _batch_records(deserializer, fields[1])
            error, failures = _call_batch(handler, records) if records else (None, {})
        else:
            with _carried(trace):
                records, poisoned = _batch_records(deserializer, fields[1])
                error, failures = _call_batch(handler, records) if records else (None, {})
    finally:
        attempt_ends(slot)
    if error is not None and not poisoned:
        return codec.failure(batch_id, *error)
    positions = [position for position in range(len(fields[1])) if position not in poisoned]
    if error is not None:
        failures = dict.fromkeys(range(len(positions)), error)
    failed = {positions[i]: failure for i, failure in failures.items()} | poisoned
    if not failed:
        return codec.success(batch_id)
    return codec.partial(batch_id, [(position, *failure) for position, failure in sorted(failed.items())])


def _call_batch(handler: Callable[..., object], records: list[Record[Any, Any]]
                ) -> tuple[tuple[str, str] | None, dict[int, tuple[str, str]]]:
    """(the error that failed the whole call, or None; the failures its BatchResult named, by position)."""
    try:
        returned = handler(list(records))  # a copy: positions must survive a handler's sort
    except BaseException as exc:  # noqa: BLE001 - as for one record: any exception fails the attempt
        return _describe(exc), {}
    try:
        return None, batch_failures(records, returned)
    except BaseException as exc:  # noqa: BLE001 - an invalid BatchResult fails the whole attempt
        return _describe(exc), {}


def _batch_records(deserializer: RecordDeserializer | None, fields: tuple[tuple[Any, ...], ...]
                   ) -> tuple[list[Record[Any, Any]], dict[int, tuple[str, str]]]:
    """The records of a batch item as its handler gets them, and (position, error) of those that cannot be
    deserialized."""
    records: list[Record[Any, Any]] = []
    poisoned: dict[int, tuple[str, str]] = {}
    for position, record_fields in enumerate(fields):
        record = codec.decode_record(record_fields)
        if deserializer is None:
            records.append(record)
            continue
        try:
            records.append(deserializer.record(record))
        except DeserializationError as exc:
            poisoned[position] = _describe(exc)
    return records, poisoned


def _describe(exc: BaseException) -> tuple[str, str]:
    """:func:`describe_error` that cannot fail: an exception whose ``__str__`` raises must not kill the worker."""
    try:
        return describe_error(exc)
    except BaseException:  # noqa: BLE001 - whatever str() raises, the attempt is still reported
        return type(exc).__name__, f"<the {type(exc).__name__} could not be formatted as text>"
