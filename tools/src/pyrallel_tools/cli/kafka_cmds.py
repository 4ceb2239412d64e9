"""``pyrallel kafka up|status|address|down|logs|stop-broker|start-broker``: the local real Kafka (one broker or a
replicated cluster of three) for demos, tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast, get_args

import click

from pyrallel_tools.localkafka.cluster import BROKER_COUNTS, DEFAULT_CONNECT_PORT, DEFAULT_PORT, LocalKafka
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.jars import COMPATIBILITY_VERSIONS, DEFAULT_KAFKA_VERSION, KAFKA_VERSION_ENV
from pyrallel_tools.localkafka.state import Security

_RUN_DIR = click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where state, data and logs live (default: $PYRALLEL_KAFKA_RUN_DIR or ./.run/kafka).",
)


@click.group()
def kafka() -> None:
    """Run a local Apache Kafka (KRaft, 1 or 3 brokers) on 127.0.0.1, resolved from Maven Central."""


@kafka.command()
@_RUN_DIR
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="First broker's port; a free one is picked when it is taken (the others take free ports).")
@click.option("--kafka-version", "version", envvar=KAFKA_VERSION_ENV, default=DEFAULT_KAFKA_VERSION,
              show_default=True,
              help=f"Apache Kafka 4.x release (tested: {', '.join(COMPATIBILITY_VERSIONS)}); jars cached per version.")
@click.option("--brokers", type=click.Choice([str(n) for n in BROKER_COUNTS]), default="1", show_default=True,
              help="1, or 3: a KRaft quorum of three nodes, topics RF 3 with min.insync.replicas=2.")
@click.option("--fault-proxy", is_flag=True,
              help="Also start Toxiproxy with one proxy per broker, advertised on a PROXIED listener.")
@click.option("--security", type=click.Choice(get_args(Security)), default="plaintext", show_default=True,
              help="sasl_ssl: also a SASL_SSL listener per broker (SCRAM-SHA-512 over TLS, a CA of its own and one "
                   "SCRAM user); the secure.* lines printed are the client's properties.")
@click.option("--connect", "with_connect", is_flag=True, help="Also start a Kafka Connect worker.")
@click.option("--connect-port", type=click.IntRange(1, 65535), default=DEFAULT_CONNECT_PORT,
              show_default=True, help="Connect REST port; a free one is picked when it is taken.")
def up(run_dir: Path | None, port: int, version: str, brokers: str, fault_proxy: bool, security: str,
       with_connect: bool, connect_port: int) -> None:
    """Start the brokers (and Connect, the proxy) and wait until they answer; print the addresses."""
    try:
        state, notes = LocalKafka(run_dir).up(port=port, with_connect=with_connect, connect_port=connect_port,
                                              version=version, brokers=int(brokers), fault_proxy=fault_proxy,
                                              security=cast(Security, security))
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    for note in notes:
        click.echo(note, err=True)
    click.echo(f"bootstrap.servers={state.bootstrap}")
    click.echo(f"kafka.version={state.version}")
    share_version = LocalKafka(run_dir).share_version()
    click.echo(f"share.groups={'enabled' if share_version else 'disabled'} (share.version={share_version})")
    for name, value in (("proxied.bootstrap.servers", state.proxied_bootstrap),
                        ("secure.bootstrap.servers", state.secure_bootstrap),
                        ("toxiproxy.url", state.toxiproxy_url), ("connect.url", state.connect_url)):
        if value:
            click.echo(f"{name}={value}")
    # The SECURE listener's client properties (the password of this throwaway cluster's one user included: it is
    # also in the run directory's state.json), each prefixed with "secure." like its bootstrap.
    for name, value in (state.secure_client_properties() or {}).items():
        click.echo(f"secure.{name}={value}")


@kafka.command()
@_RUN_DIR
def status(run_dir: Path | None) -> None:
    """Print the state of every broker, the fault proxy and Connect as JSON (exit 1 when none runs)."""
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
@click.option("--proxied", is_flag=True, help="Print the bootstrap through the fault proxy instead.")
@click.option("--secure", is_flag=True, help="Print the bootstrap of the SASL_SSL listeners instead.")
def address(run_dir: Path | None, connect_url: bool, proxied: bool, secure: bool) -> None:
    """Print the bootstrap address (or Connect URL, proxied or secure bootstrap) of the running local cluster."""
    if connect_url + proxied + secure > 1:
        raise click.UsageError("Give at most one of --connect, --proxied and --secure.")
    try:
        state = LocalKafka(run_dir).state()
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    if state is None:
        raise click.ClickException("The local Kafka is not running; start it with 'pyrallel kafka up'.")
    if connect_url and not state.connect_url:
        raise click.ClickException("No Connect worker runs; start it with 'pyrallel kafka up --connect'.")
    if proxied and not state.proxied_bootstrap:
        raise click.ClickException("No fault proxy runs; start the cluster with 'pyrallel kafka up --fault-proxy'.")
    if secure:
        if not state.secure_bootstrap:
            raise click.ClickException("No SASL_SSL listener runs; start the cluster with "
                                       "'pyrallel kafka up --security sasl_ssl'.")
        click.echo(state.secure_bootstrap)
        return
    click.echo(state.connect_url if connect_url else state.proxied_bootstrap if proxied else state.bootstrap)


@kafka.command()
@_RUN_DIR
@click.option("--keep-data", is_flag=True, help="Keep the run directory (logs and data).")
def down(run_dir: Path | None, keep_data: bool) -> None:
    """Stop Connect, every broker and the proxy by PID and remove the run directory."""
    try:
        notes = LocalKafka(run_dir).down(keep_data=keep_data)
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    for note in notes or ["Nothing was running."]:
        click.echo(note)


@kafka.command()
@_RUN_DIR
@click.option("--broker", "node_id", type=click.IntRange(1), default=1, show_default=True,
              help="Which broker's log.")
@click.option("--connect", "connect_log", is_flag=True, help="Show the Connect worker's log instead.")
@click.option("--toxiproxy", "proxy_log", is_flag=True, help="Show the fault proxy's log instead.")
@click.option("-n", "--lines", type=click.IntRange(1), default=50, show_default=True)
def logs(run_dir: Path | None, node_id: int, connect_log: bool, proxy_log: bool, lines: int) -> None:
    """Print the last lines of a broker's (or Connect's, or Toxiproxy's) log."""
    if connect_log and proxy_log:
        raise click.UsageError("Give at most one of --connect and --toxiproxy.")
    which = "connect" if connect_log else "toxiproxy" if proxy_log else "server"
    path = LocalKafka(run_dir).log_path(which, node_id)
    if not path.exists():
        raise click.ClickException(f"No log at {path}; is the local Kafka running?")
    for line in path.read_text(errors="replace").splitlines()[-lines:]:
        click.echo(line)


@kafka.command("stop-broker")
@_RUN_DIR
@click.argument("node_id", type=click.IntRange(1))
@click.option("--kill", is_flag=True, help="SIGKILL (a crash) instead of SIGTERM (a clean shutdown).")
def stop_broker(run_dir: Path | None, node_id: int, kill: bool) -> None:
    """Stop broker NODE_ID, keeping its data, to simulate an outage; 'start-broker' brings it back."""
    try:
        LocalKafka(run_dir).stop_broker(node_id, kill=kill)
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Broker {node_id} {'killed' if kill else 'stopped'}.")


@kafka.command("start-broker")
@_RUN_DIR
@click.argument("node_id", type=click.IntRange(1))
def start_broker(run_dir: Path | None, node_id: int) -> None:
    """Start broker NODE_ID again on its ports and data; returns once it answers."""
    try:
        LocalKafka(run_dir).start_broker(node_id)
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Broker {node_id} running.")
