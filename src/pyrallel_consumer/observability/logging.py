"""Logging setup shared by the CLI and applications: text for people, one JSON object per line for log pipelines.

The library itself never configures logging; ``configure_logging`` is for the program that owns the process.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, Literal

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LIBRDKAFKA_LOGGER = "pyrallel_consumer.librdkafka"
"""The logger librdkafka's own lines go to (the ``logger`` property of the library's Kafka clients)."""

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted as a field.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then every field passed with ``extra=``.

    ``log.info("Committed %s[%d]@%d", topic, partition, offset, extra={"topic": topic, ...})`` keeps the
    human message and makes the same values queryable; values JSON cannot encode are written with ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry.setdefault(key, value)  # an extra never overwrites the four fields above
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    log_format: LogFormat = "text", level: int | str = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) as text or JSON lines, at ``level``.

    Replaces the plain console handler that ``logging.basicConfig`` or an earlier call installed, so switching
    format never prints every line twice; other handlers (files, test capture) are kept.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"log_format must be 'text' or 'json', not {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


_VARYING = re.compile(r"\d+(?:\.\d+)?ms\b|\d+ identical error\(s\) suppressed")
"""Parts of librdkafka's lines that differ between repeats of one event: durations ("after 0ms"), counts."""


class RepeatFilter(logging.Filter):
    """Lets one WARNING-or-worse line of a kind through per ``interval_s``; the next one says how many were held.

    While the bootstrap broker refuses connections, librdkafka tries again every 50 ms (each re-bootstrap
    resets its exponential reconnect backoff) and reports every failure at ERROR: twenty lines a second for as
    long as the broker is away. Lines that differ only in durations or counts are one kind. Lower levels (the
    output of librdkafka's ``debug`` property) always pass. Runs on whichever thread logs, e.g. a consumer's
    poller thread, hence the lock.
    """

    def __init__(self, interval_s: float = 10.0, max_kinds: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._interval_s = interval_s
        self._max_kinds = max_kinds
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}
        """kind -> (when its last line was let through, lines held back since)"""
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        kind = (record.name, record.levelno, _VARYING.sub("#", message))
        now = self._clock()
        with self._lock:
            last = self._kinds.get(kind)
            if last is not None and now - last[0] < self._interval_s:
                self._kinds[kind] = (last[0], last[1] + 1)
                return False
            if len(self._kinds) >= self._max_kinds:  # bounded memory: forgetting only lets a line through early
                self._kinds.clear()
            self._kinds[kind] = (now, 0)
        if last is not None and last[1]:
            record.msg = f"{message} ({last[1]} more like it in the last {now - last[0]:.1f}s)"
            record.args = ()
        return True


_REPEATS = RepeatFilter()


def librdkafka_logger(name: str = LIBRDKAFKA_LOGGER) -> logging.Logger:
    """The logger for a Kafka client's ``logger`` property, with repeated lines held back (``RepeatFilter``).

    Called when the library builds a client configuration (consumer, topic check, dead-letter producer).
    """
    logger = logging.getLogger(name)
    logger.addFilter(_REPEATS)  # once: addFilter ignores a filter the logger has already
    return logger
