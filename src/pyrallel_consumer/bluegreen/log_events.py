"""Stable machine keys of the switch controller's important log lines: its ``event`` names and their fields.

The library's consumer events live in ``pyrallel_consumer.observability.log_events``; the blue/green package may not
import the core (an import-linter contract keeps it on the public API), so the controller's events are listed here,
once, the same way. docs/operations.md ("Switch controller events") documents them and a unit test checks that the
docs table and ``EVENTS`` agree. Event and field names are an interface (LogQL queries use them): rename none, add
new ones. Every controller line also carries ``deployment``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pyrallel_consumer import LogEventSpec

EVENT: Final = "event"

FIELDS: Final[Mapping[str, str]] = {
    "deployment": "the ConsumerDeployment's name",
    "holder": "the Lease holder identity of the controller replica that logs",
    "reason": "why leadership ended (renew deadline passed, the Lease held by another, fenced in the control topic)",
    "error": "the failure's message",
    "color": "the color the line is about (the switch's target, or the pod's color)",
    "generation": "the active-color record's (lifecycle) generation the line's action used",
    "resource_generation": "metadata.generation of the ConsumerDeployment that requested the switch",
    "strategy": "the switch strategy: B, C or E",
    "step": "a switch step's name, e.g. 'pause blue', 'resume green', 'rollback: resume blue'",
    "ok": "whether the step, switch or command reached what it aimed at",
    "seconds": "how long the action took, in seconds (for LogQL's unwrap)",
    "phase": "the switch's outcome: Active, RolledBack or Failed",
    "processing_gap_seconds": "the controller's estimate of the switch's processing gap (null when not measured)",
    "processing_gap_note": "why processing_gap_seconds is null",
    "pod": "the consumer pod's name",
    "retry_seconds": "how long the controller waits before the next attempt",
}
"""Every field name a controller event may carry, with its meaning."""

LEASE_ACQUIRED: Final = "lease_acquired"
LEASE_RENEW_FAILED: Final = "lease_renew_failed"
LEASE_LOST: Final = "lease_lost"
LEASE_RELEASED: Final = "lease_released"
SWITCH_STARTED: Final = "switch_started"
SWITCH_STEP: Final = "switch_step"
SWITCH_FINISHED: Final = "switch_finished"
SWITCH_GAP_MEASURED: Final = "switch_gap_measured"
RECONCILE_FAILED: Final = "reconcile_failed"
POD_PAUSED: Final = "pod_paused"
POD_RESUMED: Final = "pod_resumed"


_LEASE = "pyrallel_consumer.bluegreen.kubernetes.lease"
_LOOP = "pyrallel_consumer.bluegreen.kubernetes.reconciler"

EVENTS: Final[Mapping[str, LogEventSpec]] = {
    LEASE_ACQUIRED: LogEventSpec("INFO", _LEASE, ("deployment", "holder"), "this replica became leader"),
    LEASE_RENEW_FAILED: LogEventSpec("WARNING", _LEASE, ("deployment", "holder", "error"),
                                  "a renewal failed; the leader keeps acting until its renew deadline"),
    LEASE_LOST: LogEventSpec("ERROR", _LEASE, ("deployment", "holder", "reason"),
                          "leadership ended without a release: the process exits 3 before anyone else can act"),
    LEASE_RELEASED: LogEventSpec("INFO", _LEASE, ("deployment", "holder"),
                              "the leader gave the Lease up on shutdown, after it stopped acting"),
    SWITCH_STARTED: LogEventSpec("INFO", _LOOP, ("deployment", "color", "strategy", "resource_generation"),
                              "a switch to color starts (once per resource generation, retries included)"),
    SWITCH_STEP: LogEventSpec("INFO", _LOOP, ("deployment", "color", "generation", "step", "ok", "seconds"),
                           "one step of the switch ended"),
    SWITCH_FINISHED: LogEventSpec("INFO (ok) / ERROR", _LOOP,
                               ("deployment", "color", "generation", "ok", "seconds", "phase"),
                               "the switch ended; the status says so at once"),
    SWITCH_GAP_MEASURED: LogEventSpec("INFO", _LOOP,
                                   ("deployment", "color", "generation", "processing_gap_seconds",
                                    "processing_gap_note"),
                                   "the processing gap of the last switch is known (or known not to be)"),
    RECONCILE_FAILED: LogEventSpec("WARNING", _LOOP, ("deployment", "error", "retry_seconds"),
                                "a pass failed (Kafka or the API server away, a switch that cannot start); "
                                "retried with exponential backoff"),
    POD_PAUSED: LogEventSpec("INFO", _LOOP, ("deployment", "color", "generation", "pod", "ok"),
                          "the consistency pass paused a pod of the inactive color"),
    POD_RESUMED: LogEventSpec("INFO", _LOOP, ("deployment", "color", "generation", "pod", "ok"),
                           "the consistency pass resumed a pod of the active color"),
}
"""Every event the controller logs: level, logger, fields (``ts``, ``level``, ``logger``, ``message`` aside)."""
