"""What happens to a record that failed every attempt: the ExhaustionPolicy contract, its default (LogAndSkip)
and Exhaustion, which applies a policy and calls it again, with a backoff, for as long as it refuses.

The Coordinator hands Exhaustion the records whose final completion failed and cancels it for records that
are revoked or stopped; the StuckGuard asks it which records are in the policy already. Everything here runs
on the event loop (the policy is awaited in one task per record).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.control.work_manager import QueuedRecord
from pyrallel_consumer.execution.engine import Completion
from pyrallel_consumer.observability.log_events import RECORD_EXHAUSTED, event_extra
from pyrallel_consumer.record import Record

if TYPE_CHECKING:
    from pyrallel_consumer.observability.tracing import Tracing

log = logging.getLogger(__name__)


class ExhaustionPolicy(Protocol):
    """What happens to a record that failed every attempt.

    Returns True to let the record's offset be committed, False to keep it incomplete; the policy is
    then called again after a backoff (e.g. while a dead-letter topic cannot be written) and the
    record's key stays blocked meanwhile. ``outcome`` labels such records in metrics.
    """

    outcome: str

    async def __call__(self, record: Record, completion: Completion) -> bool: ...


class LogAndSkip:
    """Default exhaustion policy: log the failure, count it, and let the record's offset be committed.

    The ERROR line is event ``record_exhausted`` (outcome ``failed``); ``color`` and ``instance`` label it (the
    consumer passes its own when it creates the default policy).
    """

    outcome = "failed"

    def __init__(self, color: str | None = None, instance: str | None = None) -> None:
        self._color = color
        self._instance = instance

    async def __call__(self, record: Record, completion: Completion) -> bool:
        log.error(
            "Giving up on %s[%d]@%d after %d attempt(s): %s: %s",
            record.topic, record.partition, record.offset, completion.attempts,
            completion.error_type, completion.error_message,
            extra=event_extra(RECORD_EXHAUSTED, topic=record.topic, partition=record.partition, offset=record.offset,
                              attempts=completion.attempts, error_type=completion.error_type,
                              error=completion.error_message, outcome=self.outcome, dlq_topic=None,
                              color=self._color, instance=self._instance),
        )
        return True


class Exhaustion:
    """Runs the policy for each exhausted record until it lets the record go; its key stays blocked meanwhile.

    ``release(item, completion)`` is called once the policy let a record go; a record whose assignment is no
    longer current, or met while stopping, is left incomplete instead (the next owner or run handles it again).
    """

    def __init__(self, policy: ExhaustionPolicy | None, config: ConsumerConfig,
                 release: Callable[[QueuedRecord, Completion], None], tracing: Tracing | None = None) -> None:
        self._policy: ExhaustionPolicy = policy or LogAndSkip(config.color, config.instance_id)
        outcome = getattr(self._policy, "outcome", None)
        if not isinstance(outcome, str) or not outcome:
            raise TypeError("on_exhausted needs an 'outcome' attribute: the non-empty label its records get in "
                            "pyrallel_records_completed_total (e.g. outcome = \"parked\")")
        self.outcome = outcome
        self._config = config
        self._release = release
        self._tracing = tracing
        """With ``tracing_enabled``: the policy runs with the record's span current (a DLQ write is its child)."""
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._backing_off: set[int] = set()
        """Records whose policy refused to let them go, waiting to be tried again."""
        self._stopping = False

    def handle(self, item: QueuedRecord, completion: Completion) -> None:
        context = self._tracing.task_context(item.item_id) if self._tracing is not None else None
        self._tasks[item.item_id] = asyncio.get_running_loop().create_task(
            self._resolve(item, completion), name=f"pyrallel-exhausted-{item.item_id}", context=context
        )

    def handling(self, item_id: int) -> bool:
        """Whether the record is in the policy now (being tried, or waiting to be tried again)."""
        return item_id in self._tasks

    @property
    def backing_off(self) -> int:
        """Records the policy refused, waiting for their backoff: waiting for them would not finish them."""
        return len(self._backing_off)

    def cancel(self, item_id: int) -> None:
        task = self._tasks.pop(item_id, None)
        if task is not None:
            task.cancel()

    def stop(self) -> None:
        """The consumer stops: a policy that refused is not tried again."""
        self._stopping = True

    async def _resolve(self, item: QueuedRecord, completion: Completion) -> None:
        failures = 0
        try:
            if not item.offsets.current:
                return  # revoked or restarted before the policy ran: the next owner (or run) handles it again
            while not await self._policy(item.record, completion):
                failures += 1
                delay = min(self._config.max_retry_backoff_ms, self._config.retry_backoff_ms * 2**failures) / 1000
                self._backing_off.add(item.item_id)
                try:
                    await asyncio.sleep(max(delay, 0.05))
                finally:
                    self._backing_off.discard(item.item_id)
                if not item.offsets.current or self._stopping:
                    return  # left incomplete: the next owner (or the next run) handles it again
        finally:
            self._tasks.pop(item.item_id, None)
        self._release(item, completion)
