"""``pyrallel kafka up|status|down|logs``: the local real broker for demos, tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pyrallel_tools.localkafka.cluster import DEFAULT_CONNECT_PORT, DEFAULT_PORT, LocalKafka
from pyrallel_tools.localkafka.errors import LocalKafkaError

_RUN_DIR = click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where state, data and logs live (default: $PYRALLEL_KAFKA_RUN_DIR or ./.run/kafka).",
)


@click.group()
def kafka() -> None:
    """Run a local Apache Kafka 4.1.1 (KRaft) on 127.0.0.1, resolved from Maven Central."""


@kafka.command()
@_RUN_DIR
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="Broker port; a free one is picked when it is taken.")
@click.option("--connect", "with_connect", is_flag=True, help="Also start a Kafka Connect worker.")
@click.option("--connect-port", type=click.IntRange(1, 65535), default=DEFAULT_CONNECT_PORT,
              show_default=True, help="Connect REST port; a free one is picked when it is taken.")
def up(run_dir: Path | None, port: int, with_connect: bool, connect_port: int) -> None:
    """Start the broker (and Connect) and wait until it answers; print the bootstrap address."""
    try:
        state, notes = LocalKafka(run_dir).up(port=port, with_connect=with_connect,
                                              connect_port=connect_port)
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    for note in notes:
        click.echo(note, err=True)
    click.echo(f"bootstrap.servers={state.bootstrap}")
    if state.connect_url:
        click.echo(f"connect.url={state.connect_url}")


@kafka.command()
@_RUN_DIR
def status(run_dir: Path | None) -> None:
    """Print the state of the local broker and Connect worker as JSON (exit 1 when not running)."""
    try:
        info = LocalKafka(run_dir).status()
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(info, indent=2))
    if not info["running"]:
        raise SystemExit(1)


@kafka.command()
@_RUN_DIR
@click.option("--connect", "connect_url", is_flag=True, help="Print the Connect REST URL instead.")
def address(run_dir: Path | None, connect_url: bool) -> None:
    """Print the bootstrap address (or Connect URL) of the running local cluster, for scripts."""
    try:
        state = LocalKafka(run_dir).state()
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    if state is None:
        raise click.ClickException("The local Kafka is not running; start it with 'pyrallel kafka up'.")
    value = state.connect_url if connect_url else state.bootstrap
    if not value:
        raise click.ClickException("No Connect worker runs; start it with 'pyrallel kafka up --connect'.")
    click.echo(value)


@kafka.command()
@_RUN_DIR
@click.option("--keep-data", is_flag=True, help="Keep the run directory (logs and data).")
def down(run_dir: Path | None, keep_data: bool) -> None:
    """Stop Connect and the broker by PID and remove the run directory."""
    try:
        notes = LocalKafka(run_dir).down(keep_data=keep_data)
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    for note in notes or ["Nothing was running."]:
        click.echo(note)


@kafka.command()
@_RUN_DIR
@click.option("--connect", "connect_log", is_flag=True, help="Show the Connect worker's log instead.")
@click.option("-n", "--lines", type=click.IntRange(1), default=50, show_default=True)
def logs(run_dir: Path | None, connect_log: bool, lines: int) -> None:
    """Print the last lines of the broker's (or Connect's) log."""
    path = LocalKafka(run_dir).log_path("connect" if connect_log else "server")
    if not path.exists():
        raise click.ClickException(f"No log at {path}; is the local Kafka running?")
    for line in path.read_text(errors="replace").splitlines()[-lines:]:
        click.echo(line)
