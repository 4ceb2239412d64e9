"""Execution plane: engines that run the user's handler behind the ExecutionEngine contract."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.execution.engine import ExecutionEngine, RetryPolicy

if TYPE_CHECKING:
    from pyrallel_consumer.observability.tracing import Tracing


def retry_policy(config: ConsumerConfig) -> RetryPolicy:
    return RetryPolicy(
        max_retries=config.max_retries,
        backoff_s=config.retry_backoff_ms / 1000,
        max_backoff_s=config.max_retry_backoff_ms / 1000,
        timeout_s=config.task_timeout_ms / 1000,
    )


def create_engine(config: ConsumerConfig, handler: Any, *, batch: bool = False,
                  tracing: Tracing | None = None) -> ExecutionEngine:
    """The engine named by ``config.engine``; the control plane only ever sees the contract.

    ``batch=True``: ``handler`` is a batch handler, and the engine takes ``submit_batch`` instead of ``submit``.
    ``tracing``: the consumer's spans (``tracing_enabled``), which the engine makes current around handler calls.
    """
    if config.engine == "async":
        from pyrallel_consumer.execution.async_engine import AsyncExecutionEngine

        return AsyncExecutionEngine(handler, retry_policy(config), batch=batch, tracing=tracing)
    from pyrallel_consumer.execution.process.engine import ProcessExecutionEngine

    return ProcessExecutionEngine(handler, retry_policy(config), config, batch=batch, tracing=tracing)
