"""``pyrallel registry up|address|down``: a real schema registry (Apicurio Registry, Confluent-compatible API) on
127.0.0.1, to try typed records (Avro, JSON Schema) locally the way the tests do."""

from __future__ import annotations

from pathlib import Path

import click

from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localregistry.server import LocalRegistry

_RUN_DIR = click.option(
    "--run-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".run/registry"), show_default=True,
    help="Where the registry's state, log and temporary files live.",
)


@click.group()
def registry() -> None:
    """Run a local schema registry (Apicurio Registry, Confluent-compatible API, in memory) on 127.0.0.1."""


@registry.command()
@_RUN_DIR
def up(run_dir: Path) -> None:
    """Start the registry (resolved from Maven Central the first time) and print its Confluent-compatible URL."""
    try:
        url = LocalRegistry(run_dir).up().url
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"schema.registry.url={url}")


@registry.command()
@_RUN_DIR
def address(run_dir: Path) -> None:
    """Print the Confluent-compatible base URL (for SchemaRegistryClient({"url": ...}))."""
    try:
        click.echo(LocalRegistry(run_dir).url)
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc


@registry.command()
@_RUN_DIR
def down(run_dir: Path) -> None:
    """Stop the registry and remove what `up` wrote (its schemas were in memory only)."""
    try:
        LocalRegistry(run_dir).down()
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"stopped; {run_dir} removed")
