"""The Kubernetes side of ``pyrallel controller``: ``serve --kubernetes`` (run by ``switch_cmds.serve``),
``set-active`` and ``health``.

``set-active`` is what the chart's Argo Rollouts post-promotion Job and the tests run to request a switch and wait
for its outcome; ``health`` is the pre-promotion analysis. lightkube and the controller package are imported when
a command runs, so ``pyrallel --help`` does not pay for them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pyrallel_consumer.bluegreen.controller import COLORS, STRATEGIES
from pyrallel_tools.cli.controller_options import KUBECONFIG_OPTION, NAMESPACE_OPTION, check_token, urls

if TYPE_CHECKING:
    from lightkube import Client

    from pyrallel_consumer.bluegreen.kubernetes.lease import LeaseTimings

EXIT_LEASE_LOST = 3
"""Exit code of ``serve --kubernetes`` when the Lease was lost (or the writer fenced): restart as a standby."""

def _factory(kubeconfig: Path | None, namespace: str) -> Callable[[], Client]:
    from pyrallel_consumer.bluegreen.kubernetes.client import KubeSetupError, client_factory, load_config

    try:
        return client_factory(load_config(kubeconfig), namespace)
    except KubeSetupError as exc:
        raise click.ClickException(str(exc)) from None


def _client(kubeconfig: Path | None, namespace: str) -> Client:
    return _factory(kubeconfig, namespace)()


def _api_error(exc: BaseException, namespace: str, deployment: str) -> click.ClickException:
    from pyrallel_consumer.bluegreen.kubernetes.client import describe, is_status

    if is_status(exc, 404):
        return click.ClickException(f"ConsumerDeployment {namespace}/{deployment} not found (is the CRD installed "
                                    f"and the resource created?)")
    return click.ClickException(f"the Kubernetes API server refused or did not answer: {describe(exc)}")


def lease_timings(lease_duration: float, renew_deadline: float, retry_period: float) -> LeaseTimings:
    from pyrallel_consumer.bluegreen.kubernetes.lease import LeaseTimings

    try:
        return LeaseTimings(lease_duration, renew_deadline, retry_period)
    except ValueError as exc:
        raise click.UsageError(f"--lease-duration/--renew-deadline/--retry-period: {exc}") from None


def serve_kubernetes(deployment: str, namespace: str, kubeconfig: Path | None, token: str | None,
                     kafka: dict[str, str], timings: LeaseTimings, identity: str | None, resync: float,
                     metrics_host: str, metrics_port: int | None) -> None:
    """Stand by for the Lease, then reconcile the ConsumerDeployment until SIGTERM/SIGINT (the Lease is released)
    or until the Lease is lost (exit ``EXIT_LEASE_LOST`` at once, whatever runs: another replica may start)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from pyrallel_consumer.bluegreen.kubernetes.client import KUBE_ERRORS, describe, is_status
    from pyrallel_consumer.bluegreen.kubernetes.reconciler import (
        LeadershipLostError,
        Reconciler,
        ReconcilerOptions,
        default_identity,
    )
    from pyrallel_consumer.bluegreen.kubernetes.resource import ConsumerDeployment

    for noisy in ("httpx2", "httpx"):  # one INFO line per request: every Lease renewal, every pod listing
        logging.getLogger(noisy).setLevel(logging.WARNING)
    factory = _factory(kubeconfig, namespace)
    client = factory()
    try:
        client.get(ConsumerDeployment, deployment, namespace=namespace)
    except KUBE_ERRORS as exc:
        if not is_status(exc, 404):
            raise click.ClickException(f"the Kubernetes API server refused or did not answer: {describe(exc)}") \
                from None
        logging.getLogger(__name__).warning("ConsumerDeployment %s/%s does not exist yet; waiting for it",
                                            namespace, deployment)
    finally:
        client.close()
    registry = CollectorRegistry()
    if metrics_port is not None:
        try:
            start_http_server(metrics_port, addr=metrics_host, registry=registry)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}") from None
    options = ReconcilerOptions(namespace=namespace, deployment=deployment, identity=identity or default_identity(),
                                token=token, kafka=kafka, timings=timings, resync_s=resync)
    reconciler = Reconciler(factory, options, on_lost=_exit_lost, registry=registry)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    click.echo(f"controller {options.identity} for {namespace}/{deployment}: standing by for the lease")
    try:
        reconciler.run(stop)
    except LeadershipLostError as exc:
        _exit_lost(str(exc))


def _exit_lost(reason: str) -> None:
    """Stop acting now: a switch running on another thread cannot be interrupted, so the process ends."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.write(f"lease lost: {reason}; exiting\n")
    sys.stderr.flush()
    os._exit(EXIT_LEASE_LOST)


@click.command("set-active")
@click.option("--deployment", required=True, help="Name of the ConsumerDeployment.")
@NAMESPACE_OPTION
@click.option("--color", type=click.Choice(COLORS), required=True, help="The color that should process.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None, help="Also set spec.strategy.")
@click.option("--wait", type=click.FloatRange(0), default=None,
              help="Wait up to SECONDS for the switch's outcome; exit 1 unless it is Active on COLOR.")
@KUBECONFIG_OPTION
def set_active(deployment: str, namespace: str, color: str, strategy: str | None, wait: float | None,
               kubeconfig: Path | None) -> None:
    """Request a switch: set spec.activeColor of a ConsumerDeployment (merge patch), optionally wait for it.

    When spec.activeColor already names COLOR but the status does not (the last switch to it was rolled back or
    failed), spec.switchRequest is raised as well: that changes the spec, so the controller tries again."""
    from lightkube.types import PatchType

    from pyrallel_consumer.bluegreen.kubernetes.client import KUBE_ERRORS
    from pyrallel_consumer.bluegreen.kubernetes.resource import FINAL_PHASES, ConsumerDeployment

    client = _client(kubeconfig, namespace)
    spec: dict[str, Any] = {"activeColor": color}
    if strategy is not None:
        spec["strategy"] = strategy
    try:
        current = client.get(ConsumerDeployment, deployment, namespace=namespace)
        body: dict[str, Any] = {"spec": spec}
        if _needs_new_request(dict(current.get("spec") or {}), dict(current.get("status") or {}),
                              int((current.metadata.generation if current.metadata else None) or 0), color):
            spec["switchRequest"] = int((current.get("spec") or {}).get("switchRequest") or 0) + 1
            # Read-modify-write: refused (409) if anyone changed the resource since the read.
            body["metadata"] = {"resourceVersion": current.metadata.resourceVersion if current.metadata else None}
        patched = client.patch(ConsumerDeployment, deployment, body, namespace=namespace,
                               patch_type=PatchType.MERGE)
        generation = int(patched.metadata.generation or 0) if patched.metadata else 0
        again = f", switchRequest={spec['switchRequest']}" if "switchRequest" in spec else ""
        click.echo(f"{namespace}/{deployment}: spec.activeColor={color}{again} (generation {generation})")
        if wait is None:
            return
        deadline = time.monotonic() + wait
        while True:
            status: dict[str, Any] = dict(client.get(ConsumerDeployment, deployment, namespace=namespace)
                                          .get("status") or {})
            done = (int(status.get("observedGeneration") or 0) >= generation
                    and status.get("phase") in FINAL_PHASES)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    except KUBE_ERRORS as exc:
        raise _api_error(exc, namespace, deployment) from None
    finally:
        client.close()
    summary = {k: status.get(k) for k in ("phase", "activeColor", "generation", "observedGeneration", "lastSwitch")}
    click.echo(json.dumps(summary, indent=2))
    if not done:
        raise click.ClickException(f"no outcome within {wait:g}s (phase {status.get('phase')}, observed generation "
                                   f"{status.get('observedGeneration')} of {generation})")
    if status.get("phase") != "Active" or status.get("activeColor") != color:
        last = status.get("lastSwitch") or {}
        raise click.ClickException(f"the switch to {color} ended {status.get('phase')}: {last.get('error')}")


def _needs_new_request(spec: dict[str, Any], status: dict[str, Any], generation: int, color: str) -> bool:
    """spec.activeColor already is ``color``, the status is not on it, and no request is pending (the controller
    observed the current generation): patching activeColor alone would change nothing."""
    return (spec.get("activeColor") == color and status.get("activeColor") != color
            and int(status.get("observedGeneration") or 0) >= generation)


@click.command()
@click.option("--kubernetes", is_flag=True, help="Find the color's instances from the pods of the deployment.")
@click.option("--deployment", default=None, help="Name of the ConsumerDeployment (with --kubernetes).")
@NAMESPACE_OPTION
@click.option("--color", type=click.Choice(COLORS), required=True, help="The color to check (e.g. Argo's preview).")
@click.option("--instances", default=None, help="Without --kubernetes: comma-separated control URLs of the color.")
@click.option("--window", type=click.FloatRange(0, 600), default=5.0, show_default=True,
              help="Seconds over which handler failures are counted.")
@click.option("--max-error-rate", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Highest share of handler failures (of what the color handled over the window) still healthy.")
@click.option("--token", envvar="PYRALLEL_CONTROL_TOKEN", default=None, callback=check_token,
              help="Bearer token of the consumers' control APIs (env PYRALLEL_CONTROL_TOKEN).")
@KUBECONFIG_OPTION
def health(kubernetes: bool, deployment: str | None, namespace: str, color: str, instances: str | None,
           window: float, max_error_rate: float, token: str | None, kubeconfig: Path | None) -> None:
    """Exit 0 when every instance of COLOR is ready and its handler failures stay under the rate (a paused color
    can be healthy); the pre-promotion check of Argo Rollouts."""
    from pyrallel_consumer.bluegreen.kubernetes.health import check_color

    if kubernetes == (instances is not None):
        raise click.UsageError("give either --kubernetes (with --deployment) or --instances")
    if kubernetes:
        if not deployment:
            raise click.UsageError("--kubernetes needs --deployment")
        from pyrallel_consumer.bluegreen.kubernetes.client import KUBE_ERRORS
        from pyrallel_consumer.bluegreen.kubernetes.pods import list_instances, urls_by_color

        client = _client(kubeconfig, namespace)
        try:
            found = urls_by_color(list_instances(client, namespace, deployment))[color]
        except KUBE_ERRORS as exc:
            raise _api_error(exc, namespace, deployment) from None
        finally:
            client.close()
    else:
        found = urls(instances)
    result = check_color(color, found, token, window, max_error_rate)
    click.echo(json.dumps(result.to_dict(), indent=2))
    if not result.healthy:
        raise SystemExit(1)
