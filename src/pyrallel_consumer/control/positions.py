"""Positions handed to a paused consumer: where each partition of another group stood.

Blue/green strategy B runs each color in its own group. The switch controller reads the old color's committed
offsets (with their offset maps) and hands them to every instance of the new color while it is still PAUSED;
each instance commits them into its own group and restarts the partitions it holds from them, and only then are
they resumed: the new color starts where the old one stopped without leaving and re-joining its group (which
costs rebalance rounds of seconds; see docs/decisions.md, "Strategy B hands positions over to a group that stays
joined").

Built by the control server's ``POST /lifecycle/positions`` route (from JSON) or by an application calling
``Lifecycle.take_positions``; read on the event loop by the Lifecycle and the Coordinator, and on the poller
thread by the BrokerPoller (frozen values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Position:
    """The next offset to handle on a partition, and the offset map committed with it (None: no map)."""

    topic: str
    partition: int
    offset: int
    metadata: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.topic, str) or not self.topic:
            raise ValueError(f"a position needs a topic name, not {self.topic!r}")
        for name in ("partition", "offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"position {name} must be an integer >= 0, not {value!r}")
        if self.metadata is not None and not isinstance(self.metadata, str):
            raise ValueError(f"position metadata must be a string or null, not {type(self.metadata).__name__}")


def positions_from_json(payload: Any) -> list[Position]:
    """The positions of a JSON list of ``{"topic", "partition", "offset", "metadata"?}``; ValueError naming the
    first bad entry (a duplicate partition included)."""
    if not isinstance(payload, list):
        raise ValueError("positions must be a list of {topic, partition, offset, metadata} objects")
    positions: list[Position] = []
    for index, entry in enumerate(payload):
        if not isinstance(entry, dict):
            raise ValueError(f"positions[{index}] must be an object, not {type(entry).__name__}")
        unknown = sorted(set(entry) - {"topic", "partition", "offset", "metadata"})
        if unknown:
            raise ValueError(f"positions[{index}] has unknown field(s): {', '.join(unknown)}")
        try:
            positions.append(Position(entry.get("topic", ""), entry.get("partition", -1), entry.get("offset", -1),
                                      entry.get("metadata")))
        except ValueError as exc:
            raise ValueError(f"positions[{index}]: {exc}") from None
    check_distinct(positions)
    return positions


def check_distinct(positions: Sequence[Position]) -> None:
    """ValueError when two positions name the same partition: which one should win is not ours to guess."""
    seen: set[tuple[str, int]] = set()
    for p in positions:
        if (p.topic, p.partition) in seen:
            raise ValueError(f"two positions for {p.topic}[{p.partition}]")
        seen.add((p.topic, p.partition))
