"""Pyrallel Consumer: parallel Kafka processing that never commits past an unfinished record."""

__version__ = "0.1.0"
