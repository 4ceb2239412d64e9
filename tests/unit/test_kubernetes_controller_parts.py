"""The Kubernetes controller's pure parts: the spec's validation, conditions, Lease timings and the election rule
(a standby waits a full lease duration from when it saw the holder's last renewal) on an in-memory Lease store."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from lightkube import ApiError
from lightkube.models.meta_v1 import Status
from lightkube.resources.coordination_v1 import Lease

from pyrallel_consumer.bluegreen.controller import HealthCheck
from pyrallel_consumer.bluegreen.kubernetes.lease import LeaderElector, LeaseTimings
from pyrallel_consumer.bluegreen.kubernetes.resource import SpecError, parse_spec, set_condition

pytestmark = pytest.mark.unit

BASE = {"activeColor": "blue", "strategy": "C", "bootstrapServers": "kafka:9092"}


def test_a_minimal_spec_gets_the_default_health_check() -> None:
    spec = parse_spec(BASE)
    assert (spec.active_color, spec.strategy, spec.bootstrap_servers) == ("blue", "C", "kafka:9092")
    assert spec.health == HealthCheck()


@pytest.mark.parametrize(("change", "field"), [
    ({"activeColor": "red"}, "spec.activeColor"),
    ({"strategy": "A"}, "spec.strategy"),
    ({"bootstrapServers": " "}, "spec.bootstrapServers"),
    ({"strategy": "B"}, "spec.groups"),
    ({"strategy": "B", "groups": {"blue": "g", "green": "g"}}, "spec.groups"),
    ({"groups": {"blue": "a", "purple": "b"}}, "spec.groups"),
    ({"strategy": "E"}, "spec.connect.url"),
    ({"health": {"maxErrorRate": 2}}, "spec.health.maxErrorRate"),
    ({"health": {"windowSeconds": True}}, "spec.health.windowSeconds"),
])
def test_a_bad_spec_names_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec({**BASE, **change})


def test_strategies_b_and_e_and_no_health_check() -> None:
    b = parse_spec({**BASE, "strategy": "B", "groups": {"blue": "o-blue", "green": "o-green"},
                    "health": {"windowSeconds": 0}})
    assert b.groups == {"blue": "o-blue", "green": "o-green"}
    assert b.health is None
    e = parse_spec({**BASE, "strategy": "E", "connect": {"url": "http://connect:8083/",
                                                          "connectors": {"blue": "ob", "green": "og"}}})
    assert (e.connect_url, e.connectors) == ("http://connect:8083", {"blue": "ob", "green": "og"})


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = set_condition([], "Ready", True, "Consistent", "ok", 1)
    first[0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = set_condition(first, "Ready", True, "Consistent", "still ok", 2)
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert (same[0]["message"], same[0]["observedGeneration"]) == ("still ok", 2)
    flipped = set_condition(same, "Ready", False, "Inconsistent", "no blue pods", 2)
    assert flipped[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert len(set_condition(flipped, "Progressing", True, "Switching", "", 3)) == 2


@pytest.mark.parametrize(("lease", "renew", "retry"), [(10, 10, 2), (15, 2, 2), (15, 10, 0)])
def test_lease_timings_must_nest(lease: float, renew: float, retry: float) -> None:
    with pytest.raises(ValueError, match="must be greater"):
        LeaseTimings(lease, renew, retry)


class FakeLeases:
    """get/create/replace of one Lease with resourceVersion checks, like the API server."""

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.version = 0
        self.lock = threading.Lock()

    def _error(self, code: int) -> ApiError:
        return ApiError(status=Status(code=code, message=str(code)))

    def get(self, _res: Any, _name: str, namespace: str | None = None) -> Lease:
        with self.lock:
            if self.lease is None:
                raise self._error(404)
            return Lease.from_dict(self.lease.to_dict())

    def create(self, obj: Lease, namespace: str | None = None) -> Lease:
        with self.lock:
            if self.lease is not None:
                raise self._error(409)
            return self._store(obj)

    def replace(self, obj: Lease) -> Lease:
        with self.lock:
            if self.lease is None or obj.metadata is None or obj.metadata.resourceVersion != str(self.version):
                raise self._error(409)
            return self._store(obj)

    def _store(self, obj: Lease) -> Lease:
        self.version += 1
        stored = Lease.from_dict(obj.to_dict())
        if stored.metadata is not None:
            stored.metadata.resourceVersion = str(self.version)
        self.lease = stored
        return stored

    def close(self) -> None:
        pass


def _elector(store: FakeLeases, identity: str, now: list[float]) -> LeaderElector:
    return LeaderElector(lambda: store, "ns", "lease", identity,  # type: ignore[arg-type,return-value]
                         on_started_leading=lambda: None, on_stopped_leading=lambda _r: None,
                         timings=LeaseTimings(15, 10, 2), clock=lambda: now[0])


def test_a_standby_takes_an_unrenewed_lease_only_a_full_duration_after_it_saw_it() -> None:
    store, now = FakeLeases(), [100.0]
    leader, standby = _elector(store, "a", now), _elector(store, "b", now)
    assert leader._try_acquire_or_renew(store)  # type: ignore[arg-type]
    now[0] = 105.0
    assert not standby._try_acquire_or_renew(store)  # type: ignore[arg-type]  # sees the record first at 105
    now[0] = 119.9  # the holder's renewal is 19.9 s old, but the standby saw it only 14.9 s ago
    assert not standby._try_acquire_or_renew(store)  # type: ignore[arg-type]
    now[0] = 120.1
    assert standby._try_acquire_or_renew(store)  # type: ignore[arg-type]
    assert store.lease is not None and store.lease.spec is not None
    assert (store.lease.spec.holderIdentity, store.lease.spec.leaseTransitions) == ("b", 1)


def test_a_renewing_leader_keeps_the_lease_and_stops_acting_at_its_renew_deadline() -> None:
    store, now = FakeLeases(), [0.0]
    leader, standby = _elector(store, "a", now), _elector(store, "b", now)
    assert leader._try_acquire_or_renew(store)  # type: ignore[arg-type]
    leader._leading = True
    for t in range(2, 60, 2):
        now[0] = float(t)
        assert leader._try_acquire_or_renew(store)  # type: ignore[arg-type]
        assert not standby._try_acquire_or_renew(store)  # type: ignore[arg-type]
    assert leader.is_leader
    now[0] = 58.0 + 10.0  # no renewal for the renew deadline: no longer leader, long before a standby may take it
    assert not leader.is_leader
