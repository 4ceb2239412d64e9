"""Handlers of the engine contract suite, driven by the record value so every engine runs the same behaviour.

They are top-level functions so the process engine's workers can import them. Values:
``ok``, ``fail:N`` (fail the first N attempts), ``always_fail``, ``sleep:S``, ``hang``, ``system_exit``,
``keyboard_interrupt``, ``output:TEXT`` (returns one Output of TEXT), ``bad_output`` (returns what is not a list of
outputs). Attempts, start marks and run spans go to files in the directory named by the record's
``contract-dir`` header, because the attempts of one record may run in different processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pyrallel_consumer.output import Output
from pyrallel_consumer.record import Record

DIR_HEADER = "contract-dir"
HANG_S = 3600.0


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
    kind, _, arg = (record.value or b"").decode().partition(":")
    if kind == "ok":
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
    kind, _, arg = (record.value or b"").decode().partition(":")
    if kind == "output":
        return [Output("contract-out", arg.encode(), key=str(record.offset), headers=(("h", b"1"),))]
    if kind == "bad_output":
        return 42  # type: ignore[return-value]
    return None


def sync_handle(record: Record) -> list[Output] | None:
    """The contract behaviours for engines that run synchronous handlers."""
    if record.value and record.value.split(b":")[0] in (b"output", b"bad_output"):
        return _returned(record)
    delay = _prepare(record)
    if delay:
        started = time.time()
        time.sleep(delay)
        _note_span(record, started)
    return None


async def async_handle(record: Record) -> list[Output] | None:
    """The contract behaviours for engines that run async handlers."""
    if record.value and record.value.split(b":")[0] in (b"output", b"bad_output"):
        return _returned(record)
    delay = _prepare(record)
    if delay:
        started = time.time()
        await asyncio.sleep(delay)
        _note_span(record, started)
    return None
