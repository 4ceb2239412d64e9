"""Loaders of a blue/green run's logs: the producer's acked sends, each consumer's handled records, sink files.

The judge (:mod:`pyrallel_tools.bluegreen.validation.judge`) needs records, the files are JSON lines of
up to millions of lines; this module turns one into the other as fast as the json C scanner allows and
counts malformed lines instead of aborting on them.  Called by
:func:`pyrallel_tools.bluegreen.validation.from_logs.validate_files` and by tests.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pyrallel_tools.bluegreen.validation.findings import SAMPLE_LIMIT

__all__ = [
    "ConsumedRecord",
    "LoadStats",
    "PathLike",
    "ProducedRecord",
    "load_consumer_log",
    "load_producer_log",
    "load_sink_file",
    "records_of_files",
]

logger = logging.getLogger(__name__)

_MALFORMED_LOG_LIMIT = 5
_UNKNOWN = -1

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------
# Records


@dataclass(slots=True)
class ProducedRecord:
    """One acknowledged send, as logged by the load producer."""

    seq: int
    key: str
    key_seq: int
    partition: int
    offset: int
    ts: float


@dataclass(slots=True)
class ConsumedRecord:
    """One handled record; ``ts`` is None and partition/offset -1 when the source cannot know."""

    seq: int
    key: str
    key_seq: int
    partition: int
    offset: int
    color: str
    instance: str
    ts: float | None


@dataclass(slots=True)
class LoadStats:
    """Shared counter for loaders: malformed lines must be reported, not abort a multi-GB check."""

    lines: int = 0
    malformed_lines: int = 0
    malformed_sample: list[str] = field(default_factory=list)

    def _malformed(self, path: str, lineno: int, reason: str) -> None:
        self.malformed_lines += 1
        if len(self.malformed_sample) < SAMPLE_LIMIT:
            self.malformed_sample.append(f"{path}:{lineno}: {reason}")
        if self.malformed_lines <= _MALFORMED_LOG_LIMIT:
            logger.warning("malformed line %s:%d (%s)", path, lineno, reason)


# --------------------------------------------------------------------------------------------
# Loaders
#
# The parse step is inlined in each loader on purpose: json's C scanner costs ~0.9 us a line and
# every extra Python call or generator layer adds another 10-20% at a million lines.

_raw_decode = json.JSONDecoder().raw_decode
_loads = json.loads
_PARSE_ERRORS = (ValueError, KeyError, TypeError)  # ValueError covers JSON and UTF-8 errors


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    if isinstance(exc, TypeError):
        return "not a JSON object"
    return f"{type(exc).__name__}: {exc}"


def _skip(st: LoadStats, name: str, lineno: int, line: bytes, exc: Exception) -> None:
    """Blank lines are allowed anywhere; anything else that failed to parse is malformed."""
    if line.strip():
        st._malformed(name, lineno, _reason(exc))


def _rows(
    path: PathLike, st: LoadStats, fields: tuple[str, ...], unwrap: bool = False
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(line number, field values) of every JSON line of ``path``; unparsable lines are counted and skipped.

    ``unwrap`` accepts a value that is a JSON string holding the object (a double-encoded sink line).
    """
    name = os.fspath(path)
    raw_decode = _raw_decode
    loads = _loads
    lineno = 0
    try:
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    text = line.decode()
                    try:
                        d, end = raw_decode(text)
                        if end != len(text) and not text[end:].isspace():
                            d = loads(text.strip())  # raises "Extra data"
                    except ValueError:
                        d = loads(text.strip())  # leading blanks are fine, real errors re-raise
                    if unwrap and type(d) is str:
                        d = loads(d)
                    values = tuple(d[f] for f in fields)
                except _PARSE_ERRORS as exc:
                    _skip(st, name, lineno, line, exc)
                    continue
                yield lineno, values
    finally:
        st.lines += lineno


def _is_ts(value: Any, optional: bool = False) -> bool:
    return type(value) is float or type(value) is int or (optional and value is None)


_PRODUCED_FIELDS = ("seq", "key", "key_seq", "partition", "offset", "ts")
_CONSUMED_FIELDS = ("seq", "key", "key_seq", "partition", "offset", "color", "instance", "ts")


def load_producer_log(path: PathLike, stats: LoadStats | None = None) -> Iterator[ProducedRecord]:
    """Yield the producer's acked sends; malformed lines are counted in ``stats`` and skipped."""
    st = stats if stats is not None else LoadStats()
    name, intern = os.fspath(path), sys.intern
    for lineno, (seq, key, key_seq, partition, offset, ts) in _rows(path, st, _PRODUCED_FIELDS):
        if (type(seq) is not int or type(key) is not str or type(key_seq) is not int or type(partition) is not int
                or type(offset) is not int or not _is_ts(ts)):
            st._malformed(name, lineno, "field with wrong type")
            continue
        yield ProducedRecord(seq, intern(key), key_seq, partition, offset, float(ts))


def load_consumer_log(path: PathLike, stats: LoadStats | None = None) -> Iterator[ConsumedRecord]:
    """Yield one consumer instance's handled records in file order (order checks rely on it)."""
    st = stats if stats is not None else LoadStats()
    name, intern = os.fspath(path), sys.intern
    for lineno, (seq, key, key_seq, partition, offset, color, instance, ts) in _rows(path, st, _CONSUMED_FIELDS):
        if (type(seq) is not int or type(key) is not str or type(key_seq) is not int or type(partition) is not int
                or type(offset) is not int or type(color) is not str or type(instance) is not str
                or not _is_ts(ts, optional=True)):
            st._malformed(name, lineno, "field with wrong type")
            continue
        # Keys are interned because validate() keeps one reference per timed event.
        yield ConsumedRecord(seq, intern(key), key_seq, partition, offset, color, instance,
                             ts if type(ts) is not int else float(ts))


def load_sink_file(path: PathLike, color: str, stats: LoadStats | None = None) -> Iterator[ConsumedRecord]:
    """Yield records from a Kafka Connect FileStreamSink file (one raw record value per line).

    The sink knows neither handle time nor partition/offset, so ``ts`` is None (excluded from
    timing analysis) and partition/offset are -1; the instance is the file's base name.  A value
    that is a JSON *string* holding the JSON object (double-encoded) is unwrapped once.
    """
    st = stats if stats is not None else LoadStats()
    name, intern = os.fspath(path), sys.intern
    instance = os.path.basename(name)
    for lineno, (seq, key, key_seq) in _rows(path, st, ("seq", "key", "key_seq"), unwrap=True):
        if type(seq) is not int or type(key) is not str or type(key_seq) is not int:
            st._malformed(name, lineno, "field with wrong type")
            continue
        yield ConsumedRecord(seq, intern(key), key_seq, _UNKNOWN, _UNKNOWN, color, instance, None)


def records_of_files(
    producer_logs: Iterable[PathLike],
    consumer_logs: Iterable[PathLike] = (),
    sink_files: Iterable[tuple[PathLike, str]] = (),
    stats: LoadStats | None = None,
) -> tuple[Iterator[ProducedRecord], Iterator[ConsumedRecord]]:
    """The produced and the consumed records of a run's files, lazily, counted in one ``stats``.

    Used by ``validate_files`` (the judge) and the switch-impact measurement, which both start from files.
    """
    st = stats if stats is not None else LoadStats()

    def produced() -> Iterator[ProducedRecord]:
        for path in producer_logs:
            yield from load_producer_log(path, st)

    def consumed() -> Iterator[ConsumedRecord]:
        for path in consumer_logs:
            yield from load_consumer_log(path, st)
        for path, color in sink_files:
            yield from load_sink_file(path, color, st)

    return produced(), consumed()
