"""Output: a record a handler asks the library to produce, and the check of what a handler returned.

Under ``processing_guarantee="exactly_once"`` a handler returns ``None`` or a list (or tuple) of ``Output``; the
library produces them in the Kafka transaction that also commits the handled record's offset. Returning them
(instead of calling a producer) is what lets one API work for both engines: a process-engine worker sends them
back to the parent with the completion. ``outputs_of`` is called by both engines after every successful handler
call (the async engine on the event loop, a process-engine worker on its main thread); a return value it refuses
makes that attempt fail with a TypeError, retried like any other failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OutputHeader = tuple[str, bytes | None]


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce: ``value`` and ``key`` as bytes or None (a str is encoded as UTF-8 and kept as bytes).

    ``partition`` None lets the producer's partitioner choose (by key), so outputs with the same key land in one
    partition in the order their input records were handled.
    """

    topic: str
    value: bytes | str | None
    key: bytes | str | None = None
    headers: tuple[OutputHeader, ...] = ()
    partition: int | None = None

    def __post_init__(self) -> None:
        if (type(self.value) is bytes and (self.key is None or type(self.key) is bytes) and self.headers == ()
                and self.partition is None and type(self.topic) is str and self.topic):
            return  # the common case, checked cheaply: it runs once per record on the hot path
        if not isinstance(self.topic, str) or not self.topic:
            raise TypeError(f"Output.topic must be a non-empty str, not {self.topic!r}")
        for name in ("value", "key"):
            field = getattr(self, name)
            if field is not None and not isinstance(field, (bytes, str)):
                raise TypeError(f"Output.{name} must be bytes, str or None, not {type(field).__name__}")
            object.__setattr__(self, name, _as_bytes(field))  # stored as bytes: equal whichever engine ran it
        if self.partition is not None and (not isinstance(self.partition, int) or isinstance(self.partition, bool)
                                           or self.partition < 0):
            raise TypeError(f"Output.partition must be a partition number >= 0 or None, not {self.partition!r}")
        headers = tuple(self.headers)
        for header in headers:
            if (not isinstance(header, tuple) or len(header) != 2 or not isinstance(header[0], str)
                    or not (header[1] is None or isinstance(header[1], bytes))):
                raise TypeError(f"Output.headers must be (str, bytes | None) pairs, not {header!r}")
        object.__setattr__(self, "headers", headers)

    def as_wire(self) -> tuple[Any, ...]:
        """The tuple a process-engine worker sends to the parent (msgpack): topic, value, key, headers, partition."""
        return (self.topic, _as_bytes(self.value), _as_bytes(self.key), self.headers, self.partition)

    @classmethod
    def from_wire(cls, fields: tuple[Any, ...] | list[Any]) -> Output:
        topic, value, key, headers, partition = fields
        return cls(topic, value, key, tuple((str(n), v) for n, v in headers), partition)


def _as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def outputs_of(result: object) -> tuple[Output, ...]:
    """The outputs a handler returned: ``None`` for none, else a list or tuple of ``Output``; TypeError otherwise."""
    if result is None:
        return ()
    if isinstance(result, (list, tuple)):
        for output in result:
            if not isinstance(output, Output):
                raise TypeError(f"a handler returns None or a list of pyrallel_consumer.Output; the list held a "
                                f"{type(output).__name__}")
        return tuple(result)
    raise TypeError(f"a handler returns None or a list of pyrallel_consumer.Output, not {type(result).__name__}")
