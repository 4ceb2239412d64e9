"""The parent's side of worker logging: records the workers send are handled by the parent's loggers.

The supervisor reads LOG messages on the event loop's thread and puts them on the relay's queue; the relay's
``QueueListener`` thread hands each to the parent's logger of the same name, so the parent's logging
configuration applies to worker records as to its own. :func:`logging_levels` gives the workers the parent's
levels, so they drop the same records before they cross the pipe.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
from typing import Any

from pyrallel_consumer.execution.process import codec


class WorkerLogRelay:
    """The queue and listener thread that hand worker log records to the parent's loggers."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(self._queue, _ForwardToParentLoggers())

    def start(self) -> None:
        self._listener.start()

    def deliver(self, fields: dict[str, Any]) -> None:
        """Queue the record of a LOG message; never blocks."""
        self._queue.put_nowait(codec.decode_log(fields))

    def stop(self) -> None:
        """Hand over every record queued so far, then stop the listener thread."""
        self._listener.stop()


class _ForwardToParentLoggers(logging.Handler):
    """Hands a worker's record to the parent's logger of the same name, so the parent's configuration applies."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def logging_levels() -> dict[str, int]:
    """Levels the parent set explicitly, so workers drop the same records before they cross the pipe."""
    levels = {"": logging.getLogger().getEffectiveLevel()}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels
