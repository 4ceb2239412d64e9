"""Resolve the runnable Apicurio Registry from Maven Central into the per-user cache, once.

Apicurio's release attaches its runnable Quarkus application to ``io.apicurio:apicurio-registry-app`` as a tar.gz
(classifier ``all``: ``quarkus-run.jar`` with ``lib/``, ``app/`` and ``quarkus/``). Maven resolves and unpacks it
(``localregistry/pom.xml``, ``dependency:unpack``) into ``<cache>/apicurio-<version>/``, so neither Docker nor a
download site is needed, and ``MAVEN_OPTS`` / ``~/.m2/settings.xml`` apply as for the Kafka jars. Why this
artifact and not a Quarkus build of the application jar: docs/decisions.md.

The folder name is the cache key; a marker file written last makes a later call a no-op that runs neither Maven nor
Java; the unpacking goes into a private staging folder renamed into place in one step, under ``build_lock``, so two
processes resolving at once never see half a distribution. Called on the caller's thread by ``make registry`` and
by ``LocalRegistry.up``; Maven is bounded by a timeout.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.jars import cache_root
from pyrallel_tools.toolcache import build_lock, run_checked

log = logging.getLogger(__name__)

APICURIO_VERSION = "3.3.3"
"""The newest Apicurio Registry whose runnable distribution Maven Central served on 2026-12-06."""
MIN_JAVA = 21
"""Apicurio Registry 3.3 is Java 21 bytecode (its ``apicurio-registry-app`` POM compiles with release 21)."""
RUNNER = "quarkus-run.jar"
_MARKER = ".complete"
_MAVEN_TIMEOUT_S = 900.0


def registry_dir(version: str = APICURIO_VERSION) -> Path:
    """``<cache>/apicurio-<version>``: the unpacked distribution, ``RUNNER`` at its top."""
    return cache_root() / f"apicurio-{version}"


def ensure_registry() -> Path:
    """The folder of the runnable registry (``RUNNER`` in it), resolved with Maven the first time only.

    Raises ``LocalKafkaError`` when Maven is missing, cannot resolve the distribution (with its last lines), or the
    archive holds no ``RUNNER``.
    """
    folder = registry_dir()
    if (folder / _MARKER).exists():
        return folder
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError("Maven (mvn) was not found. It resolves the schema registry (Apicurio Registry) from "
                              "Maven Central (for example: apt-get install maven).")
    with build_lock(folder):  # a second process waits for the first one's folder instead of resolving it again
        if (folder / _MARKER).exists():
            return folder
        started = time.monotonic()
        log.info("Resolving Apicurio Registry %s with Maven into %s", APICURIO_VERSION, folder)
        shutil.rmtree(folder, ignore_errors=True)  # what an interrupted earlier run left, without its marker
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-staging-", dir=folder.parent))
        try:
            staging.chmod(0o755)  # mkdtemp's 0700 would stay on the renamed folder
            _unpack(mvn, staging)
            if not (staging / RUNNER).is_file():
                raise LocalKafkaError(f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all holds no "
                                      f"{RUNNER}; its layout changed and {__name__} needs updating")
            (staging / _MARKER).write_text(f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all\n")
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("Resolved Apicurio Registry %s in %.1fs", APICURIO_VERSION, time.monotonic() - started)
    return folder


def _unpack(mvn: str, target: Path) -> None:
    # The plugin's marker files go to a temporary folder: by default they would land in target/ beside the POM,
    # which is inside the installed package.
    with tempfile.TemporaryDirectory(prefix="apicurio-markers-") as markers, \
            resources.as_file(resources.files("pyrallel_tools.localregistry") / "pom.xml") as pom:
        run_checked(
            [mvn, "-B", "-q", "-f", str(pom), "dependency:unpack", f"-Dapicurio.version={APICURIO_VERSION}",
             f"-Dregistry.outputDirectory={target}", f"-Dregistry.markersDirectory={markers}"],
            timeout_s=_MAVEN_TIMEOUT_S,
            failure=f"Maven could not resolve Apicurio Registry {APICURIO_VERSION} "
                    f"(io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all). Is Maven Central reachable?",
        )
