"""The local schema registry's tooling in a bad environment: one clear sentence, never a traceback, and `down`
cleans up after a registry that died."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyrallel_tools.jdk import java_at_least
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localregistry.distribution import APICURIO_VERSION, RUNNER, ensure_registry
from pyrallel_tools.localregistry.server import LocalRegistry

pytestmark = pytest.mark.unit

CLI = [sys.executable, "-m", "pyrallel_tools.cli", "registry"]


def test_missing_maven_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYRALLEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalKafkaError, match=r"Maven \(mvn\) was not found. It resolves the schema registry"):
        ensure_registry()


def test_maven_failure_shows_its_output_and_leaves_no_half_folder(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    fake_mvn = tmp_path / "bin" / "mvn"
    fake_mvn.parent.mkdir()
    fake_mvn.write_text("#!/bin/sh\necho 'Could not find artifact io.apicurio:apicurio-registry-app'\nexit 1\n")
    fake_mvn.chmod(0o755)
    monkeypatch.setenv("PYRALLEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{fake_mvn.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(LocalKafkaError, match=r"(?s)Maven could not resolve Apicurio Registry.*Could not find"):
        ensure_registry()
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_a_jdk_too_old_for_the_tool_is_refused_by_name() -> None:
    with pytest.raises(LocalKafkaError, match=r"The registry needs Java 999 or newer; none was found"):
        java_at_least(999, "The registry")


def test_address_without_a_registry_says_how_to_start_one(tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "address", "--run-dir", str(tmp_path / "none")], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 1
    assert "run `pyrallel registry up` first" in out.stderr
    assert "Traceback" not in out.stderr


def test_down_cleans_up_after_a_registry_that_died(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "tmp").mkdir(parents=True)
    (run_dir / "registry.log").write_text("the registry's last words\n")
    (run_dir / "state.json").write_text(json.dumps({"version": "3.3.3", "port": 1, "management_port": 2,
                                                    "pid": 2**22 + 7}))
    down = subprocess.run([*CLI, "down", "--run-dir", str(run_dir)], capture_output=True, text=True, check=False)
    assert down.returncode == 0, down.stderr
    assert not run_dir.exists()


def test_a_registry_that_fails_to_start_is_reported_with_its_log(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    jdk = tmp_path / "jdk" / "bin" / "java"
    jdk.parent.mkdir(parents=True)
    jdk.write_text('#!/bin/sh\nif [ "$1" = -version ]; then echo \'openjdk version "25" 2025-09-16\' >&2; exit 0; fi\n'
                   "echo 'Port 8080 seems to be in use by another process'\nexit 1\n")
    jdk.chmod(0o755)
    distribution = tmp_path / "cache" / f"apicurio-{APICURIO_VERSION}"
    distribution.mkdir(parents=True)
    (distribution / RUNNER).write_bytes(b"")
    (distribution / ".complete").write_text("a distribution resolved earlier\n")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    monkeypatch.setenv("PYRALLEL_CACHE_DIR", str(tmp_path / "cache"))
    registry = LocalRegistry(tmp_path / "run")

    with pytest.raises(LocalKafkaError, match=r"(?s)exited during start.*Port 8080 seems to be in use"):
        registry.up()

    assert registry.state is None
    assert registry.log_file.read_text().strip() == "Port 8080 seems to be in use by another process"
