"""Batch handlers of the integration tests, for both engines, and what they recorded.

Every handler call is one line per record in a file of its worker process (``batch-<pid>.log``, under the directory
named by ``PYRALLEL_TEST_DIR``) for the process engine, or in a :class:`CallLog` in memory for the async engine:
which call handled it, where it stood in the call's list, and when the call ran (``time.monotonic_ns()``, a
system-wide clock on Linux, so calls of different processes compare).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple, TextIO

from tests.support import seq_of

from pyrallel_consumer.record import Record

DIR_ENV = "PYRALLEL_TEST_DIR"
_calls = itertools.count(1)
_outputs: dict[str, TextIO] = {}


class Handled(NamedTuple):
    """One record as one handler call saw it."""

    call: str
    position: int
    partition: int
    offset: int
    key: str
    seq: int
    started: int
    ended: int


def handled_in_call(records: list[Record], started: int) -> list[Handled]:
    call = f"{os.getpid()}-{next(_calls)}"
    ended = time.monotonic_ns()
    return [Handled(call, i, r.partition, r.offset, r.key.decode() if r.key else "-", seq_of(r.value), started, ended)
            for i, r in enumerate(records)]


class CallLog:
    """What the batch handler of one test handled: in memory (async engine) or in the workers' files (process)."""

    def __init__(self, engine: str, directory: Path) -> None:
        self.engine = engine
        self.directory = directory
        self._handled: list[Handled] = []

    def add(self, handled: list[Handled]) -> None:
        self._handled.extend(handled)

    def handled(self) -> list[Handled]:
        if self.engine == "async":
            return list(self._handled)
        out = []
        for path in sorted(self.directory.glob("batch-*.log")):
            for line in path.read_text().splitlines(keepends=True):
                if line.endswith("\n"):  # a line being written is read next time
                    call, *numbers, key = line.split()
                    position, partition, offset, seq, started, ended = map(int, numbers)
                    out.append(Handled(call, position, partition, offset, key, seq, started, ended))
        return out

    def calls(self) -> dict[str, list[Handled]]:
        """Each call's records in the order the handler got them."""
        by_call: dict[str, list[Handled]] = defaultdict(list)
        for h in self.handled():
            by_call[h.call].append(h)
        return {call: sorted(records, key=lambda h: h.position) for call, records in by_call.items()}


def key_order_violations(handled: list[Handled]) -> list[str]:
    """Records of one key that ran out of offset order: later in a call than a higher offset of their key, or in a
    call that started before the call of the key's previous record ended (empty when ordering held)."""
    by_key: dict[tuple[int, str], list[Handled]] = defaultdict(list)
    for h in sorted(handled, key=lambda h: (h.started, h.call, h.position)):
        by_key[(h.partition, h.key)].append(h)
    problems = []
    for (partition, key), records in by_key.items():
        for before, after in pairwise(records):
            if after.offset < before.offset:
                problems.append(f"{key}@{partition}: offset {after.offset} ran after {before.offset}")
            if after.call != before.call and after.started < before.ended:
                problems.append(f"{key}@{partition}: the call of offset {after.offset} started before the call of "
                                f"{before.offset} ended")
    return problems


def _write(handled: list[Handled]) -> None:
    directory = os.environ[DIR_ENV]
    out = _outputs.get(directory)
    if out is None:
        out = _outputs[directory] = open(Path(directory) / f"batch-{os.getpid()}.log", "a")  # noqa: SIM115
    out.write("".join(f"{h.call} {h.position} {h.partition} {h.offset} {h.seq} {h.started} {h.ended} {h.key}\n"
                      for h in handled))
    out.flush()


def handle_batch_briefly(records: list[Record]) -> None:
    """Process engine: about 2 ms per call, whatever its size (a bulk write)."""
    started = time.monotonic_ns()
    time.sleep(0.002)
    _write(handled_in_call(records, started))


async def handle_batch_briefly_async(records: list[Record], log: CallLog) -> None:
    """Async engine: the same, into ``log``."""
    started = time.monotonic_ns()
    await asyncio.sleep(0.002)
    log.add(handled_in_call(records, started))
