"""LibrdkafkaLog: librdkafka's own log lines into Python logging, a few of each kind per window, then a count.

Every confluent-kafka client the library creates gets one as its ``logger`` property, each with a logger of its own
under ``pyrallel_consumer.kafka.librdkafka`` (``.consumer``, ``.admin``, ``.dlq``, ``.transactions``, and
``.control`` for the switch controller's control-topic clients). Without it librdkafka prints to stderr: a broker
outage printed some 380 "Connection refused" lines in 20 s, as librdkafka tries the bootstrap broker again every
50 ms or so and reports each failure at ERROR.

Public (``pyrallel_consumer.LibrdkafkaLog``): an application can give its own clients the same treatment, and the
switch controller, which may use only the public API, does.

confluent-kafka calls ``log(level, "%s [%s] %s", facility, client name, text)`` with librdkafka's syslog level
already mapped to Python's (0-2 CRITICAL, 3 ERROR, 4 WARNING, 5-6 INFO, 7 DEBUG), on whichever thread serves the
client's log queue: the poller thread for the consumer (inside ``consume()``), the thread that polls or flushes a
producer, one of librdkafka's own threads for an admin client. Hence the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

LIBRDKAFKA_LOGGER = "pyrallel_consumer.kafka.librdkafka"
"""The parent of the loggers of the library's Kafka clients: set its level to quiet or open them all at once."""

BURST = 5
"""Lines of one kind let through per window; the rest of the window's lines of that kind are counted."""
WINDOW_S = 10.0
"""How long a window lasts. Its held-back count is logged with the next line of that kind after it."""
_MAX_KINDS = 256
"""Bound of the per-kind state; forgetting it only lets a kind's lines through early."""

_COORDINATOR_NOT_READY = ("Coordinator load in progress", "Coordinator not available", "Not coordinator")
"""librdkafka's words for a transaction coordinator that cannot answer yet: a fresh broker still loading its
``__transaction_state`` partitions, or a coordinator that moved. librdkafka retries every 500 ms and logs each
retry at WARNING (facility GETPID); ``init_transactions()`` fails on its own when the wait outlasts its timeout."""


class LibrdkafkaLog:
    """A client's ``logger`` property: forwards librdkafka's lines to the logger ``name``, rate-limited per kind.

    A kind is one client's facility at one level (``FAIL`` at ERROR: every connection failure, whatever the broker).
    Of each kind, ``BURST`` lines pass per ``WINDOW_S``; the last of them says that more are held back, and the
    next line of the kind after the window first logs ``suppressed N similar lines``. DEBUG lines, which only
    librdkafka's ``debug`` property produces, always pass: whoever sets it wants all of them.

    A transaction coordinator that is still loading (expected at the first transactional producer on a fresh
    broker) is logged at INFO with what it means instead of librdkafka's WARNING; any other failure to get a
    producer id keeps its level.
    """

    def __init__(self, name: str, burst: int | None = None, window_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``burst`` and ``window_s`` default to ``BURST`` and ``WINDOW_S`` as they are when the client is made."""
        self.logger = logging.getLogger(name)
        self._burst = BURST if burst is None else burst
        self._window_s = WINDOW_S if window_s is None else window_s
        self._clock = clock
        self._kinds: dict[tuple[str, str, int], tuple[float, int, int]] = {}
        """(client, facility, level) -> (when its window started, lines let through in it, lines held back)"""
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: object) -> None:
        """Called by confluent-kafka for each librdkafka line (``msg`` is ``"%s [%s] %s"``)."""
        if len(args) != 3:  # not librdkafka's shape: nothing to group it by
            self.logger.log(level, msg, *args)
            return
        facility, client, text = (str(a) for a in args)
        if level == logging.WARNING and facility == "GETPID" and any(s in text for s in _COORDINATOR_NOT_READY):
            level = logging.INFO
            text = ("the transaction coordinator is not ready yet (normal on a fresh broker, or while a coordinator "
                    "moves); librdkafka retries: " + text)
        if level <= logging.DEBUG or not self.logger.isEnabledFor(level):
            self.logger.log(level, msg, facility, client, text)
            return
        now = self._clock()
        kind = (client, facility, level)
        with self._lock:
            started, passed, held = self._kinds.get(kind, (now, 0, 0))
            ended = now - started >= self._window_s
            if ended:
                started, passed, held_before, held = now, 0, held, 0
            else:
                held_before = 0
            if passed >= self._burst:
                self._kinds[kind] = (started, passed, held + 1)
                return
            if len(self._kinds) >= _MAX_KINDS and kind not in self._kinds:
                self._kinds.clear()
            self._kinds[kind] = (started, passed + 1, held)
        if held_before:
            self.logger.log(level, "%s [%s] suppressed %d similar lines in the previous %g s window", facility,
                            client, held_before, self._window_s)
        if passed + 1 == self._burst:
            text += f" (similar lines held back for up to {self._window_s:g} s)"
        self.logger.log(level, msg, facility, client, text)
