"""The contenders of ``pyrallel bench`` and the environments they run in.

Every contender is a command: this library's engines (``python -m pyrallel_tools.benchmark.contenders``) and
the scripts under ``benchmarks/peers/`` in this virtualenv; the published ``pyrallel-consumer==1.0.0`` (which
shares this package's import name and needs Python >= 3.12) and ``sentry-arroyo`` in virtualenvs of their own,
created on first use with ``python -m venv`` and ``pip install``; Confluent's Java parallel-consumer, built with
Maven from ``benchmarks/peers/java``. An environment that cannot be set up makes its contenders *unavailable*
with the reason, which the results report; it never stops the benchmark.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pyrallel_consumer.kafka.settings import FETCH_DEFAULTS
from pyrallel_tools.benchmark.results import ContenderInfo, Guarantees

log = logging.getLogger(__name__)

PYRALLEL_PEER_REQUIREMENT = "pyrallel-consumer==1.0.0"
ARROYO_REQUIREMENT = "sentry-arroyo"
_SETUP_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class Environment:
    """Where a family of contenders runs: the command prefix, or why it is unavailable."""

    name: str
    prefix: tuple[str, ...] = ()
    version: str = ""
    reason: str = ""
    details: dict[str, str] = field(default_factory=dict)
    loops_per_ms: float = 0.0
    """Calibration of the CPU-bound workload on this environment's Python (0 for Java)."""

    @property
    def ready(self) -> bool:
        return not self.reason


@dataclass(frozen=True, slots=True)
class ContenderSpec:
    id: str
    name: str
    family: str
    environment: str
    """"main" (this virtualenv), "pyrallel-1.0.0", "arroyo" or "java"."""
    args: tuple[str, ...]
    """After the environment's prefix: the script (relative to the peers directory) or module, and its mode."""
    guarantees: Guarantees
    ordering: str = ""
    group: str = ""
    cpu_bound: bool = False
    extra: tuple[str, ...] = ()
    """Arguments appended to the benchmark arguments (e.g. ``--kafka NAME=VALUE``)."""
    """Its concurrency is a number of processes (or, for Java on the CPU workload, threads) rather than records."""

    def info(self, env: Environment) -> ContenderInfo:
        version = env.version if self.family == "pyrallel" or self.environment != "main" else env.details.get(
            "confluent_kafka", "")
        return ContenderInfo(self.id, self.name, self.family, self.guarantees, self.ordering, self.group or self.name,
                             env.ready, env.reason, version)


SAME_FETCH: tuple[str, ...] = tuple(arg for name, value in FETCH_DEFAULTS.items()
                                    for arg in ("--kafka", f"{name}={value}"))
"""The fetch settings this library defaults to, given to every contender whose consumer configuration the benchmark
writes (bare loop, baseline, AIOConsumer, thread pool), so that they all fetch alike."""

_ORDER_TEXT = {"key": "yes", "partition": "per partition only", "unordered": "no"}
_OURS = Guarantees("", "yes: the lowest incomplete offset per partition",
                   "yes: completed offsets above it travel in the commit metadata")
_PYRALLEL_1 = Guarantees("", "yes: the highest contiguous completed offset",
                         "no by default (rebalance_state_strategy=contiguous_only; metadata_snapshot is opt-in)")
_JAVA = Guarantees("", "yes: the lowest incomplete offset per partition",
                   "yes: incomplete offsets encoded in the commit metadata")
_BASELINE = Guarantees("yes: one record at a time", "yes: an asynchronous commit after each batch",
                       "no: a restart re-runs the uncommitted batch")
_BATCH = Guarantees("no: a whole batch runs at once", "yes: a synchronous commit after the whole batch",
                    "no: a restart re-runs the uncommitted batch")


def _ordered(base: Guarantees, ordering: str) -> Guarantees:
    return Guarantees(_ORDER_TEXT[ordering], base.completed_only, base.offset_map)


def catalog() -> list[ContenderSpec]:
    """Every contender; which ones run on which workload is the runner's plan."""
    module = ("-m", "pyrallel_tools.benchmark.contenders")
    specs = [
        ContenderSpec("bare", "bare consume() loop (no handler, no commit)", "reference", "main",
                      ("sequential.py", "bare"), Guarantees("n/a: no handler", "no commits", "no"), extra=SAME_FETCH),
        ContenderSpec("baseline", "sequential baseline (confluent-kafka loop)", "reference", "main",
                      ("sequential.py", "baseline"), _BASELINE, extra=SAME_FETCH),
    ]
    for ordering in ("key", "partition", "unordered"):
        specs.append(ContenderSpec(f"async-{ordering}", f"pyrallel async engine ({ordering})", "pyrallel", "main",
                                   (*module, "async"), _ordered(_OURS, ordering), ordering))
        specs.append(ContenderSpec(f"process-{ordering}", f"pyrallel process engine ({ordering})",
                                   "pyrallel", "main", (*module, "process"), _ordered(_OURS, ordering), ordering,
                                   cpu_bound=True))
    specs.append(ContenderSpec("async-key-uvloop", "pyrallel async engine (key) on uvloop", "pyrallel", "main",
                               (*module, "async"), _ordered(_OURS, "key"), "key", extra=("--loop", "uvloop")))
    specs.append(ContenderSpec("share", "pyrallel share group (KIP-932)", "pyrallel", "main", (*module, "share"),
                               Guarantees("no", "n/a: each record is accepted on its own, under the broker's lock",
                                          "n/a: no offsets, the broker redelivers what was not accepted"),
                               "unordered"))
    specs.append(ContenderSpec("async-key-eos", "pyrallel async engine (key), exactly-once", "pyrallel", "main",
                               (*module, "async-eos"),
                               Guarantees("yes", "yes: outputs and offsets in one transaction per second",
                                          "yes: the offset map goes with the transaction's offsets"), "key"))
    specs += [
        ContenderSpec("aio-gather", "AIOConsumer + asyncio.gather per batch", "peer", "main", ("aio_gather.py",),
                      _BATCH, group="AIOConsumer + asyncio.gather", extra=SAME_FETCH),
        ContenderSpec("thread-pool", "thread pool per batch (ThreadPoolExecutor.map)", "peer", "main",
                      ("thread_pool.py",), _BATCH, group="a thread pool per batch", extra=SAME_FETCH),
        ContenderSpec("arroyo", "arroyo RunTaskWithMultiprocessing", "peer", "arroyo",
                      ("arroyo_multiprocessing.py",),
                      Guarantees("no: batches of one key run in parallel", "yes: results in offset order, "
                                 "commit once per second", "no: a restart re-runs everything uncommitted"),
                      group="arroyo", cpu_bound=True),
    ]
    for ordering in ("key", "partition", "unordered"):
        specs.append(ContenderSpec(f"pyrallel-1.0.0-async-{ordering}", f"pyrallel-consumer 1.0.0 async ({ordering})",
                                   "peer", "pyrallel-1.0.0", ("pyrallel_1_0_0.py", "async"),
                                   _ordered(_PYRALLEL_1, ordering), ordering, "pyrallel-consumer 1.0.0"))
        specs.append(ContenderSpec(f"pyrallel-1.0.0-process-{ordering}",
                                   f"pyrallel-consumer 1.0.0 process ({ordering})", "peer",
                                   "pyrallel-1.0.0", ("pyrallel_1_0_0.py", "process"),
                                   _ordered(_PYRALLEL_1, ordering), ordering, "pyrallel-consumer 1.0.0",
                                   cpu_bound=True))
        specs.append(ContenderSpec(f"java-pc-{ordering}", f"Java parallel-consumer ({ordering})", "peer", "java",
                                   (), _ordered(_JAVA, ordering), ordering, "Java parallel-consumer"))
    return specs


def command(spec: ContenderSpec, env: Environment, peers_dir: Path) -> list[str]:
    """The command line of a contender, before its benchmark arguments."""
    if not env.ready:
        raise ValueError(f"{spec.name} is unavailable: {env.reason}")
    args = list(spec.args)
    if args and args[0].endswith(".py"):
        args[0] = str(peers_dir / args[0])
    return [*env.prefix, *args]


# --- environments ------------------------------------------------------------------------------------------------


def main_environment() -> Environment:
    import confluent_kafka

    from pyrallel_consumer import __version__

    return Environment("main", (sys.executable,), f"pyrallel-consumer {__version__} (this repository)",
                       details={"confluent_kafka": f"confluent-kafka {confluent_kafka.__version__}"})


def python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def find_python(minimum: tuple[int, int], extra_dirs: Sequence[Path] = ()) -> str | None:
    """An interpreter of at least ``minimum``: this one, ``python3.N`` on PATH, or one under pyenv."""
    candidates = [sys.executable]
    candidates += [p for n in range(minimum[1], 21) if (p := shutil.which(f"python3.{n}"))]
    for root in (*extra_dirs, Path.home() / ".pyenv" / "versions"):
        if root.is_dir():
            candidates += [str(p) for p in sorted(root.glob("*/bin/python3"), key=_version_key)]
    for python in candidates:
        version = python_version(python)
        if version is not None and version >= minimum:
            return python
    return None


def _version_key(python: Path) -> tuple[int, ...]:
    """Oldest first, from a pyenv directory name such as 3.12.1."""
    return tuple(int(part) for part in re.findall(r"\d+", python.parent.parent.name)[:3])


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> str | None:
    """Run a set-up command; None when it worked, else the reason (the end of its output)."""
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=_SETUP_TIMEOUT_S, cwd=cwd,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{what} failed: {exc}"
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        return f"{what} failed (exit {done.returncode}): {tail}"
    return None


def venv_environment(name: str, path: Path, requirement: str, distribution: str,
                     minimum_python: tuple[int, int] = (3, 11)) -> Environment:
    """A virtualenv at ``path`` with ``requirement`` installed (created once; a marker file remembers it)."""
    python = path / "bin" / "python"
    marker = path / ".bench-requirement"
    if not (python.exists() and marker.exists() and marker.read_text().strip() == requirement):
        interpreter = find_python(minimum_python)
        if interpreter is None:
            return Environment(name, reason=f"{requirement} needs Python >= {minimum_python[0]}.{minimum_python[1]};"
                                            f" none found (looked at this interpreter, python3.N on PATH, pyenv)")
        log.info("Creating %s with %s and pip install %s", path, interpreter, requirement)
        shutil.rmtree(path, ignore_errors=True)
        reason = (_run([interpreter, "-m", "venv", str(path)], "python -m venv")
                  or _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
                          f"pip install {requirement}"))
        if reason:
            return Environment(name, reason=reason)
        marker.write_text(requirement + "\n")
    try:
        version = subprocess.run(
            [str(python), "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"],
            capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return Environment(name, reason=f"{distribution} is not importable in {path}: {exc}")
    found = python_version(str(python))
    py = f"{found[0]}.{found[1]}" if found else "?"
    return Environment(name, (str(python),), f"{distribution} {version} (Python {py})", details={"python": py})


def java_environment(java_dir: Path) -> Environment:
    """The Java harness, compiled with Maven; its classpath resolved from Maven Central."""
    java_dir = java_dir.resolve()
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            return Environment("java", reason=f"`{tool}` is not on PATH (Java 17+ and Maven 3 are needed)")
    pom = java_dir / "pom.xml"
    match = re.search(r"<parallel-consumer.version>([^<]+)<", pom.read_text()) if pom.exists() else None
    if match is None:
        return Environment("java", reason=f"{pom} is missing or names no parallel-consumer.version")
    classpath_file = java_dir / "target" / "classpath.txt"
    reason = _run(["mvn", "-q", "-B", "compile", "dependency:build-classpath",
                   f"-Dmdep.outputFile={classpath_file}"], "mvn compile (parallel-consumer-core from Maven Central)",
                  cwd=java_dir)
    if reason:
        return Environment("java", reason=reason)
    classpath = f"{java_dir / 'target' / 'classes'}:{classpath_file.read_text().strip()}"
    prefix = ("java", "-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classpath, "bench.PcPeer")
    return Environment("java", prefix, f"parallel-consumer-core {match.group(1)} (Java)")


def calibrated(env: Environment) -> Environment:
    """``env`` with the CPU-bound workload calibrated on its Python (in a fresh process, like the contenders)."""
    if not env.ready or env.name == "java":
        return env
    from pyrallel_tools.benchmark import harness

    code = (f"import sys; sys.path.insert(0, {str(Path(harness.__file__).parent)!r}); import harness; "
            "print(harness.calibrate())")
    try:
        out = subprocess.run([env.prefix[0], "-c", code], capture_output=True, text=True, timeout=120, check=True,
                             env={k: v for k, v in os.environ.items() if k != harness.LOOPS_ENV})
        return replace(env, loops_per_ms=float(out.stdout.strip()))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return replace(env, reason=f"calibrating the CPU-bound workload on {env.prefix[0]} failed: {exc}")


def prepare(peers_dir: Path, venv_root: Path, with_peers: bool) -> dict[str, Environment]:
    """Every environment; without ``with_peers`` only this virtualenv (the peers are then listed as skipped)."""
    envs = {"main": calibrated(main_environment())}
    if not with_peers:
        skipped = "peers not requested (--no-peers or a suite without peers)"
        return {**envs, **{n: Environment(n, reason=skipped) for n in ("pyrallel-1.0.0", "arroyo", "java")}}
    envs["pyrallel-1.0.0"] = calibrated(venv_environment(
        "pyrallel-1.0.0", venv_root / ".venv-peer-pyrallel-1.0.0", PYRALLEL_PEER_REQUIREMENT, "pyrallel-consumer",
        (3, 12)))
    envs["arroyo"] = calibrated(venv_environment("arroyo", venv_root / ".venv-peer-arroyo", ARROYO_REQUIREMENT,
                                                 "sentry-arroyo"))
    envs["java"] = java_environment(peers_dir / "java")
    for env in envs.values():
        if not env.ready:
            log.warning("Peer environment %s unavailable: %s", env.name, env.reason)
    return envs
