"""What ``pyrallel kafka up`` leaves in ``<run-dir>/state.json`` for ``status``, ``stop-broker``, ``down`` and the
test fixtures of later processes: the version, each broker node's ports and PID, Connect's and Toxiproxy's."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pyrallel_tools.localkafka import security as tls
from pyrallel_tools.localkafka.errors import LocalKafkaError

Security = Literal["plaintext", "sasl_ssl"]


@dataclass(slots=True)
class NodeState:
    """One KRaft node (broker and controller in one process) with its own port, log dir and PID."""

    node_id: int
    port: int
    controller_port: int
    pid: int = 0
    proxy_port: int | None = None
    """Where Toxiproxy listens for this broker: the address the PROXIED listener advertises."""
    proxied_port: int | None = None
    """The broker's PROXIED listener: the proxy's upstream."""
    secure_port: int | None = None
    """The SASL_SSL listener (``--security sasl_ssl``)."""

    def directory(self, run_dir: Path) -> Path:
        return run_dir / f"broker-{self.node_id}"


@dataclass(slots=True)
class ClusterState:
    """The whole local cluster; ``bootstrap`` lists every broker so a client survives any one of them down."""

    version: str
    nodes: list[NodeState]
    security: Security = "plaintext"
    connect_url: str | None = None
    connect_pid: int | None = None
    toxiproxy_url: str | None = None
    toxiproxy_pid: int | None = None
    scram_user: str | None = None
    scram_password: str | None = None
    ca_file: str | None = None
    cluster_id: str | None = None
    """The KRaft cluster id the nodes were formatted with: how ``up`` knows the broker answering on a port is
    ours and not another one that took the port first."""

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def proxied_bootstrap(self) -> str | None:
        """Bootstrap through the fault proxy (``kafka up --fault-proxy``), or None."""
        if any(n.proxy_port is None for n in self.nodes):
            return None
        return ",".join(f"127.0.0.1:{n.proxy_port}" for n in self.nodes)

    @property
    def secure_bootstrap(self) -> str | None:
        """Bootstrap of the SASL_SSL listeners (``kafka up --security sasl_ssl``), or None."""
        if any(n.secure_port is None for n in self.nodes):
            return None
        return ",".join(f"127.0.0.1:{n.secure_port}" for n in self.nodes)

    def secure_client_properties(self) -> dict[str, str] | None:
        """What a librdkafka client sets besides ``bootstrap.servers=secure_bootstrap`` to use the SECURE listeners
        (SASL_SSL, SCRAM-SHA-512, the SCRAM user, the CA file), or None without ``--security sasl_ssl``."""
        if self.scram_user is None or self.scram_password is None or self.ca_file is None:
            return None
        return tls.client_properties(self.scram_user, self.scram_password, self.ca_file)

    def serves(self, bootstrap: str) -> bool:
        """Whether ``bootstrap`` names one of this cluster's brokers (on any listener)."""
        mine = {f"127.0.0.1:{port}" for n in self.nodes for port in (n.port, n.proxy_port, n.secure_port) if port}
        return bool(mine & set(bootstrap.split(",")))

    def node(self, node_id: int) -> NodeState:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        known = ", ".join(str(n.node_id) for n in self.nodes)
        raise LocalKafkaError(f"No broker {node_id} in this cluster (brokers: {known})")

    @classmethod
    def load(cls, run_dir: Path) -> ClusterState | None:
        path = run_dir / "state.json"
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            nodes = [NodeState(**n) for n in data.pop("nodes")]
            return cls(nodes=nodes, **data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise LocalKafkaError(
                f"{path} is unreadable ({exc!r}); run 'pyrallel kafka down --run-dir {run_dir}' (it stops what it "
                "can and removes the directory) and start again."
            ) from exc

    def save(self, run_dir: Path) -> None:
        (run_dir / "state.json").write_text(json.dumps(asdict(self), indent=2) + "\n")
