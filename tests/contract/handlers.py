"""Handlers of the engine contract suite, driven by the record value so every engine runs the same behaviour.

They are top-level functions so the process engine's workers can import them. Values:
``ok``, ``fail:N`` (fail the first N attempts), ``always_fail``, ``sleep:S``, ``hang``, ``system_exit``,
``keyboard_interrupt``, ``output:TEXT`` (returns one Output of TEXT), ``bad_output`` (returns what is not a list of
outputs), ``typed`` (fails unless the value arrived deserialized by :func:`value_text`). Attempts, start marks and
run spans go to files in the directory named by the record's ``contract-dir`` header, because the attempts of one
record may run in different processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pyrallel_consumer.batch import BatchResult
from pyrallel_consumer.output import Output
from pyrallel_consumer.record import Record

DIR_HEADER = "contract-dir"
HANG_S = 3600.0


VALUE_TEXT = f"{__name__}:value_text"


def value_text(data: bytes | None, _ctx: Any) -> str | None:
    """The contract's value deserializer: the value as text; values starting with ``poison`` cannot be read."""
    if data is None:
        return None
    if data.startswith(b"poison"):
        raise ValueError("poison bytes")
    return data.decode()


def _text(record: Record[Any, Any]) -> str:
    """The record's value as text, whether it arrived as bytes or deserialized by :func:`value_text`."""
    value = record.value
    return value if isinstance(value, str) else (value or b"").decode()


def state_dir(record: Record) -> Path:
    for name, value in record.headers:
        if name == DIR_HEADER and value is not None:
            return Path(value.decode())
    raise LookupError(f"record without a {DIR_HEADER!r} header")


def started_path(directory: Path, item: int) -> Path:
    return directory / f"{item}.started"


def span_path(directory: Path, item: int) -> Path:
    return directory / f"{item}.span"


def _count_attempt(record: Record) -> int:
    """Number of this attempt (1-based), counted in a file so it survives a change of process."""
    path = state_dir(record) / f"{record.offset}.attempts"
    with path.open("ab") as out:
        out.write(b".")
    return path.stat().st_size


def _prepare(record: Record) -> float:
    """Raise what the value asks for, or return how long the handler should then sleep (0 for none)."""
    kind, _, arg = _text(record).partition(":")
    if kind == "ok":
        return 0.0
    if kind == "typed":
        if not isinstance(record.value, str):
            raise TypeError(f"the handler got {type(record.value).__name__}, not the deserialized str")
        return 0.0
    if kind == "fail":
        attempt = _count_attempt(record)
        if attempt <= int(arg):
            raise ValueError(f"attempt {attempt} fails on purpose")
        return 0.0
    if kind == "always_fail":
        raise ValueError("always fails")
    if kind == "system_exit":
        raise SystemExit(3)
    if kind == "keyboard_interrupt":
        raise KeyboardInterrupt
    if kind in ("sleep", "hang"):
        started_path(state_dir(record), record.offset).write_text(str(os.getpid()))
        return float(arg) if kind == "sleep" else HANG_S
    raise ValueError(f"unknown behaviour {record.value!r}")


def _note_span(record: Record, started: float) -> None:
    span_path(state_dir(record), record.offset).write_text(f"{started} {time.time()}")


def _returned(record: Record) -> list[Output] | None:
    """What the handler returns: outputs for ``output:TEXT``, a wrong value for ``bad_output``, else None."""
    kind, _, arg = _text(record).partition(":")
    if kind == "output":
        return [Output("contract-out", arg.encode(), key=str(record.offset), headers=(("h", b"1"),))]
    if kind == "bad_output":
        return 42  # type: ignore[return-value]
    return None


def sync_handle(record: Record) -> list[Output] | None:
    """The contract behaviours for engines that run synchronous handlers."""
    if _text(record).split(":")[0] in ("output", "bad_output"):
        return _returned(record)
    delay = _prepare(record)
    if delay:
        started = time.time()
        time.sleep(delay)
        _note_span(record, started)
    return None


async def async_handle(record: Record) -> list[Output] | None:
    """The contract behaviours for engines that run async handlers."""
    if _text(record).split(":")[0] in ("output", "bad_output"):
        return _returned(record)
    delay = _prepare(record)
    if delay:
        started = time.time()
        await asyncio.sleep(delay)
        _note_span(record, started)
    return None


# ---- batch handlers ------------------------------------------------------------------------------------------------
# A batch runs the behaviour of each record's value (``fail:N`` or ``always_fail`` in any record fails the whole
# call), plus ``name_failed:N`` (named failed in the BatchResult for the first N attempts of that record) and
# ``bad_result`` (the call returns something that is not a BatchResult). Every call appends the offsets it got, in
# order, as one line to ``batches.log``.

BATCHES_LOG = "batches.log"


def batch_calls(directory: Path) -> list[list[int]]:
    """The offsets of every batch handler call so far, one list per call, in the order the calls began."""
    path = directory / BATCHES_LOG
    if not path.exists():
        return []
    return [[int(o) for o in line.split()] for line in path.read_text().splitlines() if line]


def _note_batch(records: list[Record]) -> None:
    line = (" ".join(str(r.offset) for r in records) + "\n").encode()
    fd = os.open(state_dir(records[0]) / BATCHES_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line)  # one write per call: lines of concurrent calls do not interleave
    finally:
        os.close(fd)


def _prepare_batch(records: list[Record]) -> tuple[float, object]:
    """(seconds to sleep, what to return) for a batch; raises what a record's value asks for."""
    _note_batch(records)
    named: dict[Record, BaseException] = {}
    delay = 0.0
    for record in records:
        kind, _, arg = _text(record).partition(":")
        if kind == "name_failed":
            attempt = _count_attempt(record)
            if attempt <= int(arg):
                named[record] = ValueError(f"attempt {attempt} named failed")
        elif kind == "bad_result":
            return 0.0, ["not", "a", "BatchResult"]
        else:
            delay = max(delay, _prepare(record))
    return delay, BatchResult(named) if named else None


def sync_handle_batch(records: list[Record]) -> object:
    """The contract's batch behaviours for engines that run synchronous handlers."""
    delay, result = _prepare_batch(records)
    if delay:
        started = time.time()
        time.sleep(delay)
        for record in records:
            _note_span(record, started)
    return result


async def async_handle_batch(records: list[Record]) -> object:
    """The contract's batch behaviours for engines that run async handlers."""
    delay, result = _prepare_batch(records)
    if delay:
        started = time.time()
        await asyncio.sleep(delay)
        for record in records:
            _note_span(record, started)
    return result
