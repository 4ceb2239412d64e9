"""Is a color healthy? Behind ``pyrallel controller health``, the check Argo Rollouts' pre-promotion analysis runs
against the preview color before it is promoted.

A color is healthy when it has instances, every one answers ``/readyz`` (ACTIVE or PAUSED, a broker answered),
and over ``window_s`` its instances' handler failures (``handler_failures`` of ``/lifecycle/status``) are at most
``max_error_rate`` of what they handled, the switch controller's ``HealthCheck`` rule. A paused preview color
handles nothing and fails nothing: healthy, which is what a color waiting to be switched to should be. Runs on
the caller's thread.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pyrallel_consumer.bluegreen.controller import SwitchError, http_json


@dataclass(slots=True)
class ColorHealth:
    color: str
    healthy: bool
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per instance URL: ``ready``, ``state``, ``succeeded`` and ``failed`` over the window."""
    problems: list[str] = field(default_factory=list)
    error_rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counts(url: str, token: str | None) -> tuple[str, int, int]:
    status = http_json("GET", f"{url}/lifecycle/status", token=token, timeout_s=5)
    if not isinstance(status, dict):
        raise SwitchError(f"GET {url}/lifecycle/status: not a JSON object")
    return str(status.get("state")), int(status.get("records_succeeded", 0)), int(status.get("handler_failures", 0))


def check_color(color: str, urls: list[str], token: str | None, window_s: float = 5.0,
                max_error_rate: float = 0.2) -> ColorHealth:
    health = ColorHealth(color, healthy=False, instances={u: {} for u in urls})
    if not urls:
        health.problems.append(f"no {color} instances")
        return health
    before: dict[str, tuple[int, int]] = {}
    for url in urls:
        try:
            http_json("GET", f"{url}/readyz", timeout_s=5)
            health.instances[url]["ready"] = True
            state, ok, failed = _counts(url, token)
        except SwitchError as exc:
            health.instances[url]["ready"] = False
            health.problems.append(str(exc))
            continue
        health.instances[url]["state"] = state
        before[url] = (ok, failed)
    if health.problems:
        return health
    time.sleep(window_s)
    total_ok = total_failed = 0
    for url in urls:
        try:
            state, ok, failed = _counts(url, token)
        except SwitchError as exc:
            health.problems.append(str(exc))
            continue
        succeeded, failures = ok - before[url][0], failed - before[url][1]
        if succeeded < 0 or failures < 0:
            health.problems.append(f"{url} restarted during the window (its counters went back)")
            continue
        health.instances[url].update(state=state, succeeded=succeeded, failed=failures)
        total_ok, total_failed = total_ok + succeeded, total_failed + failures
    health.error_rate = total_failed / (total_ok + total_failed) if total_ok + total_failed else 0.0
    if health.error_rate > max_error_rate:
        health.problems.append(f"error rate {health.error_rate:.0%} over {window_s:g}s (limit {max_error_rate:.0%})")
    health.healthy = not health.problems
    return health
