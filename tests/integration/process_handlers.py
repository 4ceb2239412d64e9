"""Top-level synchronous handlers for the process engine in the integration tests, and what they recorded.

Worker processes are spawned, so a handler cannot report into the test's memory: every handled record is
appended as one line, flushed, to a file of its own worker process (``<pid>.log``) in the directory named by
the ``PYRALLEL_TEST_DIR`` environment variable, which the test sets before the consumer starts (spawned
workers inherit it). :class:`SpanLog` reads those files back as the same :class:`Span` values the tests'
async handlers keep in memory, so both engines are held to the same assertions.

Times are ``time.monotonic_ns()``: on Linux that clock is system-wide, so spans of different processes compare.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple, TextIO

from tests.support import seq_of

from pyrallel_consumer.record import Record

DIR_ENV = "PYRALLEL_TEST_DIR"
BLOCK_ENV = "PYRALLEL_TEST_BLOCK_OFFSET"
RELEASE_FILE = "release"
"""While this file is missing from the directory, the record at ``PYRALLEL_TEST_BLOCK_OFFSET`` cannot complete."""
ATTEMPTS_FILE = "attempts.pids"

_outputs: dict[str, TextIO] = {}


class Span(NamedTuple):
    """One handled record: which member handled it, which record, when (monotonic ns), in which process."""

    member: str
    partition: int
    offset: int
    key: str
    seq: int
    started: int
    ended: int
    pid: int


def span_of(record: Record, member: str, started: int) -> Span:
    """The span of ``record``, handled from ``started`` until now."""
    key = record.key.decode() if record.key else "-"
    return Span(member, record.partition, record.offset, key, seq_of(record.value), started, time.monotonic_ns(),
                os.getpid())


class SpanLog:
    """What the handlers of one test handled so far: in memory for the async engine (``add``), in the worker
    processes' files under ``directory`` for the process engine."""

    def __init__(self, engine: str, directory: Path) -> None:
        self.engine = engine
        self.directory = directory
        self._spans: list[Span] = []

    def add(self, span: Span) -> None:
        self._spans.append(span)

    def spans(self) -> list[Span]:
        if self.engine == "async":
            return list(self._spans)
        spans = []
        for path in sorted(self.directory.glob("*.log")):
            for line in path.read_text().splitlines(keepends=True):
                if line.endswith("\n"):  # a line being written is read next time
                    member, partition, offset, key, *times = line.split()
                    spans.append(Span(member, int(partition), int(offset), key, *map(int, times)))
        return spans


def key_order_violations(spans: list[Span]) -> list[str]:
    """Records of one key that ran out of offset order or overlapped in time (empty when ordering held)."""
    by_key: dict[tuple[int, str], list[Span]] = defaultdict(list)
    for span in sorted(spans, key=lambda s: s.started):
        by_key[(span.partition, span.key)].append(span)
    problems = []
    for (partition, key), key_spans in by_key.items():
        for before, after in pairwise(key_spans):
            if after.offset < before.offset:
                problems.append(f"{key}@{partition}: offset {after.offset} ran after {before.offset}")
            if after.started < before.ended:
                problems.append(f"{key}@{partition}: offset {after.offset} started before {before.offset} ended")
    return problems


def _note(record: Record, member: str, started: int) -> None:
    directory = os.environ[DIR_ENV]
    out = _outputs.get(directory)
    if out is None:  # line-buffered: every record's line is flushed as it is written
        out = _outputs[directory] = open(Path(directory) / f"{os.getpid()}.log", "a", buffering=1)  # noqa: SIM115
    out.write(" ".join(map(str, span_of(record, member, started))) + "\n")


def handle_briefly(record: Record) -> None:
    """About 1 ms per record (the ordering test)."""
    started = time.monotonic_ns()
    time.sleep(0.001)
    _note(record, "-", started)


def _handle_as(member: str, record: Record) -> None:
    started = time.monotonic_ns()
    time.sleep(0.002)
    _note(record, member, started)


def handle_as_first(record: Record) -> None:
    """The first group member of the rebalance test (2 ms per record)."""
    _handle_as("first", record)


def handle_as_second(record: Record) -> None:
    """The second group member of the rebalance test (2 ms per record)."""
    _handle_as("second", record)


def handle_or_block(record: Record) -> None:
    """Handle at once, except the record at ``PYRALLEL_TEST_BLOCK_OFFSET``. Every attempt of that record appends
    its worker's pid to ``attempts.pids``; the first blocks its worker (and the items queued behind it) until the
    ``release`` file exists, later ones fail at once while it is missing, so the record stays incomplete without
    holding up the items of another worker."""
    started = time.monotonic_ns()
    directory = Path(os.environ[DIR_ENV])
    if record.offset == int(os.environ[BLOCK_ENV]):
        with (directory / ATTEMPTS_FILE).open("a") as out:
            out.write(f"{os.getpid()}\n")
        released = directory / RELEASE_FILE
        if len(attempt_pids(directory)) == 1:
            while not released.exists():
                time.sleep(0.01)
        elif not released.exists():
            raise RuntimeError(f"offset {record.offset} is not released yet")
    _note(record, "-", started)


def attempt_pids(directory: Path) -> list[int]:
    """Pids of the worker processes that ran the attempts of the held record, in order."""
    path = directory / ATTEMPTS_FILE
    text = path.read_text() if path.exists() else ""
    return [int(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]
