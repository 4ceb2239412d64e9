"""Resolve the Apache Kafka jars from Maven Central into a per-user cache.

The broker is only a test and demo fixture; Maven resolves it so that no download site or Docker is
needed. A marker file makes the second call a no-op that touches neither Maven nor the network.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from pyrallel_tools.localkafka.errors import LocalKafkaError

log = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.4.0"
"""The newest Apache Kafka release; ``pyrallel kafka up --kafka-version`` takes any 4.x release Maven Central has."""
COMPATIBILITY_VERSIONS = ("4.1.2", "4.2.2", "4.3.2", "4.4.0")
"""The newest patch of each minor release the compatibility matrix (``make test-matrix``) runs against."""
KAFKA_VERSION_ENV = "PYRALLEL_KAFKA_VERSION"
"""Names the Kafka release a local cluster starts with when the caller gives none: the compatibility matrix sets it
for its pytest runs so that tests starting their own broker (``LocalKafka(...).up()``) run the matrix's version."""
MIN_JAVA_MAJOR = 17
_CONNECT_VERSION = {"4.4.0": "4.3.1", "4.3.2": "4.3.1", "4.2.2": "4.2.0", "4.2.1": "4.2.0"}
"""Releases whose ``connect-file`` jar (the FileStreamSink of strategy E) Maven Central did not serve on 2026-12-06,
mapped to the nearest earlier release it served: the Connect worker runs that whole release (runtime and plugin),
as a plugin of one release does not load in the runtime of the next (4.4 moved ``AppInfoParser``, which 4.3.1's
FileStreamSink needs)."""
_VERSION_RE = re.compile(r"^4\.\d+\.\d+$")
_MARKER = ".complete"


def cache_root() -> Path:
    """Per-user cache, overridable with PYRALLEL_CACHE_DIR (CI and tests may point it elsewhere)."""
    override = os.environ.get("PYRALLEL_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pyrallel"


def check_version(version: str) -> str:
    """Refuse what is not a 4.x release number (3.x still needs ZooKeeper-era settings the local cluster lacks)."""
    if not _VERSION_RE.match(version):
        raise LocalKafkaError(
            f"Kafka version {version!r} is not supported: give a 4.x release such as {DEFAULT_KAFKA_VERSION} "
            f"(tested: {', '.join(COMPATIBILITY_VERSIONS)})"
        )
    return version


def default_version() -> str:
    """The Kafka release of a local cluster whose caller names none: ``$PYRALLEL_KAFKA_VERSION`` when set, else
    ``DEFAULT_KAFKA_VERSION``. The one place the variable is read (``LocalKafka.up``; the CLI names it as the
    envvar of ``--kafka-version``)."""
    return os.environ.get(KAFKA_VERSION_ENV) or DEFAULT_KAFKA_VERSION


def connect_version(version: str) -> str:
    """The release of the Connect worker started beside brokers of ``version``: the same, or the nearest earlier
    one whose ``connect-file`` jar Maven Central serves (a Connect worker of one release talks to brokers of another
    like any client). ``LocalKafka`` starts Connect from ``ensure_jars(connect_version(v))``; every jar set
    resolves that ``connect-file`` release, the only one Maven Central has near ``version``."""
    return _CONNECT_VERSION.get(version, version)


def libs_dir(version: str | None = None) -> Path:
    """The cached jars of ``version`` (default: ``default_version()``)."""
    return cache_root() / f"kafka-{check_version(version or default_version())}" / "libs"


def java_executable() -> str:
    """Return the java binary, refusing a missing or too old one with a message that says what to do."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise LocalKafkaError(
            "Java was not found. The local Kafka broker needs Java 17 or newer "
            "(for example: apt-get install openjdk-17-jre-headless), or set JAVA_HOME."
        )
    try:
        out = subprocess.run(
            [candidate, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"Could not run {candidate} -version: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise LocalKafkaError(f"Could not read the Java version from: {out.stderr.strip()[:200]}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise LocalKafkaError(
            f"Java {major} found at {candidate}; Kafka 4 needs Java {MIN_JAVA_MAJOR} or newer."
        )
    return candidate


def ensure_jars(version: str | None = None, quiet: bool = True) -> Path:
    """Make sure every jar of the local Kafka ``version`` is in the cache (one directory per version); download
    with Maven only the first time. ``version`` defaults to ``default_version()``."""
    version = check_version(version or default_version())
    target = libs_dir(version)
    if (target / _MARKER).exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "Maven (mvn) was not found. It resolves the Kafka jars from Maven Central "
            "(for example: apt-get install maven)."
        )
    java_executable()
    target.mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files("pyrallel_tools.localkafka") / "pom.xml") as pom:
        cmd = [
            mvn,
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={target}",
            f"-Dkafka.version={version}",
            f"-Dconnect-file.version={connect_version(version)}",
        ]
        if quiet:
            cmd.insert(1, "-q")
        log.info("Resolving Kafka %s jars with Maven into %s", version, target)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise LocalKafkaError(
            f"Maven could not resolve the Kafka {version} jars (exit {proc.returncode}). "
            f"Is Maven Central reachable?\n{tail}"
        )
    if not any(target.glob("kafka_2.13-*.jar")):
        raise LocalKafkaError(f"Maven finished but no Kafka jar is in {target}")
    (target / _MARKER).write_text(version + "\n")
    return target
