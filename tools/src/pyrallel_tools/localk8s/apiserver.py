"""A real Kubernetes API server on 127.0.0.1 for the tests: etcd + kube-apiserver, the way envtest runs them.

What it is good for: everything that talks to the API server - server-side apply of the Helm chart's objects
against the real OpenAPI schemas (a schema error fails the apply), custom resources with their validation and
status subresource, Leases with optimistic concurrency, watches. What it is not: a cluster. There is no kubelet,
scheduler or controller-manager, so a Pod object never runs (a test creates Pods and patches their status to
stand for local processes), a Deployment never gets a ReplicaSet, and ``helm install --wait`` would wait forever.

Authentication is one static bearer token in the ``system:masters`` group (``tokens.csv``), authorization RBAC,
TLS with the certificate kube-apiserver generates for itself in ``certs/`` (it is its own CA). ``up`` writes an
admin ``kubeconfig`` for Helm, lightkube and kubectl, and ``state.json`` so another process can stop what one
started (``pyrallel k8s down``).

Called on the caller's thread by the ``k8s_api`` pytest fixture and the ``pyrallel k8s`` commands; every wait is
bounded.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from lightkube import Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from pyrallel_tools.localk8s.binaries import ensure_k8s
from pyrallel_tools.localkafka import processes
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.ports import free_port

START_TIMEOUT_S = 90.0
CRD_TIMEOUT_S = 60.0
FIELD_MANAGER = "pyrallel-tools"
ADMIN_USER = "pyrallel-admin"
_STATE = "state.json"
_OWN_DIRS = ("etcd", "certs")
_OWN_FILES = ("kubeconfig", "tokens.csv", "sa.key", "sa.pub", "etcd.log", "kube-apiserver.log")
"""What ``up`` creates in the run directory: all that ``down`` removes (never the folder's other contents)."""


@dataclass(slots=True)
class ApiServerState:
    """Ports and PIDs of one local API server, in ``<run-dir>/state.json``."""

    etcd_port: int
    etcd_peer_port: int
    api_port: int
    token: str
    etcd_pid: int = 0
    api_pid: int = 0


class LocalApiServer:
    """etcd and kube-apiserver of one run directory. ``up()`` starts both (or returns at once when they already
    run there), ``down()`` stops both and removes the data."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    # ---- what clients need ------------------------------------------------------------------------------

    @property
    def state(self) -> ApiServerState | None:
        path = self.run_dir / _STATE
        if not path.exists():
            return None
        try:
            return ApiServerState(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise LocalKafkaError(f"{path} is not a state file of `pyrallel k8s up`: {exc}") from exc

    def _require_state(self) -> ApiServerState:
        state = self.state
        if state is None:
            raise LocalKafkaError(f"No local API server in {self.run_dir}: run `pyrallel k8s up` first")
        return state

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._require_state().api_port}"

    @property
    def token(self) -> str:
        return self._require_state().token

    @property
    def ca_file(self) -> Path:
        """The API server's self-signed serving certificate, which is also the CA to trust."""
        return self.run_dir / "certs" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    def client(self, namespace: str = "default") -> Client:
        """A lightkube client as the admin user; ``field_manager`` is ours so server-side applies are attributed."""
        return Client(KubeConfig.from_file(str(self.kubeconfig)), namespace=namespace, field_manager=FIELD_MANAGER)

    # ---- lifecycle --------------------------------------------------------------------------------------

    def up(self) -> LocalApiServer:
        """Start etcd and kube-apiserver (building them the first time) and wait for ``/readyz``."""
        state = self.state
        if state is not None and self._running(state):
            return self
        if state is not None:
            self.down()
        binaries = ensure_k8s()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        used: set[int] = set()
        for _ in range(3):
            used.add(free_port(frozenset(used)))
        etcd_port, peer_port, api_port = sorted(used)
        state = ApiServerState(etcd_port, peer_port, api_port, secrets.token_hex(16))
        self._write_state(state)
        self._prepare_credentials(state)
        try:
            self._start_etcd(binaries.etcd, state)
            self._start_api(binaries.kube_apiserver, state)
        except LocalKafkaError:
            self.down()
            raise
        self._write_kubeconfig(state)
        return self

    def down(self) -> None:
        """Stop kube-apiserver, then etcd, and remove what ``up`` wrote into the run directory. Idempotent."""
        state = self.state
        if state is None:  # not a run directory of ours (or already down): remove nothing
            return
        processes.terminate(state.api_pid, "kube-apiserver")
        processes.terminate(state.etcd_pid, "etcd")
        for name in _OWN_DIRS:
            shutil.rmtree(self.run_dir / name, ignore_errors=True)
        for name in _OWN_FILES:
            (self.run_dir / name).unlink(missing_ok=True)
        (self.run_dir / _STATE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only when nothing else was left in it
            self.run_dir.rmdir()

    def _running(self, state: ApiServerState) -> bool:
        return processes.pid_alive(state.api_pid, "kube-apiserver") and processes.pid_alive(state.etcd_pid, "etcd")

    def _write_state(self, state: ApiServerState) -> None:
        (self.run_dir / _STATE).write_text(json.dumps(asdict(state), indent=2) + "\n")

    def _prepare_credentials(self, state: ApiServerState) -> None:
        """The static admin token and the key pair service-account tokens are signed with (``openssl``)."""
        (self.run_dir / "certs").mkdir(exist_ok=True)
        (self.run_dir / "tokens.csv").write_text(f'{state.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        key, pub = self.run_dir / "sa.key", self.run_dir / "sa.pub"
        _openssl(["genrsa", "-out", str(key), "2048"])
        _openssl(["rsa", "-in", str(key), "-pubout", "-out", str(pub)])

    def _start_etcd(self, etcd: Path, state: ApiServerState) -> None:
        client_url = f"http://127.0.0.1:{state.etcd_port}"
        cmd = [
            str(etcd), "--name", "pyrallel", "--data-dir", str(self.run_dir / "etcd"),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", f"http://127.0.0.1:{state.etcd_peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{state.etcd_peer_port}",
            "--initial-cluster", f"pyrallel=http://127.0.0.1:{state.etcd_peer_port}",
            # Test data: losing it on a power cut costs nothing, and fsync on every write slows every apply.
            "--unsafe-no-fsync=true", "--log-level", "warn",
        ]
        log_file = self.run_dir / "etcd.log"
        proc = processes.spawn(cmd, self.run_dir, log_file)
        state.etcd_pid = proc.pid
        self._write_state(state)
        processes.wait_until(lambda: processes.http_ok(f"{client_url}/health"), proc, "etcd", log_file, str(etcd),
                             START_TIMEOUT_S)

    def _start_api(self, apiserver: Path, state: ApiServerState) -> None:
        """Flags as envtest passes them, on loopback, with RBAC and the admin token; no admission plugin that
        needs a controller-manager (``ServiceAccount`` would wait for token controllers that never run)."""
        cmd = [
            str(apiserver),
            f"--etcd-servers=http://127.0.0.1:{state.etcd_port}",
            f"--cert-dir={self.run_dir / 'certs'}",
            f"--secure-port={state.api_port}", "--bind-address=127.0.0.1",
            "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--authorization-mode=RBAC",
            f"--token-auth-file={self.run_dir / 'tokens.csv'}",
            f"--service-account-issuer=https://127.0.0.1:{state.api_port}/",
            f"--service-account-key-file={self.run_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.run_dir / 'sa.key'}",
        ]
        log_file = self.run_dir / "kube-apiserver.log"
        proc = processes.spawn(cmd, self.run_dir, log_file)
        state.api_pid = proc.pid
        self._write_state(state)
        processes.wait_until(lambda: self._ready(state), proc, "kube-apiserver", log_file, str(apiserver),
                             START_TIMEOUT_S)

    def _ready(self, state: ApiServerState) -> bool:
        if not self.ca_file.exists():
            return False
        return processes.http_ok(f"https://127.0.0.1:{state.api_port}/readyz", state.token, self.ca_file)

    def _write_kubeconfig(self, state: ApiServerState) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "pyrallel",
            "clusters": [{"name": "pyrallel", "cluster": {
                "server": f"https://127.0.0.1:{state.api_port}", "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": ADMIN_USER, "user": {"token": state.token}}],
            "contexts": [{"name": "pyrallel", "context": {"cluster": "pyrallel", "user": ADMIN_USER}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    # ---- objects ----------------------------------------------------------------------------------------

    def install_crds(self, documents: Iterable[dict[str, Any]], timeout_s: float = CRD_TIMEOUT_S) -> list[str]:
        """Apply CustomResourceDefinitions server-side and wait until each is ``Established`` (see
        :func:`install_crds`). Returns their names."""
        client = self.client()
        try:
            return install_crds(client, documents, timeout_s)
        finally:
            client.close()


def install_crds(client: Client, documents: Iterable[dict[str, Any]], timeout_s: float = CRD_TIMEOUT_S) -> list[str]:
    """Apply CustomResourceDefinitions server-side through ``client`` (any API server) and wait until each is
    ``Established`` (until then, objects of its kind are refused). Returns their names."""
    names: list[str] = []
    for document in documents:
        if document.get("kind") != "CustomResourceDefinition":
            raise LocalKafkaError(f"not a CustomResourceDefinition: {document.get('kind')!r}")
        crd = from_dict(document)
        try:
            client.apply(crd, force=True)
        except ApiError as exc:
            raise LocalKafkaError(f"CRD {document['metadata']['name']} refused: {exc.status.message}") from exc
        names.append(str(document["metadata"]["name"]))
    deadline = time.monotonic() + timeout_s
    for name in names:
        while not _established(client.get(CustomResourceDefinition, name)):
            if time.monotonic() > deadline:
                raise LocalKafkaError(f"CRD {name} did not become established within {timeout_s:g}s")
            time.sleep(0.1)
    return names


def _established(crd: CustomResourceDefinition) -> bool:
    conditions = crd.status.conditions if crd.status and crd.status.conditions else []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def _openssl(args: list[str]) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise LocalKafkaError("openssl was not found: the local API server needs it for its service-account keys")
    proc = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise LocalKafkaError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")

