"""The processes of the test bed's servers (Kafka brokers, the Connect worker, Toxiproxy, etcd and kube-apiserver,
the schema registry): start, wait until ready, stop by PID.

Called from :class:`~pyrallel_tools.localkafka.cluster.LocalKafka`, ``LocalApiServer`` and ``LocalRegistry`` on the
caller's thread (the CLI's or a test's); every wait is bounded. A PID is only ever signalled when
``/proc/<pid>/cmdline`` still names the program we started, so a PID the kernel recycled for another program is left
alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.jars import java_executable

log = logging.getLogger(__name__)

BROKER_MAIN = "kafka.Kafka"
CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"
STORAGE_TOOL = "kafka.tools.StorageTool"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def pid_alive(pid: int | None, marker: str) -> bool:
    """True when ``pid`` runs a command line containing ``marker`` (our main class, or our binary's path)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline and not _is_zombie(pid)


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def log4j2_config(directory: Path, name: str) -> Path:
    """A log4j2 file appender writing ``<directory>/<name>.log`` (what ``pyrallel kafka logs`` prints)."""
    path = directory / f"log4j2-{name}.properties"
    path.write_text(
        "\n".join(
            [
                "status = error",
                "appender.file.type = File",
                "appender.file.name = FILE",
                f"appender.file.fileName = {directory / (name + '.log')}",
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


def java_cmd(libs: Path, heap: str, log_config: Path, main: str, *args: str) -> list[str]:
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


def spawn(cmd: list[str], directory: Path, output: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in ``directory`` in its own session (a Ctrl-C of the caller does not reach it), its output
    appended to ``output``."""
    with output.open("ab") as out:
        try:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=directory,
                                    start_new_session=True)
        except OSError as exc:
            raise LocalKafkaError(f"Could not start {cmd[0]}: {exc}") from exc


def http_ok(url: str, token: str | None = None, ca_file: Path | None = None) -> bool:
    """Whether ``url`` (a loopback health endpoint of a server we started) answers 200 within 2 s; with ``token``
    as a bearer token and ``ca_file`` as the only CA to trust. The readiness test of ``wait_until`` callers."""
    request = urllib.request.Request(url)  # noqa: S310 - loopback URLs built by the callers
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log_file: Path,
               marker: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll ``ready`` until it holds; a process that exits or a deadline that passes raises with the log's tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalKafkaError(
                f"The {what} exited during start (exit {proc.returncode}). Last lines of {log_file}:\n"
                f"{tail(log_file)}"
            )
        if ready():
            return
        time.sleep(0.25)
    terminate(proc.pid, marker)
    raise LocalKafkaError(
        f"The {what} did not become ready within {timeout_s:.0f}s. Last lines of {log_file}:\n{tail(log_file)}"
    )


def terminate(pid: int, marker: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (Kafka shuts down cleanly on it: a broker hands its leaderships over), SIGKILL if it overstays."""
    if not pid_alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            _reap(pid)
            return
        time.sleep(0.1)
    log.warning("Process %d did not stop after SIGTERM within %.0fs; sending SIGKILL", pid, timeout_s)
    kill(pid, marker)


def kill(pid: int, marker: str) -> None:
    """SIGKILL, as a crash or an OOM kill would; returns once the process is gone (bounded)."""
    if not pid_alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.05)
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
