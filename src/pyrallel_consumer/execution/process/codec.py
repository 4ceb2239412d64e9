"""The messages between the process engine's parent and its workers: msgpack on one pipe each way per worker.

Both sides import it: the supervisor, the worker handle and the engine in the parent (on the event loop's
thread), and the worker process (its main thread, its result flusher and any thread that logs).

Parent to worker: ``(WORK, (item, ...))``, each item an :func:`encode_record` payload spliced in as it was
encoded at submit (or, for a batch handler, an :func:`encode_batch` payload: a batch id and its records), and
``(STOP,)``; with tracing, each record's payload carries its span's context too. Worker to parent: ``(READY,)``,
``(FATAL, reason)``, ``(DONE, (result, ...))`` with results made by :func:`success`, :func:`failure` and
:func:`partial`, and ``(LOG, fields)`` made by :func:`encode_log`.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import msgpack

from pyrallel_consumer.output import Output
from pyrallel_consumer.record import Record

# parent -> worker messages
WORK: Final = 0
STOP: Final = 1
# worker -> parent messages
READY: Final = 0
FATAL: Final = 1
DONE: Final = 2
LOG: Final = 3

READ_CHUNK: Final = 1 << 18
"""Bytes read from a pipe at a time, on both sides."""
STOP_MESSAGE: Final[bytes] = msgpack.packb((STOP,))

_UNICODE_ERRORS: Final = "backslashreplace"
"""Lone surrogates (an undecodable file name in an error message) are escaped, not a reason to lose a message."""
_MAX_LOG_CHARS: Final = 1 << 20
_LOG_FIELDS: Final = (
    "name", "msg", "levelno", "levelname", "pathname", "filename", "module", "lineno", "funcName",
    "created", "msecs", "relativeCreated", "thread", "threadName", "processName", "process",
)
_packer = msgpack.Packer()

Result = tuple[Any, ...]
"""One completed attempt: ``(item_id,)`` on success, ``(item_id, error_type, message)`` on failure, and a pair whose
second element depends on what the item is (the parent knows): for a record, a success that returned outputs
``(item_id, outputs)`` (each ``Output.as_wire()``); for a batch that failed some of its records
``(batch_id, ((position, error_type, message), ...))``."""


def encode_record(item_id: int, record: Record, trace: dict[str, str] | None = None) -> bytes:
    """The msgpack form of one work item: what crosses the pipe and what ``max_item_bytes`` limits.

    ``trace``: the propagation fields of the record's span (``Tracing.carrier``), when tracing is on.
    """
    fields = (item_id, record.topic, record.partition, record.offset, record.key, record.value, record.headers,
              record.timestamp)
    payload: bytes = msgpack.packb(fields if trace is None else (*fields, trace))
    return payload


def decode_record(fields: tuple[Any, ...]) -> Record:
    """The record of an :func:`encode_record` payload read by an :func:`unpacker`."""
    return Record(*fields[1:8])


def trace_of(fields: tuple[Any, ...]) -> dict[str, str] | None:
    """The span context an :func:`encode_record` payload carries, or None (tracing off)."""
    return fields[8] if len(fields) > 8 else None


def encode_batch(batch_id: int, payloads: list[bytes]) -> bytes:
    """A batch work item, ``(batch_id, (record, ...))``, its records' :func:`encode_record` payloads spliced in."""
    return b"".join([_packer.pack_array_header(2), _packer.pack(batch_id), _packer.pack_array_header(len(payloads)),
                     *payloads])


def is_batch(fields: tuple[Any, ...]) -> bool:
    """Whether a decoded work item is a batch (two fields) rather than one record (eight, or nine with a trace)."""
    return len(fields) == 2


def encode_work(payloads: list[bytes]) -> bytes:
    """A WORK message carrying already encoded items, without packing them again."""
    header = _packer.pack_array_header(2) + _packer.pack(WORK) + _packer.pack_array_header(len(payloads))
    return b"".join([header, *payloads])


def encode_message(message: object) -> bytes:
    """Any other message."""
    data: bytes = msgpack.packb(message, unicode_errors=_UNICODE_ERRORS)
    return data


def unpacker(**limits: int) -> Any:
    """A stream reader of messages (arrays as tuples, strings as str); ``limits`` as for ``msgpack.Unpacker``."""
    return msgpack.Unpacker(use_list=False, raw=False, **limits)


def success(item_id: int, outputs: tuple[Output, ...] = ()) -> Result:
    if outputs:
        return (item_id, tuple(o.as_wire() for o in outputs))
    return (item_id,)


def failure(item_id: int, error_type: str, message: str) -> Result:
    return (item_id, error_type, message)


def partial(batch_id: int, failures: list[tuple[int, str, str]]) -> Result:
    """A batch attempt that failed the records at these positions of the batch (and succeeded the others)."""
    return (batch_id, tuple(failures))


def decode_result(result: Result) -> tuple[int, tuple[str, str] | None]:
    """The item id of a result and, for a failed attempt, its (error type, message); None for a success or a partial
    batch."""
    if len(result) != 3:
        return result[0], None
    return result[0], (result[1], result[2])


def batch_failures(result: Result) -> tuple[tuple[int, str, str], ...] | None:
    """For a batch: the (position, error type, message) of each record a :func:`partial` result failed; else None."""
    if len(result) == 2:
        failures: tuple[tuple[int, str, str], ...] = result[1]
        return failures
    return None


def decode_outputs(result: Result) -> tuple[Output, ...]:
    """For a record: the outputs its successful attempt returned (empty for a failure or a success without any)."""
    if len(result) != 2:
        return ()
    return tuple(Output.from_wire(fields) for fields in result[1])


def encode_log(record: logging.LogRecord) -> tuple[int, dict[str, Any]]:
    """The LOG message of a record that ``QueueHandler.prepare()`` flattened (message formatted, no args)."""
    fields = {name: getattr(record, name, None) for name in _LOG_FIELDS}
    fields["msg"] = str(fields["msg"])[:_MAX_LOG_CHARS]
    return (LOG, fields)


def decode_log(fields: dict[str, Any]) -> logging.LogRecord:
    return logging.makeLogRecord(fields)
