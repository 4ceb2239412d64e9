"""The child processes of a scenario run: each color's ``pyrallel consume`` processes and the load producer.

For strategy E the colors are Kafka Connect connectors instead, created and stopped over Connect's REST API.
The scenario runner (:mod:`pyrallel_tools.bluegreen.scenarios`) starts and stops them from its own thread; in
scenario 4 it kills and restarts one while the switch runs in a second thread. The status sampler's thread
only reads :attr:`Fleet.instances`.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pyrallel_consumer.bluegreen.controller import COLORS, SwitchError, http_json
from pyrallel_tools.bluegreen.run_spec import RunSpec, ScenarioError
from pyrallel_tools.localkafka.ports import free_port

log = logging.getLogger(__name__)


def _cli() -> list[str]:
    return [sys.executable, "-m", "pyrallel_tools.cli"]


@dataclass(slots=True)
class Instance:
    """One ``pyrallel consume`` process of a color (or, for strategy E, one connector)."""

    color: str
    name: str
    group: str
    port: int
    log_path: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, paused: bool) -> None:
        cmd = [*self.args, "--control-port", str(self.port), "--log", str(self.log_path)]
        if paused:
            cmd.append("--start-paused")
        err = self.log_path.with_suffix(".stderr").open("ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        finally:
            err.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ScenarioError(f"{self.name} exited with {self.proc.returncode}; see "
                                    f"{self.log_path.with_suffix('.stderr')}")
            try:
                if http_json("GET", f"{self.url}/readyz", timeout_s=2) is not None:
                    return
            except SwitchError:
                pass
            time.sleep(0.2)
        raise ScenarioError(f"{self.name} was not ready within {timeout_s:g}s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM: the app stops with a drain and commits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


class Fleet:
    """Both colors' instances of one run, and its producer."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.instances: dict[str, list[Instance]] = {c: [] for c in COLORS}
        self._producer: subprocess.Popen[bytes] | None = None

    def start_consumers(self) -> None:
        """Blue processing, green started paused; return when every instance answers ``/readyz``."""
        groups = self.spec.groups()
        for color in COLORS:
            for n in range(1, self.spec.options.instances + 1):
                instance = Instance(color, f"{color}-{n}", groups[color], free_port(),
                                    self.spec.work / f"consumer-{color}-{n}.jsonl",
                                    self._consumer_args(color, n, groups[color]))
                instance.start(paused=color == "green")
                self.instances[color].append(instance)
        for instance in self.instances["blue"] + self.instances["green"]:
            instance.wait_ready()

    def _consumer_args(self, color: str, n: int, group: str) -> list[str]:
        spec, options = self.spec, self.spec.options
        args = [*_cli(), "consume", "--bootstrap-servers", options.bootstrap, "--topic", spec.topic,
                "--group", group, "--color", color, "--instance-id", f"{color}-{n}", "--workload",
                options.workload, "--commit-interval-ms", "200", "--until-signal", "--max-retries", "1",
                "--deployment", spec.deployment_name, "--on-exhausted", "keep"]
        if spec.strategy == "B":  # each color in its own group: stay joined while paused, take positions on resume
            args += ["--pause-mode", "hold"]
        if spec.scenario == 5 and color == "green":
            args += ["--fault-failure-rate", "0.9"]
        if spec.scenario == 4:  # a killed member is noticed after the session timeout: keep it short
            args += ["--kafka", "session.timeout.ms=10000"]
        for pair in options.consumer_kafka:
            args += ["--kafka", pair]
        if spec.variant == "static":
            args += ["--group-instance-id", f"{spec.run_id}-{color}-{n}"]
        return args

    def start_connectors(self) -> None:
        """A FileStreamSink connector per color: blue running, green stopped."""
        url = self.spec.options.connect_url
        for color in COLORS:
            name = self.spec.connector(color)
            sink = self.spec.work / f"sink-{color}.txt"
            http_json("POST", f"{url}/connectors", {
                "name": name, "initial_state": "RUNNING" if color == "blue" else "STOPPED",
                "config": {"connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                           "tasks.max": "1", "topics": self.spec.topic, "file": str(sink.resolve()),
                           "consumer.override.auto.offset.reset": "earliest"},
            })
            self.instances[color].append(Instance(color, name, f"connect-{name}", 0, sink, []))

    def start_producer(self, duration_s: float) -> None:
        options, work = self.spec.options, self.spec.work
        cmd = [*_cli(), "produce", "--bootstrap-servers", options.bootstrap, "--topic", self.spec.topic,
               "--rate", str(options.rate), "--keys", str(options.keys), "--duration", str(duration_s),
               "--log", str(work / "producer.jsonl"), "--seed", "7"]
        err = (work / "producer.stderr").open("ab")
        try:
            self._producer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        finally:
            err.close()

    def stop_producer(self) -> None:
        if self._producer is not None and self._producer.poll() is None:
            self._producer.send_signal(signal.SIGTERM)
            self._producer.wait(60)

    def stop_all(self) -> None:
        """Stop every consumer (SIGTERM, so each drains and commits) or every connector."""
        if self.spec.strategy == "E":
            for color in COLORS:
                for instance in self.instances[color]:
                    try:
                        http_json("PUT", f"{self.spec.options.connect_url}/connectors/{instance.name}/stop")
                    except SwitchError as exc:
                        log.warning("Stopping connector %s: %s", instance.name, exc)
            return
        for instance in self.instances["blue"] + self.instances["green"]:
            instance.stop()
