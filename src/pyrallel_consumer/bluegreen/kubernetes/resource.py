"""The ``ConsumerDeployment`` custom resource (``pyrallel.io/v1alpha1``): its spec as a validated dataclass, and
the status the controller writes.

Called by the reconciler (on its loop thread) and by the ``pyrallel controller set-active`` command. The CRD's
OpenAPI schema already refuses most bad specs; ``parse_spec`` checks again (and what the schema cannot say, e.g.
that strategy B needs ``groups``), so a resource written before a schema change, or with the schema bypassed,
yields a clear error in the status instead of a traceback in the controller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube.generic_resource import create_namespaced_resource

from pyrallel_consumer.bluegreen.controller import COLORS, STRATEGIES, HealthCheck, SwitchResult

GROUP = "pyrallel.io"
VERSION = "v1alpha1"
KIND = "ConsumerDeployment"
PLURAL = "consumerdeployments"
API_VERSION = f"{GROUP}/{VERSION}"

ConsumerDeployment = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
"""The lightkube resource class; ``ConsumerDeployment.Status`` is its status subresource."""

PHASES = ("Pending", "Switching", "Active", "RolledBack", "Failed")
FINAL_PHASES = ("Active", "RolledBack", "Failed")
"""Phases in which the controller is done with the generation it observed."""
GAP_BEING_MEASURED = "being measured"
"""``lastSwitch.processingGapNote`` of a switch whose status is written and whose gap is not known yet: the
controller patches ``processingGapSeconds`` in when the new color handles its first record (or the bound passes)."""
DEPLOYMENT_LABEL = "pyrallel.io/deployment"
COLOR_LABEL = "pyrallel.io/color"


class SpecError(ValueError):
    """The resource's spec cannot be acted on; the message names the field."""


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """What the operator asked for in ``spec``."""

    active_color: str
    strategy: str
    bootstrap_servers: str
    groups: dict[str, str] = field(default_factory=dict)
    connect_url: str | None = None
    connectors: dict[str, str] = field(default_factory=dict)
    health: HealthCheck | None = field(default_factory=HealthCheck)
    """None when ``health.windowSeconds`` is 0: no health check after a switch."""
    switch_request: int = 0
    """``spec.switchRequest``: raised to request a switch to ``active_color`` again (after a rollback); only its
    change matters, through ``metadata.generation``."""


def parse_spec(spec: Any) -> DeploymentSpec:
    """``spec`` of the resource as a ``DeploymentSpec``; ``SpecError`` naming the field otherwise."""
    if not isinstance(spec, Mapping):
        raise SpecError("spec: must be an object")
    color = spec.get("activeColor")
    if color not in COLORS:
        raise SpecError(f"spec.activeColor: must be blue or green, not {color!r}")
    strategy = spec.get("strategy")
    if strategy not in STRATEGIES:
        raise SpecError(f"spec.strategy: must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    bootstrap = spec.get("bootstrapServers")
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise SpecError("spec.bootstrapServers: required (host:port[,host:port...])")
    groups = _color_map(spec.get("groups"), "spec.groups")
    if strategy == "B" and set(groups) != set(COLORS):
        raise SpecError("spec.groups: strategy B needs a consumer group for blue and for green")
    if strategy == "B" and groups["blue"] == groups["green"]:
        raise SpecError("spec.groups: strategy B needs two different groups")
    connect = spec.get("connect") or {}
    if not isinstance(connect, Mapping):
        raise SpecError("spec.connect: must be an object")
    url = connect.get("url")
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise SpecError("spec.connect.url: must be a URL")
    if strategy == "E" and not url:
        raise SpecError("spec.connect.url: strategy E needs the Kafka Connect REST URL")
    connectors = _color_map(connect.get("connectors"), "spec.connect.connectors")
    request = spec.get("switchRequest", 0)
    if isinstance(request, bool) or not isinstance(request, int) or request < 0:
        raise SpecError(f"spec.switchRequest: must be a whole number >= 0, not {request!r}")
    return DeploymentSpec(color, strategy, bootstrap.strip(), groups, url.rstrip("/") if url else None,
                          connectors, _health(spec.get("health")), request)


def _color_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: must be an object with blue and green")
    unknown = set(value) - set(COLORS)
    if unknown:
        raise SpecError(f"{where}: unknown color(s) {', '.join(sorted(map(str, unknown)))}")
    for color, name in value.items():
        if not isinstance(name, str) or not name:
            raise SpecError(f"{where}.{color}: must be a non-empty string")
    return {str(c): str(n) for c, n in value.items()}


def _health(value: Any) -> HealthCheck | None:
    if value is None:
        return HealthCheck()
    if not isinstance(value, Mapping):
        raise SpecError("spec.health: must be an object")
    default = HealthCheck()
    numbers: dict[str, float] = {}
    for key, limit, fallback in (("windowSeconds", 600.0, default.window_s),
                                 ("maxErrorRate", 1.0, default.max_error_rate),
                                 ("readyTimeoutSeconds", 3600.0, default.ready_timeout_s)):
        raw = value.get(key, fallback)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= limit:
            raise SpecError(f"spec.health.{key}: must be a number from 0 to {limit:g}, not {raw!r}")
        numbers[key] = float(raw)
    if numbers["windowSeconds"] == 0:
        return None
    return HealthCheck(numbers["windowSeconds"], numbers["maxErrorRate"], numbers["readyTimeoutSeconds"])


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def last_switch(result: SwitchResult, gap_s: float | None, gap_note: str | None) -> dict[str, Any]:
    """``status.lastSwitch`` of a finished switch."""
    entry: dict[str, Any] = {
        "strategy": result.strategy, "from": result.from_color, "to": result.to_color, "action": result.action,
        "ok": result.ok, "rolledBack": result.rolled_back, "startedAt": rfc3339(result.started_at),
        "seconds": round(result.seconds, 3),
        "processingGapSeconds": None if gap_s is None else round(gap_s, 3),
        "error": result.error,
        "steps": [{"name": s.name, "seconds": round(s.seconds, 3), "ok": s.ok, "detail": s.detail[:500]}
                  for s in result.steps],
    }
    entry["processingGapNote"] = gap_note  # None removes an older switch's note (a merge patch keeps absent keys)
    return entry


def set_condition(conditions: list[dict[str, Any]], kind: str, status: bool, reason: str, message: str,
                  observed_generation: int) -> list[dict[str, Any]]:
    """``conditions`` with the one of ``kind`` set (metav1.Condition); its lastTransitionTime changes only when
    its status does."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == kind), None)
    transition = (previous.get("lastTransitionTime") if previous and previous.get("status") == value
                  else None) or now_rfc3339()
    updated = {"type": kind, "status": value, "reason": reason, "message": message[:32768],
               "lastTransitionTime": transition, "observedGeneration": observed_generation}
    return [c for c in conditions if c.get("type") != kind] + [updated]
