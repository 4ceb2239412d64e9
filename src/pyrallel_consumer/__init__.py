"""Pyrallel Consumer: parallel Kafka processing that never commits past an unfinished record."""

from pyrallel_consumer.config import ConfigError, ConsumerConfig
from pyrallel_consumer.consumer import PyrallelConsumer
from pyrallel_consumer.control.coordinator import (
    BrokerUnreachableError,
    MetricsSnapshot,
    MissingTopicError,
    PartitionMetrics,
)
from pyrallel_consumer.execution.engine import Completion
from pyrallel_consumer.record import Ordering, Record

__version__ = "0.1.0"

__all__ = [
    "BrokerUnreachableError",
    "Completion",
    "ConfigError",
    "ConsumerConfig",
    "MetricsSnapshot",
    "MissingTopicError",
    "Ordering",
    "PartitionMetrics",
    "PyrallelConsumer",
    "Record",
    "__version__",
]
