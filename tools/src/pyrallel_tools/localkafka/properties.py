"""The properties files of the local Kafka: one per broker node (KRaft, combined broker + controller) and one for
the Connect worker. Pure functions of the cluster's layout, called by
:class:`~pyrallel_tools.localkafka.cluster.LocalKafka` when it creates a run directory.

Listeners of a node (all on 127.0.0.1):

* ``PLAINTEXT`` - clients and the other brokers (``inter.broker.listener.name``).
* ``CONTROLLER`` - the KRaft quorum.
* ``PROXIED`` (``kafka up --fault-proxy``) - advertised as the Toxiproxy port that forwards to it, so a client
  bootstrapped through the proxy keeps talking through the proxy to every broker (Kafka answers metadata with the
  addresses of the listener the request came in on).
* ``SECURE`` (``kafka up --security sasl_ssl``) - SASL/SCRAM over TLS.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pyrallel_tools.localkafka.security import LISTENER as SECURE_LISTENER
from pyrallel_tools.localkafka.state import ClusterState, NodeState


def _write(path: Path, props: Mapping[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def replication_defaults(brokers: int) -> dict[str, str]:
    """Topic and internal-topic durability: RF 3 with ``min.insync.replicas=2`` on 3 brokers (what production runs),
    RF 1 on one broker."""
    rf = str(min(brokers, 3))
    isr = "2" if brokers >= 3 else "1"
    return {
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
    }


def share_group_bounds() -> dict[str, str]:
    """The broker-wide bounds of the share-group settings a group may choose (KIP-932), widened so tests can set a
    record lock of 1 s and a session of 6 s on their group (``share.record.lock.duration.ms``,
    ``share.session.timeout.ms``, set per group through the admin API); the defaults every other group gets stay
    Kafka's (30 s lock, 45 s session, 5 deliveries). Share groups themselves are on by default from Kafka 4.2: the
    storage format finalizes ``share.version`` (``LocalKafka`` reports its level)."""
    return {
        "group.share.min.record.lock.duration.ms": "1000",
        "group.share.min.session.timeout.ms": "6000",
        "group.share.min.heartbeat.interval.ms": "1000",
    }


def broker_properties(path: Path, state: ClusterState, node: NodeState, data_dir: Path,
                      extra: Mapping[str, str]) -> Path:
    """Write ``server.properties`` of ``node``; ``extra`` carries the SECURE listener's TLS and SASL settings."""
    listeners = {"PLAINTEXT": node.port, "CONTROLLER": node.controller_port}
    advertised = {"PLAINTEXT": node.port}
    protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT"}
    if node.proxied_port is not None and node.proxy_port is not None:
        listeners["PROXIED"], advertised["PROXIED"] = node.proxied_port, node.proxy_port
        protocols["PROXIED"] = "PLAINTEXT"
    if node.secure_port is not None:
        listeners[SECURE_LISTENER] = advertised[SECURE_LISTENER] = node.secure_port
        protocols[SECURE_LISTENER] = "SASL_SSL"
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in state.nodes)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items()),
        "advertised.listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in advertised.items()),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(f"{name}:{proto}" for name, proto in protocols.items()),
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        **replication_defaults(len(state.nodes)),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.num.partitions": "4",
        # Members joining an empty group within 100 ms share its first generation: blue/green strategy C's new color
        # joins at once (0 makes them race through several generations, the broker's 3000 makes them wait 3-6 s;
        # docs/decisions.md, "Strategy C pays for a change of group membership").
        "group.initial.rebalance.delay.ms": "100",
        **share_group_bounds(),
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
        **extra,
    }
    return _write(path, props)


def connect_properties(path: Path, bootstrap: str, rest_port: int) -> Path:
    """Write the distributed Connect worker's properties; its internal topics take the brokers' replication."""
    props = {
        "bootstrap.servers": bootstrap,
        "group.id": "pyrallel-connect",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
        "config.storage.topic": "_pyrallel-connect-configs",
        "config.storage.replication.factor": "-1",
        "offset.storage.topic": "_pyrallel-connect-offsets",
        "offset.storage.replication.factor": "-1",
        "offset.storage.partitions": "5",
        "status.storage.topic": "_pyrallel-connect-status",
        "status.storage.replication.factor": "-1",
        "status.storage.partitions": "1",
        "offset.flush.interval.ms": "1000",
        "listeners": f"http://127.0.0.1:{rest_port}",
        "rest.advertised.host.name": "127.0.0.1",
        "rest.advertised.port": str(rest_port),
        "plugin.discovery": "only_scan",
        "scheduled.rebalance.max.delay.ms": "0",
    }
    return _write(path, props)
