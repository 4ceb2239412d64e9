"""BatchResult: what a batch handler returns to fail some of its records; shared by every plane.

A batch handler (``PyrallelConsumer(config, batch_handler=...)``) gets a list of records and returns None (every
record succeeded) or a :class:`BatchResult` naming the records that failed; raising fails them all. The engines
call :func:`batch_failures` right after each handler call to turn that return value into the positions of the failed
records: the async engine on the event loop, the process engine in the worker process (which is why this module
imports nothing but the record).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from pyrallel_consumer.record import Record

_LIMIT: Final = 1000
"""Characters of an error message kept, as ``describe_error`` keeps them."""


class BatchRecordError(Exception):
    """The error a record gets when a BatchResult names it failed without an exception of its own."""


class InvalidBatchResultError(TypeError):
    """A batch handler returned something else than None or a BatchResult, or named a record that was not in the
    batch: the whole attempt fails (and is retried), so a mistake never completes a record silently."""


class BatchResult:
    """The outcome of one batch attempt: the records named here failed, every other record of the batch succeeded.

    ``failed`` holds records of the batch the handler was given, either as an iterable (each gets a
    :class:`BatchRecordError`) or as a mapping from record to the exception (or message) it failed with, which
    then shows in logs, in the completion and in the dead-letter headers. The failed records are retried together
    in a smaller batch, with the retry policy; the others complete at once.
    """

    __slots__ = ("failed",)

    def __init__(self, failed: Iterable[Record[Any, Any]] | Mapping[Record[Any, Any], BaseException | str] = ()
                 ) -> None:
        if isinstance(failed, Mapping):
            pairs = [(record, _describe(error)) for record, error in failed.items()]
        else:
            pairs = [(record, ("BatchRecordError", "the batch handler named this record failed")) for record in failed]
        self.failed: tuple[tuple[Record[Any, Any], tuple[str, str]], ...] = tuple(pairs)
        """(record, (error type, message)) of each record named failed."""

    def __repr__(self) -> str:
        named = ", ".join(f"{r.topic}[{r.partition}]@{r.offset}" for r, _ in self.failed)
        return f"BatchResult(failed=[{named}])"


def batch_failures(records: list[Record[Any, Any]], returned: object) -> dict[int, tuple[str, str]]:
    """Position in ``records`` -> (error type, message) of each record the handler's return value names failed.

    Records are matched by topic, partition and offset, so a handler may name copies. Raises
    InvalidBatchResultError for a return value that is neither None nor a BatchResult, or that names a record not
    in ``records``. Called by both engines after every successful handler call (event loop or worker process).
    """
    if returned is None:
        return {}
    if not isinstance(returned, BatchResult):
        raise InvalidBatchResultError(
            f"a batch handler must return None or a BatchResult, not {type(returned).__name__}"
        )
    if not returned.failed:
        return {}
    position = {(r.topic, r.partition, r.offset): i for i, r in enumerate(records)}
    failures: dict[int, tuple[str, str]] = {}
    for record, error in returned.failed:
        index = position.get((record.topic, record.partition, record.offset))
        if index is None:
            raise InvalidBatchResultError(
                f"the BatchResult names {record.topic}[{record.partition}]@{record.offset}, which is not in the batch"
            )
        failures[index] = error
    return failures


def _describe(error: BaseException | str) -> tuple[str, str]:
    if isinstance(error, str):
        name, message = BatchRecordError.__name__, error
    else:
        name, message = type(error).__name__, str(error) or repr(error)
    if len(message) > _LIMIT:
        message = message[: _LIMIT - 3] + "..."
    return name, message
