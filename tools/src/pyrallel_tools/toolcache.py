"""What every cached tool of the test bed shares: one builder per cache folder at a time, and bounded subprocesses
whose failure says what they printed last.

The Go-built binaries (``gobuild``) and the third-party CRDs (``localk8s.crds``) each fill a folder of
``<cache>/`` once; two ``make test`` runs starting at once (or a test session and ``make k8s``) would otherwise both
spend minutes building the same thing. Called on the caller's thread.
"""

from __future__ import annotations

import fcntl
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pyrallel_tools.localkafka.errors import LocalKafkaError


@contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<folder>.lock`` (next to the folder) for the duration of a build.

    A second builder waits here, then finds the first one's marker and builds nothing. The lock is released when the
    process ends, whatever way it ends, so a killed build never leaves a stale lock behind.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f"{folder.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_checked(command: list[str], *, timeout_s: float, failure: str, cwd: Path | str | None = None,
                env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command``; ``LocalKafkaError`` starting with ``failure`` when it cannot start, overruns ``timeout_s``
    or exits non-zero (with the last 15 lines it printed)."""
    try:
        proc = subprocess.run(command, cwd=cwd, env=None if env is None else dict(env), capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(f"{failure}: `{' '.join(command)}` did not finish within {timeout_s:.0f}s") from exc
    except OSError as exc:
        raise LocalKafkaError(f"{failure}: could not run {command[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise LocalKafkaError(f"{failure}: `{' '.join(command)}` exited {proc.returncode}. Last lines:\n"
                              f"{last_lines(proc.stdout + proc.stderr)}")
    return proc


def last_lines(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
