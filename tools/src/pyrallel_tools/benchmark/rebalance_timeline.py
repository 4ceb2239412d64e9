"""Hand-over figures of one rebalance event, from the members' ownership timelines. Pure code, unit-tested.

Every member of a ``pyrallel bench --suite rebalance`` group appends one JSON line per ownership change to its
own log (:mod:`pyrallel_tools.benchmark.rebalance_member`): the time, the member, what happened and the
partitions it owns *after* the change. The runner (:mod:`pyrallel_tools.benchmark.rebalance`, main thread)
reads those logs while it waits for the group to settle and once more to measure the event:

* a partition is **owned** at time ``t`` when at least one member owns it after its last change at or before
  ``t``; its **unowned time** is each stretch during which no member owns it (the union over members);
* the group is **settled** when every partition is owned by a member expected in the group after the event, and,
  when there are at least as many partitions as expected members, each of those members owns at least one.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Change:
    """One line of a member's log: at ``t`` (seconds since the epoch) ``member`` owns ``owned`` after ``kind``
    (subscribe, assign, revoke, lost, leave or closed)."""

    t: float
    member: str
    kind: str
    owned: frozenset[int]


@dataclass(frozen=True, slots=True)
class HandOver:
    """What one event cost, measured from its start to the end of the observation window."""

    max_unowned_s: float
    """The longest single stretch during which one partition had no owner (0.0 when none had)."""
    unowned_partitions: int
    """Partitions that had no owner at some moment of the window."""
    settle_s: float | None
    """From the event's start until the group settled for the last time in the window; None when it is not
    settled at the window's end."""
    changes: int
    """Ownership changes (assign, revoke, lost) in the window."""


def parse_changes(text: str) -> list[Change]:
    """The changes of one member's log; a torn or malformed line (the member was killed mid-write) is skipped."""
    changes = []
    for line in text.splitlines():
        try:
            raw = json.loads(line)
            changes.append(Change(float(raw["t"]), str(raw["member"]), str(raw["kind"]),
                                  frozenset(int(p) for p in raw["owned"])))
        except (ValueError, KeyError, TypeError):
            continue
    return changes


def first_time(changes: Iterable[Change], member: str, kind: str) -> float | None:
    """When ``member`` first logged ``kind`` (e.g. its subscribe or its leave), if it did."""
    times = [c.t for c in changes if c.member == member and c.kind == kind]
    return min(times) if times else None


def is_settled(owned: dict[str, frozenset[int]], partitions: int, expected: Collection[str]) -> bool:
    """Every partition owned by an expected member, and each of them owning one when there are enough."""
    covered: set[int] = set()
    for member in expected:
        covered |= owned.get(member, frozenset())
    if covered != set(range(partitions)):
        return False
    return partitions < len(expected) or all(owned.get(m) for m in expected)


def hand_over(changes: Sequence[Change], partitions: int, expected: Collection[str], start: float,
              end: float) -> HandOver:
    """The figures of the event that started at ``start``, observed until ``end``.

    ``changes`` are every member's lines (any order); ``expected`` the members in the group after the event. A
    stretch without owner that is still open at ``end`` counts up to ``end``. Changes at the same instant are
    applied together before the state is judged, so a hand-over logged by two members at the same microsecond
    is no gap.
    """
    if end < start:
        raise ValueError(f"the window ends ({end}) before it starts ({start})")
    ordered = sorted(changes, key=lambda c: c.t)
    owned: dict[str, frozenset[int]] = {}
    i = 0
    while i < len(ordered) and ordered[i].t <= start:
        owned[ordered[i].member] = ordered[i].owned
        i += 1
    unowned_since: dict[int, float] = {p: start for p in _unowned(owned, partitions)}
    settled_since: float | None = start if is_settled(owned, partitions, expected) else None
    longest, touched, count = 0.0, set(unowned_since), 0
    while i < len(ordered) and ordered[i].t <= end:
        t = ordered[i].t
        while i < len(ordered) and ordered[i].t == t:
            change = ordered[i]
            count += change.kind in ("assign", "revoke", "lost")
            owned[change.member] = change.owned
            i += 1
        now_unowned = _unowned(owned, partitions)
        for p in now_unowned - set(unowned_since):
            unowned_since[p] = t
            touched.add(p)
        for p in set(unowned_since) - now_unowned:
            longest = max(longest, t - unowned_since.pop(p))
        if is_settled(owned, partitions, expected):
            settled_since = t if settled_since is None else settled_since
        else:
            settled_since = None
    for since in unowned_since.values():
        longest = max(longest, end - since)
    settle = None if settled_since is None else settled_since - start
    return HandOver(round(longest, 6), len(touched), None if settle is None else round(settle, 6), count)


def _unowned(owned: dict[str, frozenset[int]], partitions: int) -> set[int]:
    covered: set[int] = set()
    for parts in owned.values():
        covered |= parts
    return set(range(partitions)) - covered


def last_change(changes: Iterable[Change]) -> float:
    """Time of the latest assign, revoke or lost (0.0 without any): the runner waits for a quiet spell."""
    return max((c.t for c in changes if c.kind in ("assign", "revoke", "lost")), default=0.0)
