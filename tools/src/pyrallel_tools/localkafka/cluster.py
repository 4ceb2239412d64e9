"""Start, inspect and stop a real local Kafka (KRaft) on 127.0.0.1: one broker or three, an optional Connect
worker and an optional TCP fault proxy (Toxiproxy) in front of every broker.

Everything a run needs lives in one run directory: ``state.json`` (PIDs, ports, version), one ``broker-<id>``
directory per node (properties, data, ``server.log``), Connect's and Toxiproxy's files, so that ``status``,
``stop-broker``, ``start-broker`` and ``down`` work from any later process. Called by the ``pyrallel kafka`` CLI,
the Makefile (through the CLI) and the test fixtures, always on the caller's thread.

With three brokers every node is broker and controller in one process (a three-voter KRaft quorum, static
``controller.quorum.voters``), topics default to RF 3 with ``min.insync.replicas=2``: a single broker can be
stopped, killed or restarted while producers with ``acks=all`` keep being acknowledged.

With ``security="sasl_ssl"`` every node also has a SECURE listener (SASL/SCRAM-SHA-512 over TLS): the run directory
gets a CA and a broker certificate (``tls/``), the storage is formatted with one SCRAM user, and the state records
the user, its password and the CA file for clients (``ClusterState.secure_client_properties``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from pyrallel_tools.faults.toxiproxy import TOXIPROXY_BINARY, Toxiproxy, ToxiproxyClient
from pyrallel_tools.localkafka import processes
from pyrallel_tools.localkafka import security as tls
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.jars import check_version, connect_version, default_version, ensure_jars
from pyrallel_tools.localkafka.ports import free_port, pick_port
from pyrallel_tools.localkafka.processes import BROKER_MAIN, CONNECT_MAIN, STORAGE_TOOL
from pyrallel_tools.localkafka.properties import broker_properties, connect_properties
from pyrallel_tools.localkafka.state import ClusterState, NodeState, Security

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092
DEFAULT_CONNECT_PORT = 8083
BROKER_HEAP = "512m"
CONNECT_HEAP = "384m"
BROKER_COUNTS = (1, 3)
IN_SYNC_TIMEOUT_S = 120.0
SECURE_CHECK_TIMEOUT_S = 60.0
# The controller logs the finalized features once it loads the metadata, before the broker answers clients.
_FINALIZED_SHARE_VERSION = re.compile(r"finalizedFeatures=\{[^}]*\bshare\.version=(\d+)")


def default_run_dir() -> Path:
    """One run directory per working copy unless PYRALLEL_KAFKA_RUN_DIR says otherwise."""
    return Path(os.environ.get("PYRALLEL_KAFKA_RUN_DIR", ".run/kafka")).resolve()


def local_kafka_version(bootstrap: str) -> str:
    """The Kafka version behind ``bootstrap`` when it is this working copy's local cluster (the default run
    directory, as ``make demo``/``make bench`` start it), for the run and benchmark records; else ``unknown``."""
    with contextlib.suppress(LocalKafkaError):
        state = ClusterState.load(default_run_dir())
        if state is not None and state.serves(bootstrap):
            return state.version
    return "unknown"


def proxy_name(node_id: int) -> str:
    """The Toxiproxy proxy in front of broker ``node_id`` (what fault tests add toxics to)."""
    return f"broker-{node_id}"


def brokers_seen(bootstrap: str, timeout_s: float = 2.0, client: dict[str, str] | None = None) -> int:
    """How many brokers the cluster's metadata lists (0 when nobody answers): the readiness test, no fixed sleep.

    ``client`` adds properties (e.g. the SECURE listener's SASL and TLS settings) to the probe's configuration.
    """
    return cluster_seen(bootstrap, timeout_s, client)[1]


def cluster_seen(bootstrap: str, timeout_s: float = 2.0,
                 client: dict[str, str] | None = None) -> tuple[str | None, int]:
    """The cluster id and broker count of the metadata ``bootstrap`` answers with; ``(None, 0)`` when nobody does."""
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("pyrallel_tools.localkafka.probe")
    quiet.setLevel(logging.CRITICAL)
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet, **(client or {})}
    admin = AdminClient(conf)
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return None, 0
    return meta.cluster_id, len(meta.brokers)


def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    return brokers_seen(bootstrap, timeout_s) > 0


def _connect_plugins(url: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(f"{url}/connector-plugins", timeout=3) as resp:  # noqa: S310
            data = json.loads(resp.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return [str(item.get("class", "")) for item in data]


class LocalKafka:
    """A local KRaft cluster of one or three nodes (and optionally Connect and a fault proxy) owned by one run
    directory."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = (run_dir or default_run_dir()).resolve()

    def state(self) -> ClusterState | None:
        return ClusterState.load(self.run_dir)

    def _require_state(self) -> ClusterState:
        state = self.state()
        if state is None:
            raise LocalKafkaError(f"No local Kafka runs in {self.run_dir}; start it with 'pyrallel kafka up'.")
        return state

    def up(
        self,
        port: int = DEFAULT_PORT,
        with_connect: bool = False,
        connect_port: int = DEFAULT_CONNECT_PORT,
        version: str | None = None,
        brokers: int = 1,
        fault_proxy: bool = False,
        security: Security = "plaintext",
    ) -> tuple[ClusterState, list[str]]:
        """Start what is not running yet and return the state plus notes worth telling the user.

        ``port`` is the first broker's port (the others take free ports); a cluster already running in the run
        directory is reused when it has the asked version, broker count, proxy and security. Without ``version``
        the cluster runs ``default_version()`` ($PYRALLEL_KAFKA_VERSION, which the compatibility matrix sets).
        """
        version = check_version(version or default_version())
        if brokers not in BROKER_COUNTS:
            raise LocalKafkaError(f"--brokers must be 1 or 3, not {brokers}")
        notes: list[str] = []
        state = self.state()
        if state is not None:
            self._check_reusable(state, version, brokers, fault_proxy, security)
            notes.append(f"Kafka {state.version} already running with {len(state.nodes)} broker(s).")
        libs = ensure_jars(version)
        if state is None:
            state = self._create(libs, port, version, brokers, fault_proxy, security, notes)
        if with_connect:
            if state.connect_pid and processes.pid_alive(state.connect_pid, CONNECT_MAIN):
                notes.append(f"Connect worker already running (pid {state.connect_pid}).")
            else:
                self._start_connect(ensure_jars(connect_version(state.version)), state, connect_port, notes)
        state.save(self.run_dir)
        return state, notes

    def _check_reusable(self, state: ClusterState, version: str, brokers: int, fault_proxy: bool,
                        security: Security) -> None:
        alive = [n.node_id for n in state.nodes if processes.pid_alive(n.pid, BROKER_MAIN)]
        if not alive:
            raise LocalKafkaError(
                f"Stale run directory {self.run_dir}: none of its brokers is running any more. Run "
                "'pyrallel kafka down' to clean it up, then 'pyrallel kafka up' again."
            )
        stopped = [str(n.node_id) for n in state.nodes if n.node_id not in alive]
        if stopped:
            raise LocalKafkaError(
                f"Broker(s) {', '.join(stopped)} of {self.run_dir} are stopped; start them with "
                "'pyrallel kafka start-broker ID' or run 'pyrallel kafka down' first."
            )
        wanted = (version, brokers, fault_proxy, security)
        running = (state.version, len(state.nodes), state.proxied_bootstrap is not None, state.security)
        if wanted != running:
            raise LocalKafkaError(
                f"{self.run_dir} already runs Kafka {running[0]} with {running[1]} broker(s) (fault proxy: "
                f"{running[2]}, security: {running[3]}); run 'pyrallel kafka down' before starting another."
            )

    def _create(self, libs: Path, port: int, version: str, brokers: int, fault_proxy: bool,
                security: Security, notes: list[str]) -> ClusterState:
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise LocalKafkaError(
                f"Run directory {self.run_dir} holds files of an earlier run but no state; "
                "run 'pyrallel kafka down' to clean it up."
            )
        if security == "sasl_ssl":
            tls.require_openssl()  # before anything is written: a missing tool leaves no half-made run directory
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = ClusterState(version=version, nodes=self._plan_nodes(port, brokers, fault_proxy, security, notes),
                             security=security)
        secure_listener = self._prepare_security(state)
        scram = (tls.scram_format_argument(state.scram_user, state.scram_password)
                 if state.scram_user and state.scram_password else None)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        state.cluster_id = cluster_id
        for node in state.nodes:
            directory = node.directory(self.run_dir)
            directory.mkdir()
            props = broker_properties(directory / "server.properties", state, node, directory / "data",
                                      secure_listener)
            self._format(libs, directory, props, cluster_id, scram)
        try:
            if fault_proxy:
                self._start_proxy(state)
            state.save(self.run_dir)
            started = []
            for node in state.nodes:
                started.append(self._spawn_broker(libs, node))
                node.pid = started[-1].pid
                state.save(self.run_dir)
            for node, proc in zip(state.nodes, started, strict=True):
                self._wait_for_broker(state, node, proc)
            if state.security == "sasl_ssl":
                self._wait_for_secure_listener(state)
        except BaseException:
            self.down(keep_data=True)  # nothing half-started lives on; the logs stay for the error's reader
            raise
        return state

    def _plan_nodes(self, port: int, brokers: int, fault_proxy: bool, security: Security,
                    notes: list[str]) -> list[NodeState]:
        taken: set[int] = set()

        def take(preferred: int | None = None) -> int:
            if preferred is None:
                chosen = free_port(frozenset(taken))
            else:
                chosen, is_preferred = pick_port(preferred, frozenset(taken))
                if not is_preferred:
                    notes.append(f"Port {preferred} is taken; the broker uses port {chosen} instead.")
            taken.add(chosen)
            return chosen

        nodes = []
        for node_id in range(1, brokers + 1):
            node = NodeState(node_id=node_id, port=take(port if node_id == 1 else None), controller_port=take())
            if fault_proxy:
                node.proxy_port, node.proxied_port = take(), take()
            if security == "sasl_ssl":
                node.secure_port = take()
            nodes.append(node)
        return nodes

    def _prepare_security(self, state: ClusterState) -> dict[str, str]:
        """The SECURE listener's properties, the same on every node (none for plaintext); for sasl_ssl also makes
        the CA and the broker certificate in ``<run-dir>/tls`` and records the SCRAM user, its password and the CA
        file in ``state`` (the storage format adds the user)."""
        if state.security == "plaintext":
            return {}
        certificates = tls.make_certificates(self.run_dir / "tls")
        state.scram_user, state.scram_password = tls.SCRAM_USER, tls.new_password()
        state.ca_file = str(certificates.ca_file)
        return dict(tls.listener_properties(certificates.keystore_file))

    def _format(self, libs: Path, directory: Path, props: Path, cluster_id: str, scram: str | None) -> None:
        """Format the node's KRaft storage; ``scram`` (an ``--add-scram`` value) puts a SCRAM user into the
        bootstrap metadata, so it exists before any broker starts (every node gets the same)."""
        log_config = processes.log4j2_config(directory, "server")
        # One id in 64 starts with "-"; the "=" form keeps argparse from reading it as an option.
        args = ["format", f"--cluster-id={cluster_id}", f"--config={props}"]
        if scram is not None:
            args.append(f"--add-scram={scram}")
        fmt = subprocess.run(
            processes.java_cmd(libs, "256m", log_config, STORAGE_TOOL, *args),
            capture_output=True, text=True, check=False,
        )
        if fmt.returncode != 0:
            raise LocalKafkaError(
                f"Formatting the KRaft storage in {directory} failed (exit {fmt.returncode}):\n"
                f"{(fmt.stdout + fmt.stderr).strip()[-2000:]}"
            )

    def _spawn_broker(self, libs: Path, node: NodeState) -> subprocess.Popen[bytes]:
        directory = node.directory(self.run_dir)
        cmd = processes.java_cmd(libs, BROKER_HEAP, directory / "log4j2-server.properties", BROKER_MAIN,
                                 str(directory / "server.properties"))
        return processes.spawn(cmd, directory, directory / "server.stdout")

    def _wait_for_broker(self, state: ClusterState, node: NodeState, proc: subprocess.Popen[bytes]) -> None:
        """Until the node answers metadata of our cluster listing every broker (the quorum formed and all
        registered); ``proc`` is the node's process, whose exit ends the wait. The cluster id tells our broker from
        another one that took the port between our check that it was free and our broker's bind (that one would
        answer at once while ours exits with "Address already in use")."""
        address, everyone = f"127.0.0.1:{node.port}", len(state.nodes)

        def ready() -> bool:
            cluster_id, seen = cluster_seen(address)
            if cluster_id is not None and cluster_id != state.cluster_id:
                raise LocalKafkaError(f"Port {node.port} is served by another Kafka cluster ({cluster_id}), not the "
                                      f"one just formatted in {self.run_dir}: the port was taken after it was picked. "
                                      "Run `pyrallel kafka up` again.")
            return seen >= everyone

        processes.wait_until(ready, proc, f"broker {node.node_id}",
                             node.directory(self.run_dir) / "server.log", BROKER_MAIN)

    def _wait_for_secure_listener(self, state: ClusterState, timeout_s: float = SECURE_CHECK_TIMEOUT_S) -> None:
        """Until a client authenticated as the SCRAM user, verifying the broker against the CA, lists every broker
        through the SECURE listeners: ``up`` returns a cluster a secure client can use, or says why not."""
        client, bootstrap = state.secure_client_properties(), state.secure_bootstrap
        if client is None or bootstrap is None:
            raise LocalKafkaError("The cluster has no SECURE listener to check (no SCRAM user or CA recorded)")
        deadline = time.monotonic() + timeout_s
        while brokers_seen(bootstrap, client=client) < len(state.nodes):
            if time.monotonic() > deadline:
                log_file = state.nodes[0].directory(self.run_dir) / "server.log"
                raise LocalKafkaError(
                    f"The SASL_SSL listener ({bootstrap}) did not let the SCRAM user {state.scram_user!r} in within "
                    f"{timeout_s:.0f}s. Last lines of {log_file}:\n{processes.tail(log_file)}"
                )
            time.sleep(0.25)

    def _start_proxy(self, state: ClusterState) -> None:
        proxy = Toxiproxy.start(self.run_dir, free_port())
        state.toxiproxy_url, state.toxiproxy_pid = proxy.url, proxy.pid
        client = ToxiproxyClient(proxy.url)
        for node in state.nodes:
            client.create_proxy(proxy_name(node.node_id), f"127.0.0.1:{node.proxy_port}",
                                f"127.0.0.1:{node.proxied_port}")

    def _start_connect(self, libs: Path, state: ClusterState, port: int, notes: list[str]) -> None:
        chosen, preferred = pick_port(port)
        if not preferred:
            notes.append(f"Port {port} is taken; the Connect REST API uses port {chosen} instead.")
        props = connect_properties(self.run_dir / "connect-distributed.properties", state.bootstrap, chosen)
        log_config = processes.log4j2_config(self.run_dir, "connect")
        proc = processes.spawn(processes.java_cmd(libs, CONNECT_HEAP, log_config,
                                                  CONNECT_MAIN, str(props)), self.run_dir,
                               self.run_dir / "connect.stdout")
        url = f"http://127.0.0.1:{chosen}"
        state.connect_pid, state.connect_url = proc.pid, url
        state.save(self.run_dir)

        def ready() -> bool:
            plugins = _connect_plugins(url)
            return plugins is not None and any(p.endswith("FileStreamSinkConnector") for p in plugins)

        processes.wait_until(ready, proc, "Connect worker", self.run_dir / "connect.log", CONNECT_MAIN)

    def stop_broker(self, node_id: int = 1, kill: bool = False) -> None:
        """Stop one broker, keeping its data: SIGTERM (a clean shutdown that hands leadership over) or, with
        ``kill``, SIGKILL (a crash: leaders move only once the controller notices)."""
        node = self._require_state().node(node_id)
        if kill:
            processes.kill(node.pid, BROKER_MAIN)
        else:
            processes.terminate(node.pid, BROKER_MAIN)

    def start_broker(self, node_id: int = 1) -> None:
        """Start a stopped broker again on its ports and data; returns once it answers and sees every broker."""
        state = self._require_state()
        node = state.node(node_id)
        if processes.pid_alive(node.pid, BROKER_MAIN):
            return
        proc = self._spawn_broker(ensure_jars(state.version), node)
        node.pid = proc.pid
        state.save(self.run_dir)
        self._wait_for_broker(state, node, proc)

    def wait_in_sync(self, timeout_s: float = IN_SYNC_TIMEOUT_S) -> None:
        """Until every partition of every topic has its whole replica set in sync (a rolling restart waits for
        this before it stops the next broker, as an operator would)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self._require_state().bootstrap})
        deadline = time.monotonic() + timeout_s
        lagging: list[str] = ["no metadata"]
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                meta = admin.list_topics(timeout=5)
                lagging = [f"{t.topic}[{p.id}]" for t in meta.topics.values() for p in t.partitions.values()
                           if set(p.isrs) != set(p.replicas)]
                if not lagging:
                    return
            time.sleep(0.25)
        raise LocalKafkaError(f"Replicas still out of sync after {timeout_s:.0f}s: {', '.join(lagging[:10])}")

    def active_controller(self) -> int:
        """The node id of the KRaft quorum's leader (the active controller), from the quorum state the running
        nodes keep on disk: the view with the highest epoch wins."""
        state = self._require_state()
        best: tuple[int, int] | None = None
        for node in state.nodes:
            if not processes.pid_alive(node.pid, BROKER_MAIN):
                continue
            path = node.directory(self.run_dir) / "data" / "__cluster_metadata-0" / "quorum-state"
            with contextlib.suppress(OSError, ValueError, KeyError):
                data = json.loads(path.read_text())
                epoch, leader = int(data["leaderEpoch"]), int(data["leaderId"])
                if leader >= 0 and (best is None or epoch > best[0]):
                    best = (epoch, leader)
        if best is None:
            raise LocalKafkaError("No running node knows the quorum's leader yet")
        return best[1]

    def share_version(self) -> int:
        """The finalized ``share.version`` feature level of the running cluster (0: share groups are off), read from
        the first node's log where the controller records the finalized features at start-up (0 too when nothing
        runs). Share groups are generally available from level 1 (Kafka 4.2 formats its storage with them on);
        ``kafka up`` prints it."""
        state = self.state()
        if state is None:
            return 0
        log_file = self.log_path("server", state.nodes[0].node_id)
        levels = _FINALIZED_SHARE_VERSION.findall(log_file.read_text(errors="replace")) if log_file.exists() else []
        return int(levels[-1]) if levels else 0

    def status(self) -> dict[str, object]:
        state = self.state()
        if state is None:
            return {"running": False, "run_dir": str(self.run_dir)}
        nodes = [{"id": n.node_id, "pid": n.pid, "port": n.port, "running": processes.pid_alive(n.pid, BROKER_MAIN),
                  "log": str(self.log_path("server", n.node_id))} for n in state.nodes]
        running = any(n["running"] for n in nodes)
        return {
            "running": running,
            "run_dir": str(self.run_dir),
            "version": state.version,
            "bootstrap": state.bootstrap,
            "brokers": nodes,
            "broker_answers": running and broker_answers(state.bootstrap, timeout_s=10.0),
            "share_version": self.share_version(),
            "proxied_bootstrap": state.proxied_bootstrap,
            "secure_bootstrap": state.secure_bootstrap,
            "security": state.security,
            "scram_user": state.scram_user,
            "ca_file": state.ca_file,
            "toxiproxy_url": state.toxiproxy_url,
            "toxiproxy_running": processes.pid_alive(state.toxiproxy_pid, TOXIPROXY_BINARY),
            "connect_url": state.connect_url,
            "connect_pid": state.connect_pid,
            "connect_running": processes.pid_alive(state.connect_pid, CONNECT_MAIN),
        }

    def down(self, keep_data: bool = False) -> list[str]:
        """Stop Connect, the brokers and the proxy. Without ``keep_data`` the brokers are killed (their data is
        removed anyway, and three brokers shutting down together would wait on each other's controlled
        shutdown); with it they get SIGTERM together."""
        notes: list[str] = []
        try:
            state = self.state()
        except LocalKafkaError:
            state = None
            notes += self._stop_unreadable()
        if state is not None:
            if state.connect_pid:
                processes.terminate(state.connect_pid, CONNECT_MAIN)
                notes.append(f"Stopped Connect worker (pid {state.connect_pid}).")
            self._stop_brokers([n.pid for n in state.nodes], keep_data)
            notes += [f"Stopped broker {n.node_id} (pid {n.pid})." for n in state.nodes]
            if state.toxiproxy_pid:
                processes.terminate(state.toxiproxy_pid, TOXIPROXY_BINARY)
                notes.append(f"Stopped Toxiproxy (pid {state.toxiproxy_pid}).")
        if self.run_dir.exists() and not keep_data:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            notes.append(f"Removed {self.run_dir}.")
        return notes

    @staticmethod
    def _stop_brokers(pids: list[int], graceful: bool) -> None:
        if not graceful:
            for pid in pids:
                processes.kill(pid, BROKER_MAIN)
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                if processes.pid_alive(pid, BROKER_MAIN):
                    os.kill(pid, signal.SIGTERM)
        for pid in pids:
            processes.terminate(pid, BROKER_MAIN)

    def _stop_unreadable(self) -> list[str]:
        """A state file this version cannot read (an earlier layout): stop every PID it names that still runs
        one of our programs."""
        notes = []
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((self.run_dir / "state.json").read_text())
            for key, value in data.items():
                if key.endswith("pid") and isinstance(value, int):
                    for marker in (CONNECT_MAIN, BROKER_MAIN, TOXIPROXY_BINARY):
                        if processes.pid_alive(value, marker):
                            processes.kill(value, marker)
                            notes.append(f"Stopped pid {value} ({marker}).")
        return notes

    def log_path(self, which: str = "server", node_id: int = 1) -> Path:
        """``server`` (a broker's log, ``node_id``), ``connect`` or ``toxiproxy``."""
        if which == "server":
            return self.run_dir / f"broker-{node_id}" / "server.log"
        if which == "toxiproxy":
            return Toxiproxy.log_file_in(self.run_dir)
        return self.run_dir / f"{which}.log"
