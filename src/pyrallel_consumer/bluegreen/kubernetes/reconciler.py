"""The Kubernetes-native switch controller's loop: one ``ConsumerDeployment``, several replicas, one acting.

``Reconciler.run`` is called by ``pyrallel controller serve --kubernetes`` on the process's main thread. Threads:

* the elector (``lease.LeaderElector``) acquires and renews the Lease ``pyrallel-controller-<deployment>``; until
  this replica leads, nothing else happens: no ``SwitchController`` and so no ``ActiveColorWriter`` exists, since
  creating one would fence the leader's producer;
* once leading, two watch threads (the deployment's pods, the resource itself) wake the loop on every change,
  and the loop also runs every ``resync_s``;
* the loop (the caller's thread) reconciles: it writes the first active-color record on a first install,
  switches when ``metadata.generation`` moved past ``status.observedGeneration`` and ``spec.activeColor`` differs
  from the record, and keeps the pods consistent with the record (the active color's PAUSED pods resumed, the
  other color's ACTIVE pods paused - stop first, start second);
* a switch runs ``SwitchController.switch`` on a worker thread, with a ``gap.GapSampler`` thread beside it; its
  status is written when it returns, and the gap is patched in by a later pass once the sampler knows it;
* a pass that fails (Kafka, the API server) is retried with exponential backoff (``backoff_s``).

Stopping (SIGTERM): the caller's ``stop`` only wakes the loop; a switch or pass running finishes (the elector keeps
renewing meanwhile, on a stop event of its own), then the elector and the watches stop and the Lease is released.

The ``SwitchController`` is created with the deployment's name as controller id: a new leader's writer fences
the previous leader's producer, and its commands carry newer generations, so consumers refuse a deposed leader's
late commands. When the Lease is lost, ``on_lost`` is called (the serve command ends the process non-zero) and
the loop stops acting.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType
from prometheus_client import CollectorRegistry, Gauge

from pyrallel_consumer.bluegreen import log_events as ev
from pyrallel_consumer.bluegreen.active_color import ActiveColor, ControllerFencedError
from pyrallel_consumer.bluegreen.controller import (
    Deployment,
    Step,
    SwitchController,
    SwitchError,
    SwitchResult,
    http_json,
)
from pyrallel_consumer.bluegreen.kubernetes.client import KUBE_ERRORS, describe, is_status
from pyrallel_consumer.bluegreen.kubernetes.events import EventRecorder
from pyrallel_consumer.bluegreen.kubernetes.gap import GapSampler
from pyrallel_consumer.bluegreen.kubernetes.lease import LeaderElector, LeaseTimings
from pyrallel_consumer.bluegreen.kubernetes.pods import PodInstance, list_instances, urls_by_color
from pyrallel_consumer.bluegreen.kubernetes.resource import (
    DEPLOYMENT_LABEL,
    GAP_BEING_MEASURED,
    ConsumerDeployment,
    DeploymentSpec,
    SpecError,
    last_switch,
    parse_spec,
    set_condition,
)
from pyrallel_consumer.bluegreen.kubernetes.strimzi import StrimziConnectorState

log = logging.getLogger(__name__)

_RETRIABLE: tuple[type[Exception], ...] = (SwitchError, KafkaException, *KUBE_ERRORS)
"""Failures of a pass that the next pass may not have: Kafka or the API server away for a moment."""


def default_identity() -> str:
    """``<pod name>_<random>``: unique per process, readable in ``kubectl get lease``."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def lease_name(deployment: str) -> str:
    return f"pyrallel-controller-{deployment}"


class LeadershipLostError(RuntimeError):
    """This replica lost the Lease, or its writer was fenced by a newer controller: it must stop."""


@dataclass(slots=True)
class ReconcilerOptions:
    namespace: str
    deployment: str
    identity: str = field(default_factory=default_identity)
    token: str | None = None
    """Bearer token of the consumers' control APIs."""
    kafka: dict[str, str] = field(default_factory=dict)
    """librdkafka properties of the controller's own Kafka clients (``Deployment.kafka``)."""
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    resync_s: float = 30.0
    command_wait_s: float = 30.0
    """How long a consistency pause/resume waits for the pod to reach its state."""


BACKOFF_MIN_S, BACKOFF_MAX_S = 2.0, 60.0
"""Waits after failed passes: 2 s, doubled per failure in a row, at most 60 s."""
WATCH_BACKOFF_MAX_S = 30.0
DEFAULT_GENERATION_STEP = 1
"""How far a catch-up command moves a pod's generation when its status does not say (``max_generation_step``,
its ``control_max_generation_step``): one step always passes the consumers' check."""


_PROCESSING = ("ACTIVE", "DRAINING")
"""Lifecycle states in which a pod may handle records."""


@dataclass(slots=True)
class _PodState:
    pod: PodInstance
    state: str
    desired: str
    generation: int
    step: int = DEFAULT_GENERATION_STEP
    """The pod's ``control_max_generation_step`` as its status reports it."""


class Reconciler:
    def __init__(self, client_factory: Callable[[], Client], options: ReconcilerOptions,
                 on_lost: Callable[[str], None] | None = None, registry: CollectorRegistry | None = None) -> None:
        self.options = options
        self._client_factory = client_factory
        self._on_lost = on_lost
        self.registry = registry or CollectorRegistry()
        self._leader_gauge = Gauge("pyrallel_controller_leader", "1 while this controller replica holds the Lease",
                                   ["deployment"], registry=self.registry)
        self._leader_gauge.labels(options.deployment).set(0)
        self._extra: dict[str, Any] = {"deployment": options.deployment}
        self._events = EventRecorder(client_factory, options.namespace, options.deployment, options.identity)
        self._leading = threading.Event()
        self._wake = threading.Event()
        self._interrupt = threading.Event()
        """Set on the external stop and on a lost Lease: ends a backoff wait early."""
        self._lost_reason: str | None = None
        self._elector_stop = threading.Event()
        """Stops the elector, its watchdog and the watches; set only once the loop stopped acting."""
        self.elector = LeaderElector(
            client_factory, options.namespace, lease_name(options.deployment), options.identity,
            on_started_leading=self._started_leading, on_stopped_leading=self._stopped_leading,
            timings=options.timings, log_extra=self._extra,
        )
        self._controller: SwitchController | None = None
        self._record: ActiveColor | None = None
        self._record_read_at = 0.0
        self._client: Client | None = None
        self._switch_extra: dict[str, Any] = {}
        """``color`` and ``generation`` of the switch running, for its step logs."""
        self._failures = 0
        """Passes that failed in a row: the next one waits ``backoff_s``."""
        self._announced: int | None = None
        """The resource generation whose switch was announced (log, Event): a retried switch is announced once."""
        self._last_seen: dict[str, str] = {}
        """Per pod name, the lifecycle state it last answered (pods gone from the API are dropped)."""
        self._gap_lock = threading.Lock()
        self._gap_pending: tuple[str, float | None, str | None] | None = None
        """(lastSwitch.startedAt, gap, note) measured after the switch's status was written, not yet patched in."""
        self._gap_work: tuple[threading.Thread, GapSampler] | None = None

    # ---- leadership --------------------------------------------------------------------------------------

    def _started_leading(self) -> None:
        """On the elector's thread: no API call here (the first renewal must not wait for one)."""
        self._leader_gauge.labels(self.options.deployment).set(1)
        self._leading.set()
        self._wake.set()

    def _stopped_leading(self, reason: str) -> None:
        self._lost_reason = reason
        self._leader_gauge.labels(self.options.deployment).set(0)
        self._interrupt.set()
        self._wake.set()
        if self._on_lost is not None:
            self._on_lost(reason)

    def _check_leading(self) -> None:
        """Raise before any action a replica that no longer leads must not take."""
        if self._lost_reason is not None or not self.elector.is_leader:
            raise LeadershipLostError(self._lost_reason or "the lease is not held")

    # ---- run ---------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Stand by until leading, then reconcile until ``stop`` or until leadership is lost
        (``LeadershipLostError``, after ``on_lost`` was called).

        ``stop`` only ends the loop: a switch or consistency pass running then is finished (its status written)
        while the elector keeps renewing the Lease; only then do the elector and the watches stop, and the Lease is
        released, so a standby starts only after this replica stopped acting."""
        threading.Thread(target=self._forward_stop, args=(stop,), name="stop-forwarder", daemon=True).start()
        elector = threading.Thread(target=self.elector.run, args=(self._elector_stop,), name="lease", daemon=True)
        elector.start()
        log.info("Controller %s for %s/%s standing by for lease %s", self.options.identity, self.options.namespace,
                 self.options.deployment, lease_name(self.options.deployment),
                 extra={**self._extra, "holder": self.options.identity})
        while not self._leading.is_set() and not stop.is_set() and self._lost_reason is None:
            self._leading.wait(0.5)
        try:
            if self._leading.is_set() and not stop.is_set():
                self._lead(stop)
        except LeadershipLostError:
            if self._lost_reason is None:
                self.elector.lose("the lease is not held")
            raise
        finally:
            self._elector_stop.set()
            if self._lost_reason is None:
                elector.join(self.options.timings.retry_period_s + 15)  # no renewal racing the release
                self.elector.release()
            if self._client is not None:
                self._client.close()
        if self._lost_reason is not None:
            raise LeadershipLostError(self._lost_reason)

    def _forward_stop(self, stop: threading.Event) -> None:
        """Wake the loop (and end a backoff) on the external stop; never stops the elector itself."""
        while not stop.wait(0.2):
            if self._elector_stop.is_set():
                return
        self._interrupt.set()
        self._wake.set()

    def _lead(self, stop: threading.Event) -> None:
        self._client = self._client_factory()
        self._events.emit("LeaderElected", f"{self.options.identity} holds lease "
                                           f"{lease_name(self.options.deployment)}")
        for target, name in ((self._watch_pods, "watch-pods"), (self._watch_resource, "watch-resource")):
            threading.Thread(target=target, name=name, daemon=True).start()
        while not stop.is_set() and self._lost_reason is None:
            self._wake.wait(self.options.resync_s)
            self._wake.clear()
            if stop.is_set() or self._lost_reason is not None:
                break
            self._check_leading()
            try:
                self.reconcile()
            except ControllerFencedError as exc:
                self.elector.lose(f"fenced through the control topic: {exc}")
                raise LeadershipLostError(str(exc)) from exc
            except _RETRIABLE as exc:
                self._failures += 1
                delay = self.backoff_s(self._failures)
                error = describe(exc) if isinstance(exc, KUBE_ERRORS) else str(exc)
                log.warning("Reconciling %s failed: %s; retrying in %gs", self.options.deployment, error, delay,
                            extra={**self._extra, ev.EVENT: ev.RECONCILE_FAILED, "error": error,
                                   "retry_seconds": delay})
                if self._interrupt.wait(delay):
                    break
                self._wake.set()
            else:
                self._failures = 0
        if self._lost_reason is None:
            self._flush_gap()

    @staticmethod
    def backoff_s(failures: int) -> float:
        """Seconds before the next pass after ``failures`` failed ones in a row: 2, 4, 8, ... up to 60."""
        return min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2.0 ** max(0, failures - 1))

    def _watch(self, make: Callable[[Client], Any], what: str) -> None:
        """Wake the loop on every event of a watch; restart it after any error, with backoff, until stopped.
        A watch the Role does not allow (403) is logged at WARNING at most once a minute; an unexpected error at
        ERROR: the thread never ends silently while the controller runs."""
        delay, warned_at = 1.0, -math.inf
        while not self._elector_stop.is_set():
            client = self._client_factory()
            try:
                for _event in make(client):
                    delay = 1.0
                    self._wake.set()
                    if self._elector_stop.is_set():
                        return
            except KUBE_ERRORS as exc:
                if is_status(exc, 401, 403):
                    if time.monotonic() - warned_at >= 60:
                        warned_at = time.monotonic()
                        log.warning("Watch of %s refused: %s (the controller's Role must allow list and watch); "
                                    "retrying", what, describe(exc), extra=self._extra)
                else:
                    log.debug("Watch of %s ended: %s", what, describe(exc))
            except Exception:
                log.exception("Watch of %s failed unexpectedly; restarting it in %gs", what, delay,
                              extra=self._extra)
            finally:
                client.close()
            self._elector_stop.wait(delay)
            delay = min(WATCH_BACKOFF_MAX_S, delay * 2)

    def _watch_pods(self) -> None:
        self._watch(lambda c: c.watch(Pod, namespace=self.options.namespace, server_timeout=60,
                                      labels={DEPLOYMENT_LABEL: self.options.deployment}), "pods")

    def _watch_resource(self) -> None:
        self._watch(lambda c: c.watch(ConsumerDeployment, namespace=self.options.namespace, server_timeout=60,
                                      fields={"metadata.name": self.options.deployment}),
                    f"ConsumerDeployment {self.options.deployment}")

    # ---- one pass ----------------------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def reconcile(self) -> None:
        """One pass on the loop thread: first record, switch, consistency, status."""
        try:
            resource = self.client.get(ConsumerDeployment, self.options.deployment, namespace=self.options.namespace)
        except ApiError as exc:
            if is_status(exc, 404):
                log.warning("ConsumerDeployment %s/%s not found; waiting for it", self.options.namespace,
                            self.options.deployment, extra=self._extra)
                return
            raise
        meta = resource.metadata
        generation = int((meta.generation if meta else None) or 0)
        self._events.uid = meta.uid if meta else None
        status: dict[str, Any] = dict(resource.get("status") or {})
        observed = int(status.get("observedGeneration") or 0)
        self._apply_gap(status, generation)
        raw_spec = resource.get("spec")
        try:
            spec = parse_spec(raw_spec)
        except SpecError as exc:
            self._invalid_spec(raw_spec, str(exc), status, generation)
            return
        controller = self._switch_controller(spec)
        instances = list_instances(self.client, self.options.namespace, self.options.deployment)
        controller.deployment.instances = urls_by_color(instances)
        record = self._current(controller)
        if record is None:
            self._check_leading()
            record = self._record = controller.initialize(spec.active_color)
            log.info("First active color of %s: %s (generation %d)", self.options.deployment, record.color,
                     record.generation, extra={**self._extra, "color": record.color, "generation": record.generation})
            self._events.emit("Initialized", f"active color {record.color} recorded (generation {record.generation})")
        if generation > observed and spec.active_color != record.color:
            self._switch(controller, spec, status, generation)
            return
        consistent, message = self._make_consistent(record, instances)
        changes: dict[str, Any] = {"activeColor": record.color, "generation": record.generation,
                                   "leader": self.options.identity}
        if generation > observed:
            changes.update(observedGeneration=generation, phase="Active")
        elif status.get("phase") in (None, "Pending", "Switching"):
            changes["phase"] = "Active"
        self._patch_status(status, changes, ("Ready", consistent, "Consistent" if consistent else "Inconsistent",
                                             message), generation)

    def _invalid_spec(self, raw_spec: Any, problem: str, status: dict[str, Any], generation: int) -> None:
        """Report the spec error and keep the pods consistent with the record's color meanwhile (a restarted pod
        of the active color is resumed, one of the other stays paused), with the last valid spec's cluster or the
        spec's ``bootstrapServers`` if that part of it is readable. No record is written and no switch starts."""
        controller = self._controller
        bootstrap = raw_spec.get("bootstrapServers") if isinstance(raw_spec, dict) else None
        if controller is None and isinstance(bootstrap, str) and bootstrap.strip():
            controller = self._switch_controller(DeploymentSpec("blue", "C", bootstrap.strip()))
        changes: dict[str, Any] = {"phase": "Failed", "observedGeneration": generation,
                                   "leader": self.options.identity}
        message = problem
        if controller is not None:
            instances = list_instances(self.client, self.options.namespace, self.options.deployment)
            controller.deployment.instances = urls_by_color(instances)
            record = self._current(controller)
            if record is not None:
                _consistent, detail = self._make_consistent(record, instances)
                message = f"{problem}; meanwhile the pods are kept consistent with {record.color}: {detail}"
                changes.update(activeColor=record.color, generation=record.generation)
        self._patch_status(status, changes, ("Ready", False, "InvalidSpec", message), generation)

    def _switch_controller(self, spec: DeploymentSpec) -> SwitchController:
        """The leader's SwitchController, created on first use (creating its writer fences any older one); replaced
        (the old one closed, the same metrics registry) when the bootstrap servers change."""
        controller = self._controller
        if controller is None or controller.deployment.bootstrap != spec.bootstrap_servers:
            self._check_leading()
            if controller is not None:
                controller.close()
                self._controller = None
            deployment = Deployment(name=self.options.deployment, bootstrap=spec.bootstrap_servers, instances={},
                                    token=self.options.token, kafka=dict(self.options.kafka))
            controller = SwitchController(deployment, self.options.deployment, registry=self.registry)
            controller.on_step = self._log_step
            self._controller, self._record = controller, None
        controller.deployment.groups = dict(spec.groups)
        controller.deployment.connect_url = spec.connect_url
        controller.deployment.connectors = dict(spec.connectors)
        controller.deployment.connector_state = (StrimziConnectorState(self._client_factory, self.options.namespace)
                                                 if spec.strategy == "E" else None)
        return controller

    def _current(self, controller: SwitchController) -> ActiveColor | None:
        """The record, read from the control topic at most every ``resync_s`` (this leader is its only writer:
        any other is fenced, and its own switches re-read it)."""
        if self._record is None or time.monotonic() - self._record_read_at > self.options.resync_s:
            self._record = controller.current()
            self._record_read_at = time.monotonic()
        return self._record

    # ---- switch ------------------------------------------------------------------------------------------

    def _switch(self, controller: SwitchController, spec: DeploymentSpec, status: dict[str, Any],
                generation: int) -> None:
        to_color, extra = spec.active_color, {**self._extra, "color": spec.active_color}
        from_color = self._record.color if self._record else "?"
        self._patch_status(status, {"phase": "Switching", "leader": self.options.identity},
                           ("Progressing", True, "Switching", f"{from_color} -> {to_color} by {spec.strategy}"),
                           generation)
        if self._announced != generation:  # a retry after a failed attempt is not announced again
            self._announced = generation
            log.info("Switching %s from %s to %s by %s", self.options.deployment, from_color, to_color,
                     spec.strategy, extra={**extra, ev.EVENT: ev.SWITCH_STARTED, "strategy": spec.strategy,
                                           "resource_generation": generation})
            self._events.emit("SwitchStarted", f"{from_color} -> {to_color} by strategy {spec.strategy}")
        self._check_leading()
        sampler = (GapSampler(controller.deployment.instances.get(to_color, []), self.options.token).start()
                   if spec.strategy != "E" else None)
        self._switch_extra = {"color": to_color,
                              "generation": (self._record.generation + 1) if self._record else None}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="switch") as pool:
            future: Future[SwitchResult] = pool.submit(controller.switch, spec.strategy, to_color, spec.health)
            try:
                result = future.result()
            except BaseException:
                if sampler is not None:
                    sampler.cancel()
                raise
        self._record = controller.current()
        self._record_read_at = time.monotonic()
        phase = "Active" if result.ok else "RolledBack" if result.rolled_back else "Failed"
        # The status first; the gap (up to the sampler's bound later) is patched in when known.
        gap: float | None
        note: str | None
        if sampler is not None and result.ok:
            gap, note = None, GAP_BEING_MEASURED
        else:
            gap, note = (sampler.finish(result) if sampler is not None
                         else (None, "strategy E: the connectors expose no per-record counter to the controller"))
        log.log(logging.INFO if result.ok else logging.ERROR,
                "Switch of %s to %s by %s: %s in %.3fs", self.options.deployment, to_color, spec.strategy, phase,
                result.seconds, extra={**extra, ev.EVENT: ev.SWITCH_FINISHED, "generation": result.generation,
                                       "ok": result.ok, "seconds": round(result.seconds, 3), "phase": phase})
        self._events.emit(f"Switch{'Succeeded' if result.ok else phase}",
                          f"{result.from_color} -> {to_color} by {spec.strategy}: {phase} in {result.seconds:.2f}s"
                          + (f" ({result.error})" if result.error else ""), warning=not result.ok)
        record = self._record
        entry = last_switch(result, gap, note)
        changes: dict[str, Any] = {
            "phase": phase, "observedGeneration": generation, "lastSwitch": entry,
            "activeColor": record.color if record else None, "generation": record.generation if record else None,
        }
        reason = "Succeeded" if result.ok else phase
        self._patch_status(status, changes, ("Progressing", False, reason, result.error or "switch completed"),
                           generation)
        if sampler is not None and result.ok:
            self._measure_gap(sampler, result, str(entry["startedAt"]))
        else:
            self._gap_measured(result, gap, note)
        self._wake.set()  # the consistency pass and the Ready condition follow at once

    def _measure_gap(self, sampler: GapSampler, result: SwitchResult, started_at: str) -> None:
        """Wait for the gap on a thread of its own; the loop patches it into ``lastSwitch`` when it is known."""

        def wait() -> None:
            gap, note = sampler.finish(result)
            self._gap_measured(result, gap, note)
            with self._gap_lock:
                self._gap_pending = (started_at, gap, note)
            self._wake.set()

        thread = threading.Thread(target=wait, name="gap", daemon=True)
        self._gap_work = (thread, sampler)
        thread.start()

    def _gap_measured(self, result: SwitchResult, gap: float | None, note: str | None) -> None:
        log.info("Processing gap of the switch of %s to %s: %s", self.options.deployment, result.to_color,
                 "n/a" if gap is None else f"{gap:.3f}s",
                 extra={**self._extra, ev.EVENT: ev.SWITCH_GAP_MEASURED, "color": result.to_color,
                        "generation": result.generation, "processing_gap_seconds": gap,
                        "processing_gap_note": note})

    def _apply_gap(self, status: dict[str, Any], generation: int) -> None:
        """Patch a measured gap into ``status.lastSwitch`` if that is still the switch it was measured for."""
        with self._gap_lock:
            pending, self._gap_pending = self._gap_pending, None
        if pending is None:
            return
        started_at, gap, note = pending
        last = dict(status.get("lastSwitch") or {})
        if last.get("startedAt") != started_at:
            return
        last.update(processingGapSeconds=None if gap is None else round(gap, 3), processingGapNote=note)
        self._patch_status(status, {"lastSwitch": last}, None, generation)

    def _flush_gap(self) -> None:
        """On shutdown (still leading): end a gap measurement still running and write what is known."""
        work, self._gap_work = self._gap_work, None
        if work is None:
            return
        thread, sampler = work
        sampler.cancel()
        thread.join(5)
        try:
            resource = self.client.get(ConsumerDeployment, self.options.deployment, namespace=self.options.namespace)
            meta = resource.metadata
            self._apply_gap(dict(resource.get("status") or {}), int((meta.generation if meta else None) or 0))
        except KUBE_ERRORS as exc:
            log.warning("Could not write the last switch's processing gap: %s", describe(exc), extra=self._extra)

    def _log_step(self, step: Step) -> None:
        log.info("Switch step %s: %s in %.3fs%s", step.name, "ok" if step.ok else "FAILED", step.seconds,
                 f" ({step.detail})" if step.detail else "",
                 extra={**self._extra, **self._switch_extra, ev.EVENT: ev.SWITCH_STEP, "step": step.name,
                        "ok": step.ok, "seconds": round(step.seconds, 3)})

    # ---- consistency -------------------------------------------------------------------------------------

    def _make_consistent(self, record: ActiveColor, instances: list[PodInstance]) -> tuple[bool, str]:
        """Pause the inactive color's ACTIVE pods, then (only if that worked, and no pod of the inactive color that
        was last seen processing is unreachable) resume the active color's PAUSED ones, with the record's
        generation. Returns (consistent, a message for the Ready condition)."""
        states: list[_PodState] = []
        unreachable: list[PodInstance] = []
        present = {p.name for p in instances}
        self._last_seen = {name: state for name, state in self._last_seen.items() if name in present}
        for pod in instances:
            try:
                answer = http_json("GET", f"{pod.url}/lifecycle/status", token=self.options.token, timeout_s=5)
            except SwitchError:
                unreachable.append(pod)
                continue
            if isinstance(answer, dict):
                step = answer.get("max_generation_step")
                states.append(_PodState(pod, str(answer.get("state")), str(answer.get("desired_state")),
                                        int(answer.get("generation") or 0),
                                        step if isinstance(step, int) and step > 0 else DEFAULT_GENERATION_STEP))
        for item in states:
            self._last_seen[item.pod.name] = "ACTIVE" if "ACTIVE" in (item.state, item.desired) else item.state
            if item.state in ("ACTIVE", "PAUSED") and record.generation - item.generation > item.step:
                self._catch_up(item, record)
        active = record.color
        to_pause = [s for s in states if s.pod.color != active and "ACTIVE" in (s.state, s.desired)]
        to_resume = [s for s in states if s.pod.color == active and s.state == "PAUSED" and s.desired != "ACTIVE"]
        problems: list[str] = []
        for item in to_pause:
            if not self._command(item.pod, "pause", record):
                problems.append(f"{item.pod.name} ({item.pod.color}) could not be paused")
        # Never start the active color while the other may still process: a pod that could not be paused, or one
        # last seen processing that does not answer now (until it answers, or is gone from the API).
        hidden = [p for p in unreachable if p.color != active and self._last_seen.get(p.name) in _PROCESSING]
        problems += [f"{p.name} ({p.color}) unreachable, last seen processing" for p in hidden]
        if problems:
            held = f"; {active} not resumed until they are paused" if to_resume else ""
            return False, "; ".join(problems) + held
        for item in to_resume:
            if not self._command(item.pod, "resume", record):
                problems.append(f"{item.pod.name} ({item.pod.color}) could not be resumed")
        if unreachable:
            problems.append(f"unreachable: {', '.join(p.name for p in unreachable)}")
        if not any(p.color == active for p in instances):
            problems.append(f"no {active} pods")
        if problems:
            return False, "; ".join(problems)
        return True, f"{active} active, {len(instances)} pod(s) consistent with generation {record.generation}"

    def _catch_up(self, item: _PodState, record: ActiveColor) -> None:
        """Walk a pod whose generation is more than a step behind the record's (it started at 0 without reading
        the record, e.g. a pod of a user's image) up to the record's, a step at a time (the pod's own
        ``control_max_generation_step`` from its status, else 1), with the command that keeps the state it is in;
        otherwise the consumer would refuse every later command as too far ahead."""
        command = "resume" if "ACTIVE" in (item.state, item.desired) else "pause"
        generation = item.generation
        while generation < record.generation:
            self._check_leading()
            generation = min(generation + item.step, record.generation)
            url = f"{item.pod.url}/lifecycle/{command}?generation={generation}"
            try:
                http_json("POST", url, token=self.options.token, timeout_s=10)
            except SwitchError as exc:
                log.warning("Could not bring pod %s to generation %d: %s", item.pod.name, generation, exc,
                            extra={**self._extra, "color": item.pod.color, "pod": item.pod.name})
                return
        log.info("Pod %s brought from generation %d to %d", item.pod.name, item.generation, generation,
                 extra={**self._extra, "color": item.pod.color, "pod": item.pod.name, "generation": generation})

    def _command(self, pod: PodInstance, command: str, record: ActiveColor) -> bool:
        self._check_leading()
        url = (f"{pod.url}/lifecycle/{command}?wait={self.options.command_wait_s:g}"
               f"&generation={record.generation}")
        extra = {**self._extra, "color": pod.color, "generation": record.generation, "pod": pod.name}
        try:
            answer = http_json("POST", url, token=self.options.token, timeout_s=self.options.command_wait_s + 10)
        except SwitchError as exc:
            log.warning("Could not %s pod %s: %s", command, pod.name, exc, extra=extra)
            return False
        state = answer.get("state") if isinstance(answer, dict) else None
        want = "ACTIVE" if command == "resume" else "PAUSED"
        if isinstance(state, str):
            self._last_seen[pod.name] = state
        event = ev.POD_RESUMED if command == "resume" else ev.POD_PAUSED
        log.info("%s pod %s (%s, generation %d): %s", "Resumed" if command == "resume" else "Paused", pod.name,
                 pod.color, record.generation, state, extra={**extra, ev.EVENT: event, "ok": state == want})
        self._events.emit("PodResumed" if command == "resume" else "PodPaused",
                          f"{pod.name} ({pod.color}) {command}d to keep it consistent with the active color "
                          f"{record.color} (generation {record.generation})")
        return state == want

    # ---- status ------------------------------------------------------------------------------------------

    def _patch_status(self, status: dict[str, Any], changes: dict[str, Any],
                      condition: tuple[str, bool, str, str] | None, generation: int) -> None:
        """Merge-patch ``status`` with ``changes`` and the condition, only when something differs."""
        patch = {k: v for k, v in changes.items() if status.get(k) != v}
        if condition is not None:
            kind, value, reason, message = condition
            conditions = set_condition(list(status.get("conditions") or []), kind, value, reason, message,
                                       generation)
            if conditions != list(status.get("conditions") or []):
                patch["conditions"] = conditions
        if not patch:
            return
        self._check_leading()
        self.client.patch(ConsumerDeployment.Status, self.options.deployment, {"status": patch},
                          namespace=self.options.namespace, patch_type=PatchType.MERGE)
        status.update(patch)
