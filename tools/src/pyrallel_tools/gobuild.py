"""Go-built tools of the test bed (Toxiproxy, etcd, kube-apiserver, Helm, promtool), built once into the cache.

Each tool lives in ``<cache>/<name>-<versions>/bin/``: the folder name is the cache key, so a version bump
builds anew and an old folder is never reused. A marker file written after the last binary makes a later call a
no-op; a build goes into a private staging folder and is renamed into place in one step, so two processes building
at once never see half a binary. Go's own module and build caches stay the user's defaults (``GOMODCACHE``,
``GOCACHE``), so a rebuild after wiping our cache downloads nothing Go already has.

Called on the caller's thread by the ``ensure_*`` functions (``make test`` runs them before any test); every build
is bounded by a timeout.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.jars import cache_root
from pyrallel_tools.toolcache import build_lock, run_checked

log = logging.getLogger(__name__)

MIN_GO = "1.23"
_MARKER = ".complete"


@dataclass(frozen=True, slots=True)
class GoBuild:
    """One binary: ``command`` run in ``cwd`` (an empty folder when None) writes ``output`` into the staging folder.

    ``{out}`` in ``command`` is replaced by the staging folder (for ``go build -o {out}/NAME``); ``go install``
    writes there through ``GOBIN``. A build inside one of our wrapper modules passes ``-mod=readonly``: the
    committed go.mod and go.sum say what is built, and Go must not rewrite them.
    """

    binary: str
    command: Sequence[str]
    output: str
    cwd: Path | None = None
    timeout_s: float = 1200.0
    env: dict[str, str] = field(default_factory=dict)
    inputs: tuple[Path, ...] = ()
    """Files of ours the binary is built from (a wrapper module's go.mod and go.sum): an edit rebuilds it even
    when no version in the cache key moved."""


def tool_dir(key: str) -> Path:
    """``<cache>/<key>``: ``key`` names the tool and its versions, e.g. ``toxiproxy-v2.12.0``."""
    return cache_root() / key


def ensure_go_tools(key: str, builds: Sequence[GoBuild], what: str) -> Path:
    """The ``bin`` folder of ``<cache>/<key>`` holding every binary of ``builds``, built the first time only.

    Builds run one after the other (two cores: a parallel ``go build`` of kube-apiserver and etcd only thrashes),
    under ``build_lock``: a second process waits for the first one's build instead of repeating it. Raises
    ``LocalKafkaError`` naming the tool, the command and the last lines Go printed when one fails.
    """
    folder = tool_dir(key)
    bin_dir = folder / "bin"
    marker = folder / _MARKER
    inputs = sorted({p for b in builds for p in b.inputs})
    stamp = f"{key}\n" + (f"{_digest(inputs)}\n" if inputs else "")

    def complete() -> bool:
        return (marker.exists() and marker.read_text() == stamp
                and all((bin_dir / b.binary).exists() for b in builds))

    if complete():
        return bin_dir
    go = shutil.which("go")
    if go is None:
        raise LocalKafkaError(
            f"Go was not found. {what} is built with Go, which needs Go {MIN_GO} or newer on PATH "
            "(see https://go.dev/doc/install)."
        )
    with build_lock(folder):
        if complete():
            return bin_dir
        if marker.exists():  # built from other inputs: build everything anew
            marker.unlink()
            shutil.rmtree(bin_dir, ignore_errors=True)
        bin_dir.mkdir(parents=True, exist_ok=True)
        for build in builds:
            if not (bin_dir / build.binary).exists():
                _build_one(go, build, folder, bin_dir, what)
        marker.write_text(stamp)
    return bin_dir


def _digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _build_one(go: str, build: GoBuild, folder: Path, bin_dir: Path, what: str) -> None:
    staging = Path(tempfile.mkdtemp(prefix="build-", dir=folder))
    command = [go if part == "go" else part.replace("{out}", str(staging)) for part in build.command]
    env = dict(os.environ, GOBIN=str(staging), **build.env)
    log.info("Building %s (%s) into %s; the first build takes minutes", build.binary, what, bin_dir)
    started = time.monotonic()
    try:
        # `go install pkg@version` ignores the cwd, but a go.mod or go.work around the caller's cwd must not be
        # able to change what is built: without a module folder of our own, run from an empty folder.
        with tempfile.TemporaryDirectory(prefix="go-build-") as empty:
            run_checked(command, timeout_s=build.timeout_s, cwd=build.cwd or empty, env=env,
                        failure=f"Building {build.binary} ({what}) failed; it needs Go {MIN_GO} or newer and the Go "
                                "module proxy")
        built = staging / build.output
        if not built.exists():
            raise LocalKafkaError(f"Building {build.binary} ({what}) wrote no {build.output} into {staging}")
        os.replace(built, bin_dir / build.binary)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("Built %s in %.1fs", build.binary, time.monotonic() - started)
