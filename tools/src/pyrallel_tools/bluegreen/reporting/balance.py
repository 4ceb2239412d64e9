"""How the work of one run was spread over its instances: records handled and partitions owned per instance.

A switch can leave the new color unbalanced (one instance with every partition, another ACTIVE with none), which
the controller's step time and the processing gap do not show. Computed from the run's samples; called by
:mod:`pyrallel_tools.bluegreen.reporting.markdown` for the per-run balance table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from pyrallel_tools.bluegreen.criteria import longest_idle_active
from pyrallel_tools.bluegreen.run_record import Sample

__all__ = ["InstanceBalance", "balance", "handled_over_lives"]


@dataclass(frozen=True, slots=True)
class InstanceBalance:
    """One instance's row of the balance table; the partition figures are None where no sample tells them."""

    color: str
    instance: str
    handled: int
    """Records handled over the run: per process life its highest sampled counter, summed over the lives."""
    lives: int
    """Process lives seen in the samples: 1, plus one per restart (a counter that went down)."""
    most_owned: int | None
    """Most partitions owned at once."""
    owned_at_end: int | None
    """Partitions owned at the instance's last ACTIVE sample; None when it was never ACTIVE."""
    longest_idle_s: float | None
    """Longest stretch ACTIVE with no partition, by the run's balance criterion's rule."""


def handled_over_lives(handled: Sequence[int]) -> tuple[int, int]:
    """(records handled, lives) from one instance's sampled counters in time order: a counter that went down was
    restarted from 0, so each life counts with its highest value (the sampler keeps a DOWN instance's last count)."""
    if not handled:
        return 0, 0
    total, lives, best = 0, 1, handled[0]
    for prev, cur in pairwise(handled):
        if cur < prev:
            total, lives, best = total + best, lives + 1, cur
        best = max(best, cur)
    return total + best, lives


def _partitions(environment: Mapping[str, Any]) -> int:
    """The run's partition count for the idle rule; without one the rule's 'no more instances than partitions'
    condition is left out."""
    value = environment.get("partitions")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1 << 30


def balance(samples: Sequence[Sample], environment: Mapping[str, Any]) -> list[InstanceBalance]:
    """One row per instance (sorted by color, instance); empty without samples."""
    per: dict[tuple[str, str], list[Sample]] = {}
    for s in sorted(samples, key=lambda x: x.t):
        per.setdefault((s.color, s.instance), []).append(s)
    partitions = _partitions(environment)
    rows: list[InstanceBalance] = []
    for (color, instance), mine in sorted(per.items()):
        handled, lives = handled_over_lives([s.handled for s in mine])
        owned = [s.assigned for s in mine if s.assigned is not None]
        active = [s for s in mine if s.state == "ACTIVE" and s.assigned is not None]
        idle: float | None = None
        if owned:
            # The criterion's own rule, for this instance alone: the others' samples count as ACTIVE instances
            # of their color but never as idle.
            only_me = [s if s.instance == instance else dataclasses.replace(s, assigned=None) for s in samples]
            idle = longest_idle_active(only_me, partitions)[0]
        rows.append(InstanceBalance(color, instance, handled, lives, max(owned) if owned else None,
                                    active[-1].assigned if active else None, idle))
    return rows
