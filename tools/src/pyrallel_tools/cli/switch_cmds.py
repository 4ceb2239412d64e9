"""``pyrallel switch``, ``pyrallel rollback`` and ``pyrallel controller serve``: the blue/green switch controller."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any, TypeVar

import click
from prometheus_client import start_http_server

from pyrallel_consumer.bluegreen.active_color import ControllerFencedError
from pyrallel_consumer.bluegreen.controller import (
    COLORS,
    STRATEGIES,
    Deployment,
    HealthCheck,
    SwitchController,
    SwitchError,
)
from pyrallel_consumer.control_server import HttpError, HttpServer, Request, Response
from pyrallel_tools.cli.controller_options import (
    KUBECONFIG_OPTION,
    NAMESPACE_OPTION,
    check_token,
    kafka_pairs,
    urls,
)

F = TypeVar("F", bound=Callable[..., Any])


def _deployment_options(fn: F, bootstrap_required: bool = True) -> F:
    options = [
        click.option("--bootstrap-servers", envvar="PYRALLEL_BOOTSTRAP_SERVERS", required=bootstrap_required,
                     help="Kafka bootstrap address (env PYRALLEL_BOOTSTRAP_SERVERS)."),
        click.option("--deployment", required=True, help="Name of the blue/green deployment (the control record key)."),
        click.option("--controller-id", default=None,
                     help="Controller id (default: the deployment name); the last controller started with an id "
                          "fences the others with it, so two controllers never drive a deployment at once."),
        click.option("--blue", help="Comma-separated control URLs of the blue consumer instances."),
        click.option("--green", help="Comma-separated control URLs of the green consumer instances."),
        click.option("--blue-group", help="Strategy B: consumer group of blue."),
        click.option("--green-group", help="Strategy B: consumer group of green."),
        click.option("--connect-url", envvar="PYRALLEL_CONNECT_URL", help="Strategy E: Kafka Connect REST URL."),
        click.option("--blue-connector", help="Strategy E: blue's connector name (default: blue)."),
        click.option("--green-connector", help="Strategy E: green's connector name (default: green)."),
        click.option("--token", envvar="PYRALLEL_CONTROL_TOKEN", callback=check_token,
                     help="Bearer token of the consumers' control APIs."),
        click.option("--health-window", type=click.FloatRange(0, 600), default=5.0, show_default=True,
                     help="Seconds the new color is watched after the switch (0 = no health check)."),
        click.option("--max-error-rate", type=click.FloatRange(0, 1), default=0.2, show_default=True,
                     help="Error rate of the new color above which the switch is rolled back."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _controller(options: dict[str, Any]) -> tuple[SwitchController, HealthCheck | None]:
    groups = {c: options[f"{c}_group"] for c in COLORS if options.get(f"{c}_group")}
    connectors = {c: options[f"{c}_connector"] for c in COLORS if options.get(f"{c}_connector")}
    deployment = Deployment(
        name=options["deployment"], bootstrap=options["bootstrap_servers"],
        instances={c: urls(options.get(c)) for c in COLORS}, groups=groups, token=options.get("token"),
        connect_url=options.get("connect_url"), connectors=connectors, kafka=dict(options.get("kafka") or {}),
    )
    health = (HealthCheck(window_s=options["health_window"], max_error_rate=options["max_error_rate"])
              if options["health_window"] > 0 else None)
    try:
        controller = SwitchController(deployment, options["controller_id"] or options["deployment"])
    except Exception as exc:
        raise click.ClickException(f"cannot reach the control topic at {deployment.bootstrap}: {exc}") from exc
    return controller, health


def _check_strategy_inputs(strategy: str, controller: SwitchController) -> None:
    deployment = controller.deployment
    if strategy in ("B", "C") and not all(deployment.instances.get(c) for c in COLORS):
        raise click.UsageError(f"strategy {strategy} needs --blue and --green control URLs")
    if strategy == "B" and len(deployment.groups) != 2:
        raise click.UsageError("strategy B needs --blue-group and --green-group")
    if strategy == "E" and not deployment.connect_url:
        raise click.UsageError("strategy E needs --connect-url")


def _report(result: Any) -> None:
    click.echo(json.dumps(result.to_dict(), indent=2))
    if not result.ok:
        raise SystemExit(1)


@click.command()
@click.option("--strategy", type=click.Choice(STRATEGIES), required=True)
@click.option("--to", "to_color", type=click.Choice(COLORS), required=True, help="The color that should process.")
@_deployment_options
def switch(strategy: str, to_color: str, **options: Any) -> None:
    """Switch processing to one color (stop the other first), with automatic rollback on failure."""
    controller, health = _controller(options)
    _check_strategy_inputs(strategy, controller)
    try:
        _report(controller.switch(strategy, to_color, health))
    except (SwitchError, ControllerFencedError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--strategy", type=click.Choice(STRATEGIES), required=True)
@_deployment_options
def rollback(strategy: str, **options: Any) -> None:
    """Give processing back to the color that was active before the current one."""
    controller, health = _controller(options)
    _check_strategy_inputs(strategy, controller)
    try:
        _report(controller.rollback(strategy, health))
    except (SwitchError, ControllerFencedError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def controller() -> None:
    """The switch controller as a service."""


def _optional_bootstrap(fn: F) -> F:
    return _deployment_options(fn, bootstrap_required=False)


_KUBERNETES_ONLY = ("namespace", "kubeconfig", "identity")
_URL_ONLY = ("blue", "green", "blue_group", "green_group", "connect_url", "blue_connector", "green_connector",
             "controller_id", "port", "bootstrap_servers", "health_window", "max_error_rate")
"""Options of the URL mode that ``--kubernetes`` takes from the ConsumerDeployment (or does not have)."""


def _from_command_line(context: click.Context, names: tuple[str, ...]) -> list[str]:
    """The options of ``names`` given on the command line. Only those: an environment that also serves the other
    mode (PYRALLEL_BOOTSTRAP_SERVERS, PYRALLEL_CONNECT_URL of a shell or a Makefile) must not stop a start."""
    return [f"--{name.replace('_', '-')}" for name in names
            if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]


@controller.command()
@_optional_bootstrap
@click.option("--port", type=click.IntRange(0, 65535), default=8090, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of the HTTP API and the metrics.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve bg_switch_duration_seconds and bg_rollback_duration_seconds for Prometheus (with "
                   "--kubernetes also pyrallel_controller_leader, 1 on the replica holding the Lease).")
@click.option("--kubernetes", is_flag=True,
              help="Kubernetes-native: reconcile the ConsumerDeployment --deployment in --namespace, one replica "
                   "acting through a Lease (no HTTP API; bootstrap servers, strategy and colors come from the "
                   "resource and the pods). See docs/kubernetes.md.")
@NAMESPACE_OPTION
@KUBECONFIG_OPTION
@click.option("--identity", default=None, help="--kubernetes: Lease holder identity (default: <pod name>_<random>).")
@click.option("--lease-duration", type=click.FloatRange(0, min_open=True), default=15.0, show_default=True,
              help="--kubernetes: seconds a standby waits on an unrenewed Lease before taking it.")
@click.option("--renew-deadline", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="--kubernetes: seconds the leader may go without renewing before it stops (and exits 3).")
@click.option("--retry-period", type=click.FloatRange(0, min_open=True), default=2.0, show_default=True,
              help="--kubernetes: seconds between Lease attempts and renewals.")
@click.option("--resync", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="--kubernetes: seconds between reconciliations without any change seen.")
@click.option("--kafka", "kafka", multiple=True, metavar="KEY=VALUE", callback=kafka_pairs,
              help="librdkafka property of the controller's own Kafka clients (repeatable), e.g. security.protocol.")
def serve(port: int, host: str, metrics_port: int | None, kubernetes: bool, lease_duration: float,
          renew_deadline: float, retry_period: float, resync: float, kafka: dict[str, str],
          **options: Any) -> None:
    """HTTP API: POST /switch {"strategy", "to"}, POST /rollback {"strategy"}, GET /status; or, with
    --kubernetes, the Kubernetes-native controller of a ConsumerDeployment."""
    context = click.get_current_context()
    if kubernetes:
        from pyrallel_tools.cli.controller_kube_cmds import lease_timings, serve_kubernetes

        given = _from_command_line(context, _URL_ONLY)
        if given:
            raise click.UsageError(f"{', '.join(given)}: not with --kubernetes (the ConsumerDeployment and its "
                                   f"pods say these)")
        serve_kubernetes(options["deployment"], options["namespace"], options.get("kubeconfig"),
                         options.get("token"), kafka, lease_timings(lease_duration, renew_deadline, retry_period),
                         options.get("identity"), resync, host, metrics_port)
        return
    given = _from_command_line(context, _KUBERNETES_ONLY)
    if given:
        raise click.UsageError(f"{', '.join(given)}: only with --kubernetes")
    if not options.get("bootstrap_servers"):
        raise click.UsageError("Missing option '--bootstrap-servers' (or env PYRALLEL_BOOTSTRAP_SERVERS).")
    switch_controller, health = _controller({**options, "kafka": kafka})
    try:
        if metrics_port is not None:
            start_http_server(metrics_port, addr=host, registry=switch_controller.registry)
        asyncio.run(_serve(switch_controller, health, host, port, options.get("token")))
    except OSError as exc:  # a port in use, an address not available
        raise click.ClickException(f"cannot serve on {host}: {exc}") from None


async def _serve(switch_controller: SwitchController, health: HealthCheck | None, host: str, port: int,
                 token: str | None) -> None:
    server = HttpServer(host, port, token=token, name="controller")
    busy = asyncio.Lock()

    def strategy_of(body: Any) -> str:
        strategy = body.get("strategy") if isinstance(body, dict) else None
        if strategy not in STRATEGIES:
            raise HttpError(400, f"strategy must be one of {', '.join(STRATEGIES)}")
        try:
            _check_strategy_inputs(strategy, switch_controller)
        except click.UsageError as exc:
            raise HttpError(400, exc.message) from None
        return str(strategy)

    async def run(action: Callable[[], Any]) -> Response:
        if busy.locked():
            raise HttpError(409, "a switch is already running")
        async with busy:
            try:
                result = await asyncio.to_thread(action)
            except (SwitchError, ControllerFencedError) as exc:
                raise HttpError(409, str(exc)) from None
        return Response(200 if result.ok else 500, result.to_dict())

    async def do_switch(request: Request) -> Response:
        body = request.json()
        strategy = strategy_of(body)
        to_color = body.get("to")
        if to_color not in COLORS:
            raise HttpError(400, "to must be blue or green")
        return await run(lambda: switch_controller.switch(strategy, to_color, health))

    async def do_rollback(request: Request) -> Response:
        strategy = strategy_of(request.json())
        return await run(lambda: switch_controller.rollback(strategy, health))

    async def status(_request: Request) -> Response:
        try:
            current = await asyncio.to_thread(switch_controller.current)
        except SwitchError as exc:
            raise HttpError(503, str(exc)) from None
        return Response(200, {
            "deployment": switch_controller.deployment.name,
            "active": None if current is None else {"color": current.color, "generation": current.generation},
            "busy": busy.locked(),
            "history": [r.to_dict() for r in switch_controller.history[-20:]],
        })

    server.add_route("POST", "/switch", do_switch)
    server.add_route("POST", "/rollback", do_rollback)
    server.add_route("GET", "/status", status)
    await server.start()
    click.echo(f"controller listening on {server.url}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def _register_kubernetes_commands() -> None:
    from pyrallel_tools.cli.controller_kube_cmds import health, set_active

    controller.add_command(set_active)
    controller.add_command(health)


_register_kubernetes_commands()
