"""A real schema registry on 127.0.0.1 for the typed-record tests: Apicurio Registry, in memory, one JVM.

Clients use its Confluent-compatible REST API (``CCOMPAT_PATH``), which is what confluent-kafka's
``SchemaRegistryClient`` speaks, so ``AvroSerializer``/``AvroDeserializer`` and the JSON Schema pair work against it
as they would against Confluent's registry. Storage is Apicurio's default SQL storage on an in-memory H2 database:
nothing outlives the process, and no database server is needed. Authentication is off (Apicurio's default).

Two ports on 127.0.0.1, both picked free: the REST API and Quarkus' management interface, whose ``/health/ready``
is the readiness test. ``up`` writes ``state.json`` (ports and PID) so that another process can find and stop what
one started (``pyrallel registry address|down``); everything the JVM writes (its log, temporary files) stays in the
run directory, and ``down`` removes it.

Called on the caller's thread by the ``schema_registry`` pytest fixture and the ``pyrallel registry`` commands;
every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from pyrallel_tools.jdk import java_at_least
from pyrallel_tools.localkafka import processes
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.ports import free_port
from pyrallel_tools.localregistry.distribution import APICURIO_VERSION, MIN_JAVA, RUNNER, ensure_registry, registry_dir

CCOMPAT_PATH = "/apis/ccompat/v7"
"""Apicurio's Confluent Schema Registry API (v7): the base URL a Confluent client is given."""
START_TIMEOUT_S = 120.0
HEAP = "256m"
"""Enough for the tests' handful of schemas; the measured resident size after start is about 200 MB."""
_JVM_OPTIONS = (
    "-Xms64m",
    f"-Xmx{HEAP}",
    # One collector thread and the quick compiler only: the machine's cores go to the brokers and the tests, and a
    # registry serving a few schemas never warms up enough for C2 to pay off.
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)
_STATE = "state.json"
_LOG = "registry.log"
_TMP = "tmp"


@dataclass(slots=True)
class RegistryState:
    """Ports and PID of one local registry, in ``<run-dir>/state.json``."""

    version: str
    port: int
    management_port: int
    pid: int = 0


class LocalRegistry:
    """The schema registry of one run directory. ``up()`` starts it (or returns at once when it already runs
    there), ``url`` is the Confluent-compatible base URL, ``down()`` stops it and removes what ``up`` wrote."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    @property
    def state(self) -> RegistryState | None:
        path = self.run_dir / _STATE
        if not path.exists():
            return None
        try:
            return RegistryState(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise LocalKafkaError(f"{path} is not a state file of `pyrallel registry up`: {exc}") from exc

    @property
    def url(self) -> str:
        """The Confluent-compatible base URL, e.g. ``http://127.0.0.1:12345/apis/ccompat/v7`` (what
        ``SchemaRegistryClient({"url": ...})`` takes)."""
        state = self.state
        if state is None:
            raise LocalKafkaError(f"No local schema registry in {self.run_dir}: run `pyrallel registry up` first")
        return f"http://127.0.0.1:{state.port}{CCOMPAT_PATH}"

    @property
    def log_file(self) -> Path:
        return self.run_dir / _LOG

    def up(self) -> LocalRegistry:
        """Start the registry (resolving it with Maven the first time) and wait until it reports ready."""
        state = self.state
        if state is not None and processes.pid_alive(state.pid, _runner(state)):
            return self
        if state is not None:
            self.down()
        java = java_at_least(MIN_JAVA, f"Apicurio Registry {APICURIO_VERSION} (the schema registry of the tests)")
        runner = ensure_registry() / RUNNER
        (self.run_dir / _TMP).mkdir(parents=True, exist_ok=True)
        port = free_port()
        state = RegistryState(APICURIO_VERSION, port, free_port(frozenset({port})))
        self._write_state(state)
        proc = processes.spawn([java, *_JVM_OPTIONS, *self._properties(state), "-jar", str(runner)],
                               self.run_dir, self.log_file)
        state.pid = proc.pid
        self._write_state(state)
        try:
            processes.wait_until(
                lambda: processes.http_ok(f"http://127.0.0.1:{state.management_port}/health/ready"),
                proc, f"schema registry (Apicurio Registry {APICURIO_VERSION})", self.log_file, str(runner),
                START_TIMEOUT_S)
        except BaseException:  # a failed start, or a Ctrl-C during the wait: no JVM lives on unowned
            self.down(keep_log=True)
            raise
        return self

    def down(self, keep_log: bool = False) -> None:
        """Stop the registry (SIGTERM, SIGKILL if it overstays) and remove what ``up`` wrote. Idempotent.

        ``keep_log`` leaves ``registry.log`` for the reader of a failed start's error.
        """
        state = self.state
        if state is None:  # not a run directory of ours (or already down): remove nothing
            return
        processes.terminate(state.pid, _runner(state))
        shutil.rmtree(self.run_dir / _TMP, ignore_errors=True)
        if not keep_log:
            self.log_file.unlink(missing_ok=True)
        (self.run_dir / _STATE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only when nothing else was left in it
            self.run_dir.rmdir()

    def _properties(self, state: RegistryState) -> list[str]:
        """Quarkus and Apicurio settings as system properties, which outrank environment variables and the
        application's own files: the registry binds loopback only and keeps its files in the run directory,
        whatever the caller's environment holds."""
        tmp = self.run_dir / _TMP
        settings = {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": state.port,
            "quarkus.management.host": "127.0.0.1",
            "quarkus.management.port": state.management_port,
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "h2",
            "apicurio.datasource.url": "jdbc:h2:mem:registry",
            "apicurio.storage.snapshot.location": tmp,
            "apicurio.import.work-dir": tmp,
            "java.io.tmpdir": tmp,
        }
        return [f"-D{name}={value}" for name, value in settings.items()]

    def _write_state(self, state: RegistryState) -> None:
        (self.run_dir / _STATE).write_text(json.dumps(asdict(state), indent=2) + "\n")


def _runner(state: RegistryState) -> str:
    """What the command line of the registry of ``state`` holds and no other program's does: its runner's path in
    the cache (a path only: stopping a registry never resolves one)."""
    return str(registry_dir(state.version) / RUNNER)
