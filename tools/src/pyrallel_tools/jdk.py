"""Find a JDK of a given release or newer for the test bed's Java tools that need more than the Java 17 default.

Strimzi's CRD generator (``localk8s.crds``) and the local schema registry (``localregistry``) are Java 21 bytecode,
while Kafka runs on Java 17 (``localkafka.jars.java_executable``). A machine with Java 17 as its default often has a
newer JDK installed beside it, so the search does not stop at ``JAVA_HOME`` and ``PATH``: it also looks under
``/usr/lib/jvm``. Called on the caller's thread; each probe (``java -version``) is bounded by a timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from pyrallel_tools.localkafka.errors import LocalKafkaError

_JAVA_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')
_PROBE_TIMEOUT_S = 60.0


def java_major(java: str) -> int | None:
    """The release of the ``java`` binary at ``java`` (``17``, ``25``; ``8`` for ``1.8``), None when unknown."""
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _JAVA_VERSION_RE.search(proc.stderr + proc.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def java_at_least(minimum: int, needed_by: str) -> str:
    """A ``java`` of release ``minimum`` or newer: ``$JAVA_HOME``'s, the one on PATH, else one under /usr/lib/jvm.

    Raises ``LocalKafkaError`` naming ``needed_by`` (e.g. "Strimzi's CRD generator") and every binary looked at.
    """
    candidates: list[str] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(str(Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    candidates += [str(p) for p in sorted(Path("/usr/lib/jvm").glob("*/bin/java"))]
    seen: list[str] = []
    for candidate in candidates:
        if candidate in seen or not Path(candidate).is_file():
            continue
        seen.append(candidate)
        major = java_major(candidate)
        if major is not None and major >= minimum:
            return candidate
    raise LocalKafkaError(
        f"{needed_by} needs Java {minimum} or newer; none was found (looked at "
        f"{', '.join(seen) or 'no java at all'}). Set JAVA_HOME to a JDK {minimum}+."
    )
