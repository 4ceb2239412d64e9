"""Prometheus metrics (``observability.metrics``) and log formatting (``observability.logging``) of a consumer, and
the switch for its tracing (``tracing_for``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyrallel_consumer.config import ConsumerConfig
    from pyrallel_consumer.observability.tracing import Tracing


def tracing_for(config: ConsumerConfig) -> Tracing | None:
    """A consumer's spans when ``tracing_enabled`` is set; opentelemetry is imported only then. Called once by the
    constructors of PyrallelConsumer and PyrallelShareConsumer."""
    if not config.tracing_enabled:
        return None
    from pyrallel_consumer.observability.tracing import Tracing

    return Tracing(config.group_id)
