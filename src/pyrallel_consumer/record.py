"""The record a handler receives and the ordering modes: the vocabulary shared by every plane."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Generic

if TYPE_CHECKING:  # defaults (PEP 696) for type checkers only, so the runtime needs no typing_extensions
    from typing_extensions import TypeVar

    K = TypeVar("K", covariant=True, default=bytes | None)
    V = TypeVar("V", covariant=True, default=bytes | None)
else:
    from typing import TypeVar

    K = TypeVar("K", covariant=True)
    V = TypeVar("V", covariant=True)


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
class Record(Generic[K, V]):
    """One Kafka record, detached from librdkafka so it can cross threads and processes.

    ``key`` and ``value`` are the bytes as fetched, unless ``key_deserializer`` / ``value_deserializer`` are
    configured: a handler then gets them deserialized, and annotates what it expects, e.g. ``Record[str, Order]``
    (a bare ``Record`` is ``Record[bytes | None, bytes | None]``). Records are hashed by everything but key and
    value, which need not be hashable once deserialized (a dict); equality still compares them.
    """

    topic: str
    partition: int
    offset: int
    key: K = field(hash=False)
    value: V = field(hash=False)
    headers: tuple[Header, ...] = ()
    timestamp: int = -1
    """Milliseconds since the epoch as Kafka stored it (create or log-append time); -1 when unknown."""


def _refuse_assignment(self: Record[object, object], name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


# Before Python 3.13, Record[str, Order](...) sets __orig_class__ on the new instance and expects an AttributeError
# from a class that refuses it; the __setattr__ that dataclass(frozen=True, slots=True) writes raises a TypeError
# there instead (it calls super() with the class it replaced, cpython gh-90562).
Record.__setattr__ = _refuse_assignment  # type: ignore[method-assign,assignment]
