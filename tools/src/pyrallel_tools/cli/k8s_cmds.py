"""``pyrallel k8s up|kubeconfig|down``: a real Kubernetes API server (etcd + kube-apiserver, no kubelet) on
127.0.0.1, to try the Helm chart and the Kubernetes controller locally the way the tests do."""

from __future__ import annotations

from pathlib import Path

import click

from pyrallel_tools.localk8s.apiserver import LocalApiServer
from pyrallel_tools.localkafka.errors import LocalKafkaError

_RUN_DIR = click.option(
    "--run-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".run/k8s"), show_default=True,
    help="Where etcd's data, the certificates, the logs and the admin kubeconfig live.",
)


@click.group()
def k8s() -> None:
    """Run a local Kubernetes API server (etcd + kube-apiserver, no kubelet) on 127.0.0.1."""


@k8s.command()
@_RUN_DIR
@click.option("--crds/--no-crds", default=True, show_default=True,
              help="Install the CRDs of KEDA, Argo Rollouts, prometheus-operator and Strimzi.")
def up(run_dir: Path, crds: bool) -> None:
    """Start etcd and kube-apiserver (built with Go the first time: minutes) and print the kubeconfig's path."""
    try:
        server = LocalApiServer(run_dir).up()
        if crds:
            from pyrallel_tools.localk8s.crds import crd_documents

            server.install_crds(crd_documents())
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"server={server.url}")
    click.echo(f"kubeconfig={server.kubeconfig}")
    click.echo(f"try: helm --kubeconfig {server.kubeconfig} install demo deploy/helm/pyrallel-consumer ...", err=True)


@k8s.command()
@_RUN_DIR
def kubeconfig(run_dir: Path) -> None:
    """Print the admin kubeconfig's path (for KUBECONFIG=...)."""
    server = LocalApiServer(run_dir)
    try:
        server.url  # noqa: B018 - raises when nothing runs there
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(server.kubeconfig)


@k8s.command()
@_RUN_DIR
def down(run_dir: Path) -> None:
    """Stop kube-apiserver and etcd and remove their data."""
    try:
        LocalApiServer(run_dir).down()
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"stopped; {run_dir} removed")
