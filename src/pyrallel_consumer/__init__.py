"""Pyrallel Consumer: parallel Kafka processing that never commits past an unfinished record.

The public API is the names below. They are imported on first use (PEP 562), so ``import pyrallel_consumer``
costs nothing until one is touched: a worker process of the process engine, or a CLI that only prints its help,
does not load the control plane, confluent-kafka or prometheus-client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # "X as X": re-exported names, for type checkers and linters; a test keeps them equal to _PUBLIC
    from pyrallel_consumer.batch import BatchResult as BatchResult
    from pyrallel_consumer.config import ConfigError as ConfigError
    from pyrallel_consumer.config import ConsumerConfig as ConsumerConfig
    from pyrallel_consumer.consumer import PyrallelConsumer as PyrallelConsumer
    from pyrallel_consumer.control.exhaustion import ExhaustionPolicy as ExhaustionPolicy
    from pyrallel_consumer.control.exhaustion import LogAndSkip as LogAndSkip
    from pyrallel_consumer.control.lifecycle import LifecycleState as LifecycleState
    from pyrallel_consumer.control.observer import ConsumerObserver as ConsumerObserver
    from pyrallel_consumer.control.positions import Position as Position
    from pyrallel_consumer.deserialization import DeserializationError as DeserializationError
    from pyrallel_consumer.deserialization import KeyDeserializationError as KeyDeserializationError
    from pyrallel_consumer.deserialization import ValueDeserializationError as ValueDeserializationError
    from pyrallel_consumer.execution.engine import (
        Completion as Completion,
    )
    from pyrallel_consumer.execution.engine import (
        CompletionCallback as CompletionCallback,
    )
    from pyrallel_consumer.execution.engine import (
        ExecutionEngine as ExecutionEngine,
    )
    from pyrallel_consumer.execution.engine import (
        HandlerTimeoutError as HandlerTimeoutError,
    )
    from pyrallel_consumer.execution.engine import (
        WorkItem as WorkItem,
    )
    from pyrallel_consumer.kafka.clients import KafkaClients as KafkaClients
    from pyrallel_consumer.kafka.topic_check import BrokerUnreachableError as BrokerUnreachableError
    from pyrallel_consumer.kafka.topic_check import MissingTopicError as MissingTopicError
    from pyrallel_consumer.observability.librdkafka_log import LibrdkafkaLog as LibrdkafkaLog
    from pyrallel_consumer.observability.log_events import LogEventSpec as LogEventSpec
    from pyrallel_consumer.observability.snapshot import MetricsSnapshot as MetricsSnapshot
    from pyrallel_consumer.observability.snapshot import PartitionMetrics as PartitionMetrics
    from pyrallel_consumer.output import Output as Output
    from pyrallel_consumer.record import Ordering as Ordering
    from pyrallel_consumer.record import Record as Record

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    "BatchResult": "pyrallel_consumer.batch",
    "BrokerUnreachableError": "pyrallel_consumer.kafka.topic_check",
    "Completion": "pyrallel_consumer.execution.engine",
    "CompletionCallback": "pyrallel_consumer.execution.engine",
    "ConfigError": "pyrallel_consumer.config",
    "ConsumerConfig": "pyrallel_consumer.config",
    "ConsumerObserver": "pyrallel_consumer.control.observer",
    "DeserializationError": "pyrallel_consumer.deserialization",
    "ExecutionEngine": "pyrallel_consumer.execution.engine",
    "ExhaustionPolicy": "pyrallel_consumer.control.exhaustion",
    "HandlerTimeoutError": "pyrallel_consumer.execution.engine",
    "KeyDeserializationError": "pyrallel_consumer.deserialization",
    "KafkaClients": "pyrallel_consumer.kafka.clients",
    "LibrdkafkaLog": "pyrallel_consumer.observability.librdkafka_log",
    "LifecycleState": "pyrallel_consumer.control.lifecycle",
    "LogAndSkip": "pyrallel_consumer.control.exhaustion",
    "LogEventSpec": "pyrallel_consumer.observability.log_events",
    "MetricsSnapshot": "pyrallel_consumer.observability.snapshot",
    "MissingTopicError": "pyrallel_consumer.kafka.topic_check",
    "Ordering": "pyrallel_consumer.record",
    "Output": "pyrallel_consumer.output",
    "PartitionMetrics": "pyrallel_consumer.observability.snapshot",
    "Position": "pyrallel_consumer.control.positions",
    "PyrallelConsumer": "pyrallel_consumer.consumer",
    "Record": "pyrallel_consumer.record",
    "ValueDeserializationError": "pyrallel_consumer.deserialization",
    "WorkItem": "pyrallel_consumer.execution.engine",
}
"""Public name -> the module that defines it."""

__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pyrallel_consumer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
