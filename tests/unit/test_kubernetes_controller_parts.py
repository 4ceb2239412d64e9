"""The Kubernetes controller's pure parts: the spec's validation, conditions, Lease timings and the election rule
(a standby waits a full lease duration from when it saw the holder's last renewal) on an in-memory Lease store."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta, Status
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from pyrallel_consumer.bluegreen.active_color import ActiveColor
from pyrallel_consumer.bluegreen.controller import HealthCheck, SwitchError
from pyrallel_consumer.bluegreen.kubernetes import reconciler as reconciler_module
from pyrallel_consumer.bluegreen.kubernetes.lease import LeaderElector, LeaseTimings
from pyrallel_consumer.bluegreen.kubernetes.pods import PodInstance
from pyrallel_consumer.bluegreen.kubernetes.reconciler import Reconciler, ReconcilerOptions
from pyrallel_consumer.bluegreen.kubernetes.resource import ConsumerDeployment, SpecError, parse_spec, set_condition
from pyrallel_consumer.bluegreen.kubernetes.strimzi import StrimziConnectorState
from pyrallel_tools.cli.main import cli

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
        self.created: list[tuple[Any, str]] = []

    def _error(self, code: int) -> ApiError:
        return ApiError(status=Status(code=code, message=str(code)))

    def get(self, _res: Any, _name: str, namespace: str | None = None) -> Lease:
        self.on_get()
        with self.lock:
            if self.lease is None:
                raise self._error(404)
            return Lease.from_dict(self.lease.to_dict())

    def on_get(self) -> None:
        """Called at each GET, before it answers (a test makes a GET slow here)."""

    def create(self, obj: Any, namespace: str | None = None) -> Any:
        if not isinstance(obj, Lease):  # an Event: remembered with the thread that created it
            self.created.append((obj, threading.current_thread().name))
            return obj
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


def test_a_standby_times_what_it_saw_from_when_its_get_answered() -> None:
    """client-go's rule: a GET that took long must not shorten the standby's wait by its own duration."""
    store, now = FakeLeases(), [100.0]
    leader, standby = _elector(store, "a", now), _elector(store, "b", now)
    assert leader._try_acquire_or_renew(store)  # type: ignore[arg-type]
    slow = [5.0]

    def slow_get() -> None:
        now[0] += slow[0]

    store.on_get = slow_get  # type: ignore[method-assign]
    assert not standby._try_acquire_or_renew(store)  # type: ignore[arg-type]  # asked at 100, answered at 105
    slow[0] = 0.0
    now[0] = 119.0  # 19 s after the request, 14 s after the answer: not yet
    assert not standby._try_acquire_or_renew(store)  # type: ignore[arg-type]
    now[0] = 120.1
    assert standby._try_acquire_or_renew(store)  # type: ignore[arg-type]


# ---- the reconciler's loop on the in-memory Lease store ----------------------------------------------------


class BlockingSwitch(Reconciler):
    """A reconciler whose pass is a switch that runs until the test lets it end, then writes its status."""

    def __init__(self, store: FakeLeases, timings: LeaseTimings) -> None:
        super().__init__(lambda: store, ReconcilerOptions("ns", "orders", identity="a", timings=timings))  # type: ignore[arg-type,return-value]
        self.switching = threading.Event()
        self.may_finish = threading.Event()
        self.status_written = False
        self.leading_when_written = False

    def _watch_pods(self) -> None:
        return None

    def _watch_resource(self) -> None:
        return None

    def reconcile(self) -> None:
        if self.status_written:
            return
        self.switching.set()
        self.may_finish.wait(30)
        self.leading_when_written = self.elector.is_leader
        self.status_written = True


def test_sigterm_during_a_switch_finishes_it_renewing_the_lease_then_releases_it() -> None:
    store, timings = FakeLeases(), LeaseTimings(1.5, 1.0, 0.1)
    reconciler = BlockingSwitch(store, timings)
    stop, errors = threading.Event(), []

    def run() -> None:
        try:
            reconciler.run(stop)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    assert reconciler.switching.wait(10)
    stop.set()  # SIGTERM while the switch runs
    version_at_stop = store.version
    standby = LeaderElector(lambda: store, "ns", "pyrallel-controller-orders", "b",  # type: ignore[arg-type,return-value]
                            on_started_leading=lambda: None, on_stopped_leading=lambda _r: None, timings=timings)
    standby_stop = threading.Event()
    standby_thread = threading.Thread(target=standby.run, args=(standby_stop,))
    standby_thread.start()
    # Several lease durations pass while the switch still runs: the leader keeps renewing, the standby waits.
    deadline = time.monotonic() + 3 * timings.lease_duration_s
    while time.monotonic() < deadline:
        assert store.lease is not None and store.lease.spec is not None
        assert store.lease.spec.holderIdentity == "a"
        assert not standby.is_leader
        time.sleep(0.05)
    assert store.version > version_at_stop + 5, "renewals went on during the switch"
    reconciler.may_finish.set()
    runner.join(10)
    assert not runner.is_alive() and errors == []
    assert reconciler.status_written and reconciler.leading_when_written
    assert store.lease is not None and store.lease.spec is not None
    # Released (holder emptied) or already taken by the standby, which may act only now.
    assert store.lease.spec.holderIdentity in (None, "b")
    end = time.monotonic() + 10
    while not standby.is_leader and time.monotonic() < end:
        time.sleep(0.05)
    assert standby.is_leader
    standby_stop.set()
    standby_thread.join(5)
    # LeaderElected was recorded from the loop thread, not the elector's (no API call before its first renewal).
    elected = [thread for event, thread in store.created if getattr(event, "reason", None) == "LeaderElected"]
    assert elected and "lease" not in elected


def test_failed_passes_back_off_exponentially_up_to_a_minute() -> None:
    assert [Reconciler.backoff_s(n) for n in (1, 2, 3, 4, 5, 6, 7, 20)] == [2, 4, 8, 16, 32, 60, 60, 60]


# ---- consistency ------------------------------------------------------------------------------------------


class Pods:
    """The pods' control APIs: per URL, a status dict or None (unreachable); records the commands."""

    def __init__(self, states: dict[str, dict[str, Any] | None]) -> None:
        self.states = states
        self.commands: list[str] = []
        self.fail_pause = False

    def __call__(self, method: str, url: str, body: Any = None, token: str | None = None,
                 timeout_s: float = 60.0) -> Any:
        base, _, path = url.partition("/lifecycle/")
        state = self.states.get(base)
        if state is None:
            raise SwitchError(f"{url}: connection refused")
        if method == "GET":
            return state
        command, _, query = path.partition("?")
        self.commands.append(f"{base} {command} {query}")
        if command == "pause" and self.fail_pause:
            raise SwitchError(f"{url}: 503")
        generation = int(dict(p.split("=") for p in query.split("&"))["generation"])
        state.update(state="ACTIVE" if command == "resume" else "PAUSED", generation=generation)
        return {"state": state["state"]}


def _leading_reconciler(monkeypatch: pytest.MonkeyPatch, pods: Pods) -> Reconciler:
    store = FakeLeases()
    reconciler = Reconciler(lambda: store, ReconcilerOptions("ns", "orders", identity="a"))  # type: ignore[arg-type,return-value]
    assert reconciler.elector._try_acquire_or_renew(store)  # type: ignore[arg-type]
    reconciler.elector._leading = True
    monkeypatch.setattr(reconciler_module, "http_json", pods)
    return reconciler


BLUE, GREEN = PodInstance("blue-0", "blue", "http://blue-0"), PodInstance("green-0", "green", "http://green-0")


def test_the_active_color_is_not_resumed_while_an_inactive_pod_last_seen_processing_is_unreachable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pods = Pods({BLUE.url: {"state": "PAUSED", "desired_state": "PAUSED", "generation": 2},
                 GREEN.url: {"state": "ACTIVE", "desired_state": "ACTIVE", "generation": 2}})
    reconciler = _leading_reconciler(monkeypatch, pods)
    record = ActiveColor("orders", "blue", 2, "orders", 0.0)
    pods.fail_pause = True
    consistent, message = reconciler._make_consistent(record, [BLUE, GREEN])
    assert not consistent and "green-0 (green) could not be paused" in message
    pods.states[GREEN.url] = None  # green stops answering; it was last seen ACTIVE
    consistent, message = reconciler._make_consistent(record, [BLUE, GREEN])
    assert not consistent and "green-0 (green) unreachable, last seen processing" in message, message
    assert not any("resume" in c for c in pods.commands)
    # Gone from the API (deleted): no longer holds blue back.
    consistent, message = reconciler._make_consistent(record, [BLUE])
    assert consistent, message
    assert pods.commands[-1] == "http://blue-0 resume wait=30&generation=2"


def test_an_unreachable_inactive_pod_last_seen_paused_does_not_hold_the_active_color(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pods = Pods({BLUE.url: {"state": "PAUSED", "desired_state": "PAUSED", "generation": 2},
                 GREEN.url: {"state": "PAUSED", "desired_state": "PAUSED", "generation": 2}})
    reconciler = _leading_reconciler(monkeypatch, pods)
    record = ActiveColor("orders", "blue", 2, "orders", 0.0)
    assert reconciler._make_consistent(record, [BLUE, GREEN])[0]
    pods.states[BLUE.url] = {"state": "PAUSED", "desired_state": "PAUSED", "generation": 2}
    pods.states[GREEN.url] = None
    consistent, message = reconciler._make_consistent(record, [BLUE, GREEN])
    assert "unreachable: green-0" in message and not consistent
    assert pods.commands[-1].startswith("http://blue-0 resume")


@pytest.mark.parametrize(("reported", "steps"), [(2, ["2", "4", "5"]), (None, ["1", "2", "3", "4", "5"])])
def test_a_pod_far_behind_is_walked_up_by_the_step_its_status_reports(
        monkeypatch: pytest.MonkeyPatch, reported: int | None, steps: list[str]) -> None:
    status: dict[str, Any] = {"state": "PAUSED", "desired_state": "PAUSED", "generation": 0}
    if reported is not None:
        status["max_generation_step"] = reported
    pods = Pods({GREEN.url: status})
    reconciler = _leading_reconciler(monkeypatch, pods)
    reconciler._make_consistent(ActiveColor("orders", "blue", 5, "orders", 0.0), [GREEN])
    assert [c.rsplit("=", 1)[1] for c in pods.commands if "pause generation" in c] == steps


class FakeKube(FakeLeases):
    """The Lease store plus one ConsumerDeployment and its pods, for a whole pass."""

    def __init__(self, spec: dict[str, Any], pods: list[PodInstance]) -> None:
        super().__init__()
        self.resource = ConsumerDeployment(metadata=ObjectMeta(name="orders", namespace="ns", generation=3,
                                                               uid="u"), spec=spec)
        self.resource["status"] = {"observedGeneration": 2, "phase": "Active"}
        self.pods = pods
        self.patches: list[dict[str, Any]] = []

    def get(self, res: Any, name: str, namespace: str | None = None) -> Any:
        if res is ConsumerDeployment:
            return self.resource
        return super().get(res, name, namespace)

    def list(self, _res: Any, namespace: str | None = None, labels: Any = None) -> list[Pod]:
        return [Pod.from_dict({"metadata": {"name": p.name, "labels": {"pyrallel.io/color": p.color}},
                               "spec": {"containers": [{"name": "c", "ports": [
                                   {"name": "control", "containerPort": 80}]}]},
                               "status": {"podIP": p.name, "phase": "Running"}}) for p in self.pods]

    def patch(self, _res: Any, _name: str, body: dict[str, Any], namespace: str | None = None,
              patch_type: Any = None) -> None:
        self.patches.append(body)


def test_an_invalid_spec_is_reported_while_the_pods_stay_consistent_with_the_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    blue, green = PodInstance("blue-0", "blue", "http://blue-0:80"), PodInstance("green-0", "green",
                                                                                 "http://green-0:80")
    pods = Pods({blue.url: {"state": "PAUSED", "desired_state": "PAUSED", "generation": 2},
                 green.url: {"state": "PAUSED", "desired_state": "PAUSED", "generation": 2}})
    kube = FakeKube({**BASE, "strategy": "A"}, [blue, green])
    reconciler = Reconciler(lambda: kube, ReconcilerOptions("ns", "orders", identity="a"))  # type: ignore[arg-type,return-value]
    assert reconciler.elector._try_acquire_or_renew(kube)  # type: ignore[arg-type]
    reconciler.elector._leading = True
    monkeypatch.setattr(reconciler_module, "http_json", pods)
    record = ActiveColor("orders", "blue", 2, "orders", 0.0)
    reconciler._controller = SimpleNamespace(  # type: ignore[assignment]  # the last valid spec's controller
        deployment=SimpleNamespace(instances={}, bootstrap="kafka:9092"), current=lambda: record)
    reconciler.reconcile()
    assert pods.commands == ["http://blue-0:80 resume wait=30&generation=2"]  # the restarted blue pod resumed
    [patch] = kube.patches
    status = patch["status"]
    assert (status["phase"], status["observedGeneration"], status["activeColor"]) == ("Failed", 3, "blue")
    [ready] = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.strategy" in ready["message"] and "consistent with blue" in ready["message"]


def test_a_watch_that_fails_unexpectedly_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    reconciler: Reconciler

    class Client:
        def watch(self) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a bug in a watch")
            reconciler._elector_stop.set()
            return iter([("ADDED", None)])

        def close(self) -> None:
            pass

    reconciler = Reconciler(Client, ReconcilerOptions("ns", "orders", identity="a"))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        reconciler._watch(lambda c: c.watch(), "pods")
    assert len(calls) == 2 and reconciler._wake.is_set()
    assert any(r.levelno == logging.ERROR and "Watch of pods failed unexpectedly" in r.getMessage()
               for r in caplog.records)


# ---- Strimzi ------------------------------------------------------------------------------------------------


class Connectors:
    """patch/get of KafkaConnectors answering fixed statuses."""

    def __init__(self, patch: int, get: int) -> None:
        self.patch_status, self.get_status = patch, get

    def _answer(self, code: int) -> None:
        if code != 200:
            raise ApiError(status=Status(code=code, message=str(code)))

    def patch(self, *_args: Any, **_kwargs: Any) -> None:
        self._answer(self.patch_status)

    def get(self, *_args: Any, **_kwargs: Any) -> None:
        self._answer(self.get_status)

    def close(self) -> None:
        pass


def test_a_kafkaconnector_that_exists_but_cannot_be_patched_fails_the_step() -> None:
    with pytest.raises(SwitchError, match=r"KafkaConnector orders-blue: cannot set spec\.state=stopped.*403"):
        StrimziConnectorState(lambda: Connectors(403, 200), "ns")("orders-blue", "stopped")  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(("patch", "get", "level"), [(404, 404, logging.INFO), (403, 404, logging.INFO),
                                                     (403, 403, logging.WARNING)])
def test_no_kafkaconnector_or_none_readable_leaves_the_rest_api_alone(
        caplog: pytest.LogCaptureFixture, patch: int, get: int, level: int) -> None:
    with caplog.at_level(logging.INFO, logger="pyrallel_consumer.bluegreen.kubernetes.strimzi"):
        StrimziConnectorState(lambda: Connectors(patch, get), "ns")("orders-blue", "stopped")  # type: ignore[arg-type,return-value]
    assert [r.levelno for r in caplog.records] == [level] * len(caplog.records) and caplog.records


# ---- the spec and the CLI ---------------------------------------------------------------------------------


def test_switch_request_is_a_whole_number() -> None:
    assert parse_spec({**BASE, "switchRequest": 3}).switch_request == 3
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(SpecError, match=r"spec\.switchRequest"):
            parse_spec({**BASE, "switchRequest": bad})


@pytest.mark.parametrize("option", [["--port", "9000"], ["--bootstrap-servers", "k:9092"],
                                    ["--health-window", "3"], ["--max-error-rate", "0.5"]])
def test_serve_kubernetes_refuses_url_mode_options_given_on_the_command_line(option: list[str]) -> None:
    result = CliRunner().invoke(cli, ["controller", "serve", "--kubernetes", "--deployment", "d", *option])
    assert result.exit_code == 2 and f"{option[0]}: not with --kubernetes" in result.output, result.output


def test_serve_refuses_a_kafka_property_librdkafka_does_not_know() -> None:
    result = CliRunner().invoke(cli, ["controller", "serve", "--kubernetes", "--deployment", "d",
                                      "--kafka", "no.such.property=1"])
    assert result.exit_code == 2 and "no.such.property" in result.output, result.output


def test_serve_kubernetes_ignores_the_url_modes_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """PYRALLEL_BOOTSTRAP_SERVERS in the environment is for other modes: not refused (the start fails later, on
    the missing kubeconfig here)."""
    monkeypatch.setenv("PYRALLEL_BOOTSTRAP_SERVERS", "k:9092")
    result = CliRunner().invoke(cli, ["controller", "serve", "--kubernetes", "--deployment", "d", "--kubeconfig",
                                      str(tmp_path / "missing")])
    assert "not with --kubernetes" not in result.output
    assert "no Kubernetes configuration" in result.output, result.output


def test_health_refuses_a_blank_token() -> None:
    result = CliRunner().invoke(cli, ["controller", "health", "--color", "blue", "--instances", "http://x",
                                      "--token", " "])
    assert result.exit_code == 2 and "token" in result.output.lower(), result.output


def test_set_active_raises_switch_request_only_when_spec_already_names_the_color_and_nothing_is_pending() -> None:
    from pyrallel_tools.cli.controller_kube_cmds import _needs_new_request

    rolled_back = {"activeColor": "blue", "phase": "RolledBack", "observedGeneration": 4}
    assert _needs_new_request({"activeColor": "green"}, rolled_back, 4, "green")  # retry after the rollback
    assert not _needs_new_request({"activeColor": "blue"}, rolled_back, 4, "green")  # activeColor alone changes it
    assert not _needs_new_request({"activeColor": "green"}, {**rolled_back, "observedGeneration": 3}, 4, "green")
    assert not _needs_new_request({"activeColor": "green"}, {"activeColor": "green"}, 4, "green")  # already there
