"""``pyrallel produce | consume | validate``: the load producer, consumer app and judge of blue/green runs.

Settings come from, strongest first: the command line, environment variables, a ``--config`` file (JSON, or
TOML for ``*.toml``; keys are option names, faults under a ``faults`` table), the defaults.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from confluent_kafka import KafkaException
from pydantic import BaseModel, ValidationError

from pyrallel_consumer.bluegreen.active_color import read_active_color
from pyrallel_consumer.config import ConfigError, ConsumerConfig
from pyrallel_consumer.record import Ordering
from pyrallel_tools.bluegreen.consume_app import ConsumeApp, Faults, RunLimits, parse_workload
from pyrallel_tools.bluegreen.drain import DrainError, DrainResult, read_pending
from pyrallel_tools.bluegreen.load_producer import LoadPlan, LoadProducer, LoadSettings
from pyrallel_tools.bluegreen.settings_routes import describe_validation_error
from pyrallel_tools.bluegreen.validation.from_logs import validate_files
from pyrallel_tools.kafka_pairs import parse_kafka_pairs

log = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

_BOOTSTRAP = click.option("--bootstrap-servers", envvar="PYRALLEL_BOOTSTRAP_SERVERS", required=True,
                          help="Kafka bootstrap address (env PYRALLEL_BOOTSTRAP_SERVERS).")
_KAFKA = click.option("--kafka", "kafka", multiple=True, metavar="KEY=VALUE",
                      help="Extra librdkafka property (repeatable).")


# ---- shared plumbing -------------------------------------------------------------------------------------


def _config_file_option(tables: dict[str, str] | None = None) -> Callable[[F], F]:
    """``--config FILE``: its keys become option defaults (below the command line and env vars).

    ``tables`` maps a nested table to the prefix of its options, e.g. ``{"faults": "fault_"}``.
    """

    def load(ctx: click.Context, param: click.Parameter, path: Path | None) -> None:
        if path is None:
            return
        try:
            data = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
        except (OSError, ValueError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
            raise click.BadParameter(f"cannot read {path}: {exc}", ctx, param) from None
        if not isinstance(data, dict):
            raise click.BadParameter(f"{path} must hold an object/table of settings", ctx, param)
        names = {p.name for p in ctx.command.params if p.name and p.name != param.name}
        defaults: dict[str, Any] = {}
        for key, value in data.items():
            prefix = (tables or {}).get(key)
            items = value.items() if prefix is not None and isinstance(value, dict) else [(key, value)]
            for sub, sub_value in items:
                name = (prefix or "") + str(sub).replace("-", "_")
                if name not in names:
                    raise click.BadParameter(f"unknown setting {sub!r} in {path}", ctx, param)
                if isinstance(sub_value, dict):  # e.g. kafka = {"max.poll.interval.ms": "6000"}
                    sub_value = [f"{k}={v}" for k, v in sub_value.items()]
                defaults[name] = sub_value
        ctx.default_map = {**(ctx.default_map or {}), **defaults}

    return click.option(
        "--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), is_eager=True,
        expose_value=False, callback=load, help="JSON or TOML file of option values (keys are option names).",
    )


def _kafka_pairs(values: tuple[str, ...]) -> dict[str, str]:
    try:
        return parse_kafka_pairs(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--kafka") from exc


def _model(cls: type[M], hint: str, **values: Any) -> M:
    try:
        return cls(**values)
    except ValidationError as exc:
        raise click.BadParameter(describe_validation_error(exc), param_hint=hint) from None


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main(stop)``; SIGTERM/SIGINT set ``stop`` so the command ends cleanly (drained, flushed)."""

    async def runner() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    return asyncio.run(runner())


def _announce(**urls: str | None) -> None:
    """Print ``name=url`` lines at once, for scripts that started the command with port 0."""
    for name, url in urls.items():
        if url:
            click.echo(f"{name.replace('_', '.')}={url}")
    sys.stdout.flush()


# ---- produce ---------------------------------------------------------------------------------------------


@click.command()
@_config_file_option()
@_BOOTSTRAP
@click.option("--topic", required=True)
@click.option("--rate", type=float, envvar="PYRALLEL_LOAD_RATE", default=100.0, show_default=True,
              help="Records per second (env PYRALLEL_LOAD_RATE; PUT /config changes it while running).")
@click.option("--size", type=int, envvar="PYRALLEL_LOAD_SIZE", default=256, show_default=True,
              help="Bytes per value (env PYRALLEL_LOAD_SIZE; PUT /config changes it while running).")
@click.option("--keys", type=click.IntRange(1, 10_000_000), default=100, show_default=True,
              help="Number of distinct keys.")
@click.option("--count", type=click.IntRange(1), default=None, help="Stop after this many sends.")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSONL log of the acknowledged sends (must not exist or be empty).")
@click.option("--seed", type=int, default=None, help="Seed of keys and payloads (reproducible runs).")
@click.option("--control-port", type=click.IntRange(0, 65535), default=None,
              help="Port of the GET/PUT /config server on 127.0.0.1 (0 = any free port).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Port of the Prometheus /metrics server on 127.0.0.1 (0 = any free port).")
@_KAFKA
def produce(bootstrap_servers: str, topic: str, rate: float, size: int, keys: int, count: int | None,
            duration: float | None, log_path: Path, seed: int | None, control_port: int | None,
            metrics_port: int | None, kafka: tuple[str, ...]) -> None:
    """Produce numbered JSON records at a fixed rate over N keys; log every acknowledged send."""
    if count is None and duration is None:
        raise click.UsageError("give --count, --duration or both: a load run must end by itself")
    if log_path.exists() and log_path.stat().st_size:
        raise click.BadParameter(f"{log_path} exists and is not empty; its seqs would collide with this run's",
                                 param_hint="--log")
    settings = _model(LoadSettings, "--rate/--size", rate=rate, size=size)
    plan = LoadPlan(bootstrap_servers, topic, log_path, keys, count, duration, seed,
                    tuple(_kafka_pairs(kafka).items()), control_port, metrics_port)
    producer = LoadProducer(plan, settings)
    try:
        summary = _run_until_signal(lambda stop: producer.run(
            stop, lambda p: _announce(control_url=p.control_url, metrics_url=p.metrics_url)))
    except OSError as exc:  # a port in use, an unwritable log
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(summary.to_dict()))


# ---- consume ---------------------------------------------------------------------------------------------


@click.command()
@_config_file_option({"faults": "fault_"})
@_BOOTSTRAP
@click.option("--topic", required=True)
@click.option("--group", required=True, help="Consumer group id (both colors use the same one).")
@click.option("--color", default=None, help="Blue/green color label, e.g. blue.")
@click.option("--instance-id", default=None, help="Instance name in logs and status (default host-pid).")
@click.option("--engine", type=click.Choice(["async", "process"]), default="async", show_default=True)
@click.option("--ordering", type=click.Choice([o.value for o in Ordering]), default="key", show_default=True)
@click.option("--workload", default="noop", show_default=True, help="noop, sleep:<duration> or cpu:<duration>.")
@click.option("--max-in-flight", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--max-retries", type=click.IntRange(0), default=3, show_default=True)
@click.option("--commit-interval-ms", type=click.IntRange(10), default=1000, show_default=True)
@click.option("--pause-mode", type=click.Choice(["release", "hold"]), default="release", show_default=True)
@click.option("--start-paused", is_flag=True, help="Come up PAUSED (the inactive color).")
@click.option("--deployment", default=None,
              help="Blue/green deployment name: the active-color record decides whether to come up PAUSED.")
@click.option("--on-exhausted", type=click.Choice(["skip", "keep"]), default="skip", show_default=True,
              help="A record that failed every attempt: log it and commit past it, or keep it uncommitted.")
@click.option("--group-instance-id", default=None, help="Static membership id (see docs/bluegreen-tools.md).")
@click.option("--control-port", type=click.IntRange(0, 65535), envvar="PYRALLEL_CONTROL_PORT", default=None,
              help="Port of the lifecycle/faults HTTP server (0 = any free port).")
@click.option("--control-host", default="127.0.0.1", show_default=True)
@click.option("--control-token", envvar="PYRALLEL_CONTROL_TOKEN", default=None,
              help="Bearer token the control server requires (prefer env PYRALLEL_CONTROL_TOKEN).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSONL log of every handled record (appended).")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None, help="Stop after seconds.")
@click.option("--max-records", type=click.IntRange(1), default=None, help="Stop after this many records.")
@click.option("--idle-timeout", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds without a record while ACTIVE.")
@click.option("--until-signal", is_flag=True, help="Run without limits until SIGTERM/SIGINT.")
@click.option("--output-topic", default=None,
              help="Exactly-once: every record yields one output (its key and value) on this topic, committed with "
                   "its offset in one transaction (processing_guarantee=exactly_once).")
@click.option("--fault-delay-ms", type=float, envvar="PYRALLEL_FAULT_DELAY_MS", default=0.0,
              help="Extra processing time per attempt.")
@click.option("--fault-failure-rate", type=float, envvar="PYRALLEL_FAULT_FAILURE_RATE", default=0.0,
              help="Probability (0..1) that an attempt raises.")
@click.option("--fault-fail-every", type=click.IntRange(0), default=0,
              help="Every attempt of a record whose seq is a multiple of N raises (0 = off): a known set of "
                   "records that end in the exhaustion policy (skip, keep or the DLQ).")
@click.option("--fault-commit-delay-ms", type=float, envvar="PYRALLEL_FAULT_COMMIT_DELAY_MS", default=0.0,
              help="Delay before every commit.")
@click.option("--fault-stall-ms", type=float, envvar="PYRALLEL_FAULT_STALL_MS", default=0.0,
              help="Stall the poll loop once for this long (beyond max.poll.interval.ms: eviction).")
@click.option("--fault-stall-after-s", type=float, envvar="PYRALLEL_FAULT_STALL_AFTER_S", default=0.0,
              help="When the stall happens, in seconds after the start.")
@_KAFKA
def consume(bootstrap_servers: str, topic: str, group: str, color: str | None, instance_id: str | None,
            engine: str, ordering: str, workload: str, max_in_flight: int, max_retries: int,
            commit_interval_ms: int, pause_mode: str, start_paused: bool, deployment: str | None,
            on_exhausted: str, group_instance_id: str | None,
            control_port: int | None, control_host: str, control_token: str | None, log_path: Path | None,
            duration: float | None, max_records: int | None, idle_timeout: float | None, until_signal: bool,
            output_topic: str | None, fault_delay_ms: float, fault_failure_rate: float, fault_fail_every: int,
            fault_commit_delay_ms: float,
            fault_stall_ms: float, fault_stall_after_s: float, kafka: tuple[str, ...]) -> None:
    """Consume with the library, log every handled record for the validator, inject faults on demand."""
    if duration is None and max_records is None and idle_timeout is None and not until_signal:
        raise click.UsageError("give --duration, --max-records or --idle-timeout (or --until-signal to run until "
                               "SIGTERM): a validation consumer must end by itself")
    try:
        parse_workload(workload)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workload") from None
    generation = 0
    if deployment is not None:
        start_paused, generation = _desired_state(bootstrap_servers, deployment, color, start_paused)
    faults = _model(Faults, "--fault-*", delay_ms=fault_delay_ms, failure_rate=fault_failure_rate,
                    fail_every=fault_fail_every, commit_delay_ms=fault_commit_delay_ms, stall_ms=fault_stall_ms,
                    stall_after_s=fault_stall_after_s)
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers, "group_id": group, "topics": [topic], "color": color,
        "engine": engine, "ordering": ordering, "max_in_flight": max_in_flight, "max_retries": max_retries,
        "commit_interval_ms": commit_interval_ms, "pause_mode": pause_mode, "start_paused": start_paused,
        "group_instance_id": group_instance_id, "control_port": control_port, "control_host": control_host,
        "control_token": control_token, "kafka": _kafka_pairs(kafka),
    }
    if instance_id is not None:
        values["instance_id"] = instance_id
    if output_topic is not None:
        values["processing_guarantee"] = "exactly_once"
    try:
        config = ConsumerConfig(**values)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    app = ConsumeApp(config, workload, faults, log_path, RunLimits(duration, max_records, idle_timeout),
                     keep_failed=on_exhausted == "keep", generation=generation, output_topic=output_topic)

    def ready(running: ConsumeApp) -> None:
        server = running.consumer.control_server if running.consumer is not None else None
        _announce(control_url=server.url if server is not None else None)

    try:
        summary = _run_until_signal(lambda stop: app.run(stop, ready))
    except (OSError, RuntimeError) as exc:  # a port in use, a missing topic, an engine that cannot start
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    click.echo(json.dumps(summary))
    if summary["error"]:
        raise click.ClickException(f"the consumer stopped with an error: {summary['error']}")


def _desired_state(bootstrap: str, deployment: str, color: str | None, default: bool) -> tuple[bool, int]:
    """Read the active-color record before joining the group: (start paused?, its generation).

    A color that is not the active one comes up PAUSED, and the generation makes a restarted consumer
    refuse commands of a controller that was fenced before the restart.
    """
    try:
        record = read_active_color(bootstrap, deployment)
    except KafkaException as exc:
        raise click.ClickException(f"cannot read the active color of {deployment}: {exc}") from None
    if record is None:
        return default, 0
    log.info("Active color of %s is %s (generation %d); this is %s", deployment, record.color, record.generation,
             color)
    return record.color != color, record.generation


# ---- validate --------------------------------------------------------------------------------------------


def _parse_sinks(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[Path, str]]:
    sinks = []
    for item in values:
        path, sep, color = item.rpartition(":")
        if not sep or not path or not color:
            raise click.BadParameter(f"{item!r} is not FILE:COLOR", ctx, param)
        if not Path(path).is_file():
            raise click.BadParameter(f"{path} is not a file", ctx, param)
        sinks.append((Path(path), color))
    return sinks


_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.option("--producer-log", "producer_logs", type=_EXISTING_FILE, multiple=True, required=True,
              help="The load producer's log of acked sends (repeatable).")
@click.option("--consumer-log", "consumer_logs", type=_EXISTING_FILE, multiple=True,
              help="A consume app's log (repeatable, one per instance).")
@click.option("--sink", "sinks", multiple=True, metavar="FILE:COLOR", callback=_parse_sinks,
              help="A Kafka Connect FileStreamSink file and its color (repeatable).")
@click.option("--bootstrap-servers", envvar="PYRALLEL_BOOTSTRAP_SERVERS", default=None,
              help="With --topic and --group: drain phase against this broker (env PYRALLEL_BOOTSTRAP_SERVERS).")
@click.option("--topic", default=None, help="Topic of the run, for the drain phase.")
@click.option("--group", default=None, help="Consumer group of the run, for the drain phase.")
@click.option("--drain-timeout", type=click.FloatRange(0, min_open=True), default=60.0, show_default=True)
@click.option("--activity-gap-s", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Events of one color closer than this belong to one activity interval.")
@click.option("--dual-active-gap-s", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Dual-active windows shorter than this are not reported.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full JSON report here.")
def validate(producer_logs: tuple[Path, ...], consumer_logs: tuple[Path, ...], sinks: list[tuple[Path, str]],
             bootstrap_servers: str | None, topic: str | None, group: str | None, drain_timeout: float,
             activity_gap_s: float, dual_active_gap_s: float, out: Path | None) -> None:
    """Judge a run: lost, pending, duplicates, order, dual-active windows. Exit 1 on loss or dual activity."""
    if not consumer_logs and not sinks:
        raise click.UsageError("give at least one --consumer-log or --sink")
    drain: DrainResult | None = None
    if topic is not None or group is not None:
        if not (topic and group and bootstrap_servers):
            raise click.UsageError("the drain phase needs --bootstrap-servers, --topic and --group together")
        try:
            drain = read_pending(bootstrap_servers, topic, group, drain_timeout)
        except DrainError as exc:
            raise click.ClickException(f"drain phase: {exc}") from None
    else:
        click.echo("No drain phase (no --topic/--group): records still in the topic count as lost.", err=True)
    report = validate_files(producer_logs, consumer_logs, sinks, drain.pending_seqs if drain else (),
                            dual_active_gap_s, activity_gap_s=activity_gap_s)
    result = report.to_dict()
    result["drain"] = drain.to_dict() if drain is not None else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(report.to_table())
    if drain is not None:
        click.echo(f"drain: {drain.records} record(s) behind the committed offsets of {group}")
    if not report.ok:
        sys.exit(1)
