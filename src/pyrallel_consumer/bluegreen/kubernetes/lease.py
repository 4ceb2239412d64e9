"""Leader election on a ``coordination.k8s.io/v1`` Lease, the way client-go's leaderelection does it.

Several replicas of ``pyrallel controller serve --kubernetes`` run for one deployment; only the one holding the
Lease acts. ``LeaderElector.run`` runs on a thread of its own (started by the reconciler): it tries to acquire the
Lease every ``retry_period_s``, then renews it every ``retry_period_s``. Updates carry the Lease's
``resourceVersion``, so two replicas that race for it cannot both win (the API server refuses the second with 409).

Timing contract (``LeaseTimings``: lease 15 s, renew deadline 10 s, retry 2 s by default, like client-go):

* a standby takes over a Lease only when its record has not changed for ``leaseDurationSeconds`` *as the standby
  observed it* (its own monotonic clock, read when the GET that first showed it that record had answered, as
  client-go does; no clock comparison across machines);
* the leader measures from the start of its last successful renewal; if ``renew_deadline_s`` passes without
  another, a watchdog thread calls ``on_stopped_leading`` at once, even while a renewal hangs.

So the old leader has stopped (``renew_deadline_s`` after its last renewal) before any standby can start
(``lease_duration_s`` after it saw that renewal, which was later). The serve command's ``on_stopped_leading``
ends the process (non-zero), which also stops a switch running on another thread; Kubernetes restarts it as a
standby. ``run`` stops on an event of its own, which the reconciler sets only once it has stopped acting (a SIGTERM
does not end the renewals of a leader that is still switching).

The Lease does not fence by itself: a leader stopped by the OS for longer than the Lease would still
send what it had started. The control topic fences that (see ``pyrallel_consumer.bluegreen.active_color``).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, Client
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from pyrallel_consumer.bluegreen import log_events as ev
from pyrallel_consumer.bluegreen.kubernetes.client import KUBE_ERRORS, describe, is_status

log = logging.getLogger(__name__)

JITTER = 1.2
"""client-go's JitterFactor: retries wait ``retry_period * (1 + random() * 0.2)``; the renew deadline must leave
room for more than one of them."""


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration_s > self.renew_deadline_s:
            raise ValueError("the lease duration must be greater than the renew deadline")
        if not self.renew_deadline_s > JITTER * self.retry_period_s:
            raise ValueError(f"the renew deadline must be greater than {JITTER} x the retry period")
        if not self.retry_period_s > 0:
            raise ValueError("the retry period must be greater than 0")

    @property
    def lease_seconds(self) -> int:
        """The Lease's ``leaseDurationSeconds`` (whole seconds, rounded up: standbys wait at least as long)."""
        return max(1, math.ceil(self.lease_duration_s))


@dataclass(slots=True)
class _Observed:
    resource_version: str | None = None
    at: float = 0.0
    holder: str = ""
    lease_seconds: int = 0


@dataclass(slots=True)
class LeaderElector:
    """Acquire, renew, and on loss report once. ``is_leader`` may be read from any thread."""

    client_factory: Callable[[], Client]
    namespace: str
    name: str
    identity: str
    on_started_leading: Callable[[], None]
    """Called on the elector's thread once the Lease is held; must return at once (no API calls)."""
    on_stopped_leading: Callable[[str], None]
    """Called once, with the reason, on the thread that noticed (elector or watchdog); must stop all acting."""
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    log_extra: dict[str, Any] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    _observed: _Observed = field(default_factory=_Observed, init=False)
    _renewed_at: float = field(default=0.0, init=False)
    _leading: bool = field(default=False, init=False)
    _lost: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def is_leader(self) -> bool:
        with self._lock:
            return self._leading and self.clock() - self._renewed_at < self.timings.renew_deadline_s

    @property
    def holder(self) -> str:
        """The holder as last observed (ourselves while leading)."""
        return self.identity if self.is_leader else self._observed.holder

    def run(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set or leadership is lost; runs on the elector's own thread."""
        client = self.client_factory()
        try:
            while not stop.is_set():
                if self._attempt(client, acquiring=True):
                    break
                stop.wait(self.timings.retry_period_s * (1 + random.random() * (JITTER - 1)))
            else:
                return
            with self._lock:
                self._leading = True
            log.info("Acquired lease %s/%s as %s", self.namespace, self.name, self.identity,
                     extra={**self.log_extra, ev.EVENT: ev.LEASE_ACQUIRED, "holder": self.identity})
            threading.Thread(target=self._watchdog, args=(stop,), name="lease-watchdog", daemon=True).start()
            self.on_started_leading()  # must not block: the first renewal is due one retry period from now
            while not stop.wait(self.timings.retry_period_s):
                if self._lost:
                    return
                self._attempt(client, acquiring=False)
        finally:
            client.close()

    def release(self) -> None:
        """Give the Lease up (holder emptied) so a standby takes over at once; only call after acting stopped."""
        with self._lock:
            was_leading, self._leading = self._leading, False
        if not was_leading or self._lost:
            return
        client = self.client_factory()
        try:
            lease = client.get(Lease, self.name, namespace=self.namespace)
            if lease.spec is not None and lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.leaseDurationSeconds = 1
                lease.spec.renewTime = datetime.now(UTC)
                client.replace(lease)
                log.info("Released lease %s/%s", self.namespace, self.name,
                         extra={**self.log_extra, ev.EVENT: ev.LEASE_RELEASED, "holder": self.identity})
        except KUBE_ERRORS as exc:
            log.warning("Could not release lease %s/%s: %s (a standby takes over when it expires)",
                        self.namespace, self.name, describe(exc))
        finally:
            client.close()

    # ---- internals -------------------------------------------------------------------------------------

    def _attempt(self, client: Client, acquiring: bool) -> bool:
        try:
            return self._try_acquire_or_renew(client)
        except KUBE_ERRORS as exc:
            if not acquiring:
                log.warning("Renewing lease %s/%s failed: %s", self.namespace, self.name, describe(exc),
                            extra={**self.log_extra, ev.EVENT: ev.LEASE_RENEW_FAILED, "holder": self.identity,
                                   "error": describe(exc)})
            else:
                log.debug("Acquiring lease %s/%s failed: %s", self.namespace, self.name, describe(exc))
            return False

    def _try_acquire_or_renew(self, client: Client) -> bool:
        started = self.clock()  # the leader's renew deadline counts from before its request
        now = datetime.now(UTC)
        try:
            lease = client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if not is_status(exc, 404):
                raise
            fresh = Lease(metadata=ObjectMeta(name=self.name, namespace=self.namespace),
                          spec=LeaseSpec(holderIdentity=self.identity, leaseDurationSeconds=self.timings.lease_seconds,
                                         acquireTime=now, renewTime=now, leaseTransitions=0))
            try:
                client.create(fresh, namespace=self.namespace)
            except ApiError as create_exc:
                if is_status(create_exc, 409):  # another replica created it first
                    return False
                raise
            self._renewed(started)
            return True
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity or ""
        version = lease.metadata.resourceVersion if lease.metadata else None
        answered = self.clock()  # a standby times what it saw from the answer (a slow GET must not shorten its wait)
        if version != self._observed.resource_version:
            self._observed = _Observed(version, answered, holder, spec.leaseDurationSeconds or 0)
        if holder and holder != self.identity:
            if self._leading:
                self.lose(f"the lease is held by {holder}")
                return False
            expires = self._observed.at + (self._observed.lease_seconds or self.timings.lease_seconds)
            if answered < expires:
                return False
        taking_over = holder != self.identity
        lease.spec = LeaseSpec(
            holderIdentity=self.identity, leaseDurationSeconds=self.timings.lease_seconds,
            acquireTime=now if taking_over else spec.acquireTime, renewTime=now,
            leaseTransitions=(spec.leaseTransitions or 0) + (1 if taking_over and holder else 0),
        )
        try:
            client.replace(lease)  # metadata.resourceVersion: refused with 409 if anyone wrote it since our read
        except ApiError as exc:
            if is_status(exc, 409):
                log.debug("Lease %s/%s changed under us; trying again", self.namespace, self.name)
                return False
            raise
        self._renewed(started)
        return True

    def _renewed(self, started: float) -> None:
        with self._lock:
            self._renewed_at = started

    def _watchdog(self, stop: threading.Event) -> None:
        """Stops the leader at its renew deadline, even while a renewal request hangs."""
        while not stop.wait(min(0.1, self.timings.retry_period_s / 4)):
            with self._lock:
                if not self._leading:
                    return
                overdue = self.clock() - self._renewed_at >= self.timings.renew_deadline_s
            if overdue:
                self.lose(f"no renewal within the renew deadline of {self.timings.renew_deadline_s:g}s")
                return

    def lose(self, reason: str) -> None:
        """Stop leading now (once): log ``lease_lost`` with ``reason`` and call ``on_stopped_leading``; also called
        by the reconciler when its writer was fenced in the control topic."""
        with self._lock:
            if self._lost:
                return
            self._lost, self._leading = True, False
        log.error("Lost lease %s/%s: %s; stopping", self.namespace, self.name, reason,
                  extra={**self.log_extra, ev.EVENT: ev.LEASE_LOST, "holder": self.identity, "reason": reason})
        self.on_stopped_leading(reason)
