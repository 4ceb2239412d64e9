"""The record a handler receives and the ordering modes: the vocabulary shared by every plane."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Ordering(StrEnum):
    """How records may overlap in time.

    KEY: records with the same key run one at a time in offset order (keyless records: per partition).
    PARTITION: one at a time per partition. UNORDERED: any record may run beside any other.
    Commits are safe in every mode; ordering only decides what may run concurrently.
    """

    KEY = "key"
    PARTITION = "partition"
    UNORDERED = "unordered"


Header = tuple[str, bytes | None]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record, detached from librdkafka so it can cross threads and processes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()
    timestamp: int = -1
    """Milliseconds since the epoch as Kafka stored it (create or log-append time); -1 when unknown."""
