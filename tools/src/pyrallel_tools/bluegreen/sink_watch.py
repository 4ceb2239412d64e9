"""Handling times for strategy E: tail the FileStreamSink files and stamp each new line with when it was seen.

A Kafka Connect FileStreamSink writes each record's value as one line of ``sink-<color>.txt`` and logs no time.
The scenario runner (:mod:`pyrallel_tools.bluegreen.scenarios`) creates a :class:`SinkWatcher` for a strategy-E
run, calls :meth:`SinkWatcher.start` from its own thread before the connectors start and :meth:`SinkWatcher.stop`
from the same thread after they stopped.  In between, the watcher's daemon thread (``sink-watch``) reads the new
bytes of each file every ``poll_s``; :meth:`SinkWatcher.poll_once` is that step, also called directly by tests.

The stamp ``ts`` is when the line was **seen by the watcher**: an upper bound of its handling time, late by at
most the poll period plus the read (the task's ``println`` reaches the file at once, not at the offset flush:
measured 2 ms median, 21 ms max from the producer's ack to the line in the file on our worker).  At stop it
writes per color ``observed-<color>.jsonl`` in the consumer-log format (partition and offset joined from the
producer log by ``seq``), so that :mod:`pyrallel_tools.bluegreen.validation.switch_impact` measures E like B and C.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pyrallel_consumer.bluegreen.controller import COLORS
from pyrallel_tools.bluegreen.validation.load import load_producer_log

__all__ = ["SinkWatchStats", "SinkWatcher"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SinkWatchStats:
    """What the watcher saw and could not use; returned by :meth:`SinkWatcher.stop`."""

    lines: int = 0
    """Complete lines seen, over both colors."""
    written: int = 0
    """Lines written to the observed logs."""
    malformed: int = 0
    """Complete lines that are not a JSON object with int seq, str key and int key_seq (blank lines excluded)."""
    not_produced: int = 0
    """Lines whose seq is not in the producer log: no partition/offset to join, left out of the observed log."""
    unterminated: int = 0
    """Files that still ended in a partial line at stop (left out)."""


class _Tail:
    """One sink file, read from where the last read ended; bytes after the last newline wait for the rest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self._partial = b""

    def read_lines(self) -> list[bytes]:
        """The lines completed since the last call (no newline); [] while the file does not exist."""
        if self._fh is None:
            try:
                self._fh = self.path.open("rb")
            except FileNotFoundError:
                return []
        data = self._fh.read()
        if not data:
            return []
        *lines, self._partial = (self._partial + data).split(b"\n")
        return lines

    def close(self) -> bool:
        """Close the file; True when a partial line was left."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        return bool(self._partial.strip())


def _identity(line: bytes) -> tuple[int, str, int] | None:
    """seq, key and key_seq of a sink line; a JSON string holding the object (double-encoded) is unwrapped once."""
    try:
        value: Any = json.loads(line)
        if type(value) is str:
            value = json.loads(value)
        seq, key, key_seq = value["seq"], value["key"], value["key_seq"]
    except (ValueError, KeyError, TypeError):
        return None
    if type(seq) is not int or type(key) is not str or type(key_seq) is not int:
        return None
    return seq, key, key_seq


class SinkWatcher:
    """Tails ``work/sink-<color>.txt`` of both colors from :meth:`start` until :meth:`stop`.

    ``instances`` maps a color to its connector's name (the ``instance`` of its lines; default ``sink-<color>``);
    ``producer_log`` defaults to ``work/producer.jsonl``.
    """

    def __init__(self, work: Path, instances: Mapping[str, str] | None = None,
                 producer_log: Path | None = None, poll_s: float = 0.05) -> None:
        self.work = work
        self.producer_log = producer_log if producer_log is not None else work / "producer.jsonl"
        self.poll_s = poll_s
        self.instances = {c: (instances or {}).get(c, f"sink-{c}") for c in COLORS}
        self.stats = SinkWatchStats()
        self._tails = {c: _Tail(work / f"sink-{c}.txt") for c in COLORS}
        self._seen: dict[str, list[tuple[int, str, int, float]]] = {c: [] for c in COLORS}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, name="sink-watch", daemon=True)

    @property
    def observed_logs(self) -> list[Path]:
        """The logs :meth:`stop` writes, one per color, in consumer-log format."""
        return [self.work / f"observed-{c}.jsonl" for c in COLORS]

    def start(self) -> None:
        self._thread.start()

    def poll_once(self) -> int:
        """Read each file's new lines and stamp them with the time now; the number of new complete lines."""
        new = 0
        with self._lock:
            for color, tail in self._tails.items():
                lines = tail.read_lines()
                now = time.time()
                for line in lines:
                    identity = _identity(line)
                    if identity is not None:
                        self._seen[color].append((*identity, now))
                    elif line.strip():
                        self.stats.malformed += 1
                new += len(lines)
            self.stats.lines += new
        return new

    def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except OSError as exc:
                log.warning("Reading the sink files: %s", exc)
            self._stopping.wait(self.poll_s)

    def stop(self) -> SinkWatchStats:
        """Stop the thread, read what is left and write :attr:`observed_logs`; a second call does nothing."""
        if self._stopped:
            return self.stats
        self._stopped = True
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.poll_once()
        self.stats.unterminated = sum(tail.close() for tail in self._tails.values())
        where = self._producer_positions()
        for color, path in zip(COLORS, self.observed_logs, strict=True):
            self._write(path, color, where)
        if self.stats.malformed or self.stats.not_produced or self.stats.unterminated:
            log.warning("Sink watch left lines out: %s", self.stats)
        return self.stats

    def _producer_positions(self) -> dict[int, tuple[int, int]]:
        """seq -> (partition, offset) of its first acked send; {} without a producer log."""
        where: dict[int, tuple[int, int]] = {}
        if not self.producer_log.exists():
            log.warning("No producer log %s: nothing to join the sink lines with", self.producer_log)
            return where
        for p in load_producer_log(self.producer_log):
            where.setdefault(p.seq, (p.partition, p.offset))
        return where

    def _write(self, path: Path, color: str, where: Mapping[int, tuple[int, int]]) -> None:
        instance = self.instances[color]
        with path.open("w") as out:
            for seq, key, key_seq, ts in self._seen[color]:
                position = where.get(seq)
                if position is None:
                    self.stats.not_produced += 1
                    continue
                out.write(json.dumps({"seq": seq, "key": key, "key_seq": key_seq, "partition": position[0],
                                      "offset": position[1], "color": color, "instance": instance, "ts": ts,
                                      "ok": True}) + "\n")
                self.stats.written += 1
