"""Start, inspect and stop a real single-node Kafka (KRaft) and an optional Connect worker on 127.0.0.1.

Everything a run needs lives in one run directory: properties, storage, logs, and ``state.json`` with
the PIDs and addresses, so that ``status`` and ``down`` work from any later process.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.jars import ensure_jars, java_executable

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092
DEFAULT_CONNECT_PORT = 8083
BROKER_HEAP = "512m"
CONNECT_HEAP = "384m"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
_BROKER_MAIN = "kafka.Kafka"
_CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"
_STORAGE_TOOL = "kafka.tools.StorageTool"


def default_run_dir() -> Path:
    """One run directory per working copy unless PYRALLEL_KAFKA_RUN_DIR says otherwise."""
    return Path(os.environ.get("PYRALLEL_KAFKA_RUN_DIR", ".run/kafka")).resolve()


@dataclass(slots=True)
class ClusterState:
    """What ``up`` leaves behind for ``status`` and ``down``."""

    bootstrap: str
    broker_pid: int
    connect_url: str | None = None
    connect_pid: int | None = None

    @classmethod
    def load(cls, run_dir: Path) -> ClusterState | None:
        path = run_dir / "state.json"
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise LocalKafkaError(
                f"{path} is unreadable ({exc}); remove the run directory {run_dir} and start again."
            ) from exc

    def save(self, run_dir: Path) -> None:
        (run_dir / "state.json").write_text(json.dumps(asdict(self), indent=2) + "\n")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free port on 127.0.0.1 for a server started later, below the kernel's ephemeral range when possible.

    A port from the ephemeral range (what ``bind(0)`` returns) can be handed to an outgoing connection between
    this check and the server's bind; ports below the range are only ever taken by an explicit bind.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(50):
        port = rng.randrange(10_000, max(low, 10_001))
        if _port_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def pick_port(preferred: int) -> tuple[int, bool]:
    """Return (port, is_preferred): the preferred port when it is free, otherwise any free port."""
    if _port_free(preferred):
        return preferred, True
    return free_port(), False


def _pid_alive(pid: int | None, main_class: str) -> bool:
    """True when ``pid`` runs our Java main class; a recycled PID of another program is not ours."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return main_class in cmdline


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _log4j2_config(run_dir: Path, name: str) -> Path:
    path = run_dir / f"log4j2-{name}.properties"
    path.write_text(
        "\n".join(
            [
                "status = error",
                "appender.file.type = File",
                "appender.file.name = FILE",
                f"appender.file.fileName = {run_dir / (name + '.log')}",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.file.ref = FILE",
                "logger.kafka.name = kafka",
                "logger.kafka.level = INFO",
                "logger.reflections.name = org.reflections",
                "logger.reflections.level = ERROR",
                "",
            ]
        )
    )
    return path


def _java_cmd(libs: Path, heap: str, log_config: Path, main: str, *args: str) -> list[str]:
    return [
        java_executable(),
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def _broker_properties(run_dir: Path, port: int, controller_port: int) -> Path:
    path = run_dir / "server.properties"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(run_dir / "data"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Members joining an empty group within 100 ms share its first generation: blue/green strategy C's new color
        # joins at once (0 makes them race through several generations, the broker's 3000 makes them wait 3-6 s;
        # docs/decisions.md, "Strategy C pays for a change of group membership").
        "group.initial.rebalance.delay.ms": "100",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def _connect_properties(run_dir: Path, bootstrap: str, rest_port: int) -> Path:
    path = run_dir / "connect-distributed.properties"
    props = {
        "bootstrap.servers": bootstrap,
        "group.id": "pyrallel-connect",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
        "config.storage.topic": "_pyrallel-connect-configs",
        "config.storage.replication.factor": "1",
        "offset.storage.topic": "_pyrallel-connect-offsets",
        "offset.storage.replication.factor": "1",
        "offset.storage.partitions": "5",
        "status.storage.topic": "_pyrallel-connect-status",
        "status.storage.replication.factor": "1",
        "status.storage.partitions": "1",
        "offset.flush.interval.ms": "1000",
        "listeners": f"http://127.0.0.1:{rest_port}",
        "rest.advertised.host.name": "127.0.0.1",
        "rest.advertised.port": str(rest_port),
        "plugin.discovery": "only_scan",
        "scheduled.rebalance.max.delay.ms": "0",
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Ask the broker for metadata: the readiness test used instead of any fixed sleep."""
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("pyrallel_tools.localkafka.probe")
    quiet.setLevel(logging.CRITICAL)
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet}
    admin = AdminClient(conf)
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return bool(meta.brokers)


def _connect_plugins(url: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(f"{url}/connector-plugins", timeout=3) as resp:  # noqa: S310
            data = json.loads(resp.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return [str(item.get("class", "")) for item in data]


def _spawn(cmd: list[str], run_dir: Path, name: str) -> subprocess.Popen[bytes]:
    out = (run_dir / f"{name}.stdout").open("wb")
    try:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=run_dir, start_new_session=True
        )
    finally:
        out.close()


def _wait_until(
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    what: str,
    log_file: Path,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalKafkaError(
                f"The {what} exited during start (exit {proc.returncode}). Last lines of {log_file}:\n"
                f"{_tail(log_file)}"
            )
        if ready():
            return
        time.sleep(0.25)
    _terminate(proc.pid, _BROKER_MAIN if what == "broker" else _CONNECT_MAIN)
    raise LocalKafkaError(
        f"The {what} did not become ready within {timeout_s:.0f}s. Last lines of {log_file}:\n"
        f"{_tail(log_file)}"
    )


def _terminate(pid: int, main_class: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (Kafka shuts down cleanly on it), then SIGKILL if it does not exit in time."""
    if not _pid_alive(pid, main_class):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid, main_class) or _is_zombie(pid):
            _reap(pid)
            return
        time.sleep(0.1)
    log.warning("Process %d did not stop after SIGTERM within %.0fs; sending SIGKILL", pid, timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (same Python process started it)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class LocalKafka:
    """A single-node KRaft Kafka (and optionally a Connect worker) owned by one run directory."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = (run_dir or default_run_dir()).resolve()

    def state(self) -> ClusterState | None:
        return ClusterState.load(self.run_dir)

    def up(
        self,
        port: int = DEFAULT_PORT,
        with_connect: bool = False,
        connect_port: int = DEFAULT_CONNECT_PORT,
    ) -> tuple[ClusterState, list[str]]:
        """Start what is not running yet and return the state plus notes worth telling the user."""
        notes: list[str] = []
        state = self.state()
        if state is not None and not _pid_alive(state.broker_pid, _BROKER_MAIN):
            raise LocalKafkaError(
                f"Stale run directory {self.run_dir}: its broker (pid {state.broker_pid}) is no longer "
                "running. Run 'pyrallel kafka down' to clean it up, then 'pyrallel kafka up' again."
            )
        libs = ensure_jars()
        if state is None:
            state = self._start_broker(libs, port, notes)
        else:
            notes.append(f"Broker already running (pid {state.broker_pid}).")
        if with_connect:
            if state.connect_pid and _pid_alive(state.connect_pid, _CONNECT_MAIN):
                notes.append(f"Connect worker already running (pid {state.connect_pid}).")
            else:
                self._start_connect(libs, state, connect_port, notes)
        state.save(self.run_dir)
        return state, notes

    def _start_broker(self, libs: Path, port: int, notes: list[str]) -> ClusterState:
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise LocalKafkaError(
                f"Run directory {self.run_dir} holds files of an earlier run but no state; "
                "run 'pyrallel kafka down' to clean it up."
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        chosen, preferred = pick_port(port)
        if not preferred:
            notes.append(f"Port {port} is taken; the broker uses port {chosen} instead.")
        props = _broker_properties(self.run_dir, chosen, free_port())
        log_config = _log4j2_config(self.run_dir, "server")
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # One id in 64 starts with "-"; the "=" form keeps argparse from reading it as an option.
        fmt = subprocess.run(
            _java_cmd(libs, "256m", log_config, _STORAGE_TOOL, "format", "--standalone",
                      f"--cluster-id={cluster_id}", f"--config={props}"),
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise LocalKafkaError(
                f"Formatting the KRaft storage failed (exit {fmt.returncode}):\n"
                f"{(fmt.stdout + fmt.stderr).strip()[-2000:]}"
            )
        proc = _spawn(_java_cmd(libs, BROKER_HEAP, log_config, _BROKER_MAIN, str(props)), self.run_dir,
                      "server")
        bootstrap = f"127.0.0.1:{chosen}"
        state = ClusterState(bootstrap=bootstrap, broker_pid=proc.pid)
        state.save(self.run_dir)
        _wait_until(lambda: broker_answers(bootstrap), proc, "broker", self.run_dir / "server.log")
        return state

    def _start_connect(self, libs: Path, state: ClusterState, port: int, notes: list[str]) -> None:
        chosen, preferred = pick_port(port)
        if not preferred:
            notes.append(f"Port {port} is taken; the Connect REST API uses port {chosen} instead.")
        props = _connect_properties(self.run_dir, state.bootstrap, chosen)
        log_config = _log4j2_config(self.run_dir, "connect")
        proc = _spawn(_java_cmd(libs, CONNECT_HEAP, log_config, _CONNECT_MAIN, str(props)), self.run_dir,
                      "connect")
        url = f"http://127.0.0.1:{chosen}"
        state.connect_pid, state.connect_url = proc.pid, url
        state.save(self.run_dir)

        def ready() -> bool:
            plugins = _connect_plugins(url)
            return plugins is not None and any(p.endswith("FileStreamSinkConnector") for p in plugins)

        _wait_until(ready, proc, "Connect worker", self.run_dir / "connect.log")

    def stop_broker(self) -> None:
        """Stop only the broker, keeping its data and state, to simulate a broker outage."""
        state = self.state()
        if state is None:
            raise LocalKafkaError(f"No local Kafka runs in {self.run_dir}")
        _terminate(state.broker_pid, _BROKER_MAIN)

    def start_broker(self) -> None:
        """Start the broker again on the same port and data after ``stop_broker``."""
        state = self.state()
        if state is None:
            raise LocalKafkaError(f"No local Kafka state in {self.run_dir}")
        if _pid_alive(state.broker_pid, _BROKER_MAIN):
            return
        log_config = self.run_dir / "log4j2-server.properties"
        cmd = _java_cmd(ensure_jars(), BROKER_HEAP, log_config, _BROKER_MAIN, str(self.run_dir / "server.properties"))
        proc = _spawn(cmd, self.run_dir, "server")
        state.broker_pid = proc.pid
        state.save(self.run_dir)
        _wait_until(lambda: broker_answers(state.bootstrap), proc, "broker", self.run_dir / "server.log")

    def status(self) -> dict[str, object]:
        state = self.state()
        if state is None:
            return {"running": False, "run_dir": str(self.run_dir)}
        broker_alive = _pid_alive(state.broker_pid, _BROKER_MAIN)
        return {
            "running": broker_alive,
            "run_dir": str(self.run_dir),
            "bootstrap": state.bootstrap,
            "broker_pid": state.broker_pid,
            "broker_answers": broker_alive and broker_answers(state.bootstrap, timeout_s=10.0),
            "connect_url": state.connect_url,
            "connect_pid": state.connect_pid,
            "connect_running": _pid_alive(state.connect_pid, _CONNECT_MAIN),
        }

    def down(self, keep_data: bool = False) -> list[str]:
        """Stop Connect first (it needs the broker to shut down cleanly), then the broker."""
        notes: list[str] = []
        state = self.state()
        if state is not None:
            if state.connect_pid:
                _terminate(state.connect_pid, _CONNECT_MAIN)
                notes.append(f"Stopped Connect worker (pid {state.connect_pid}).")
            _terminate(state.broker_pid, _BROKER_MAIN)
            notes.append(f"Stopped broker (pid {state.broker_pid}).")
        if self.run_dir.exists() and not keep_data:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            notes.append(f"Removed {self.run_dir}.")
        return notes

    def log_path(self, which: str = "server") -> Path:
        return self.run_dir / f"{which}.log"


