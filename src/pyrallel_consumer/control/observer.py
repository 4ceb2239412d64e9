"""Hooks the control plane calls on notable events, so metrics live outside it and cost nothing when off.

Public (``pyrallel_consumer.ConsumerObserver``): pass a subclass as ``PyrallelConsumer(..., observer=...)``; the
consumer's Prometheus exporter forwards every hook to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyrallel_consumer.execution.engine import Completion
    from pyrallel_consumer.record import Record


class ConsumerObserver:
    """Does nothing; a metrics exporter overrides what it needs. Every method runs on the event loop."""

    def records_received(self, count: int) -> None:
        """``count`` fetched records entered the work queues."""

    def record_completed(self, record: Record, completion: Completion) -> None:
        """The engine reported how ``record``'s attempts ended (ok, or failed after its retries), before the control
        plane acts on it (exhaustion policy, commit). Not called for records cancelled by a revoke, a pause or a
        stop: those run again. Keep it cheap: it runs once per record on the event loop."""

    def record_finished(self, outcome: str, duration_s: float, attempts: int) -> None:
        """A record left the in-flight set: outcome is success, retried (success after retries), failed or dlq."""

    def batch_dispatched(self, records: int) -> None:
        """A batch of ``records`` records went to the batch handler (its first attempt; retries of its failed
        records are not batches of their own here)."""

    def commit_finished(self, latency_s: float, ok: bool) -> None:
        """One partition's commit was acknowledged (ok) or refused by the broker."""

    def commits_refused_in_rebalance(self, partitions: int) -> None:
        """The broker refused the commit of ``partitions`` partitions because the group was rebalancing: expected,
        and not an ``error``; the next commit after the rebalance sends the same progress."""

    def rebalanced(self, kind: str, partitions: int) -> None:
        """kind is assign, revoke or lost."""

    def error(self, kind: str) -> None:
        """A failure worth alerting on: commit, poller, handler (a record failed every attempt), deserialization
        (a poison record), dlq."""

    def lifecycle_changed(self, state: str) -> None:
        """The consumer entered a lifecycle state (STARTING, ACTIVE, DRAINING, PAUSED, STOPPED)."""
