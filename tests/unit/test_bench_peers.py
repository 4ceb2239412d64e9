"""pyrallel bench contenders and their environments without a broker: the catalog, the command lines, the plan,
and a peer that cannot be set up being reported with its reason."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pyrallel_tools.benchmark import peers
from pyrallel_tools.benchmark.peers import Environment, catalog, command, java_environment, venv_environment
from pyrallel_tools.benchmark.runner import (
    CPU_CONTENDERS,
    CPU_RATE_CONTENDERS,
    IO_CONTENDERS,
    IO_ORDERINGS,
    IO_RATE_CONTENDERS,
    NOOP_CONTENDERS,
    UVLOOP_CONTENDER,
    Plan,
    plan_for,
)

pytestmark = pytest.mark.unit


def test_catalog_ids_are_unique_and_every_planned_contender_exists() -> None:
    ids = [spec.id for spec in catalog()]
    assert len(ids) == len(set(ids))
    planned = {*NOOP_CONTENDERS, *IO_CONTENDERS, *IO_ORDERINGS, *CPU_CONTENDERS, *IO_RATE_CONTENDERS,
               *CPU_RATE_CONTENDERS, "process-key", UVLOOP_CONTENDER}
    assert planned <= set(ids) and set(Plan().contender_ids()) == planned


def test_every_peer_script_exists() -> None:
    peers_dir = Path(__file__).resolve().parents[2] / "benchmarks" / "peers"
    scripts = {spec.args[0] for spec in catalog() if spec.args and spec.args[0].endswith(".py")}
    assert scripts and all((peers_dir / script).is_file() for script in scripts)
    assert (peers_dir / "java" / "pom.xml").is_file()


def test_command_puts_scripts_under_the_peers_directory(tmp_path: Path) -> None:
    specs = {spec.id: spec for spec in catalog()}
    env = Environment("main", ("/venv/bin/python",), "v")
    assert command(specs["aio-gather"], env, tmp_path) == ["/venv/bin/python", str(tmp_path / "aio_gather.py")]
    assert command(specs["async-key"], env, tmp_path) == [
        "/venv/bin/python", "-m", "pyrallel_tools.benchmark.contenders", "async"]
    java = Environment("java", ("java", "-cp", "x", "bench.PcPeer"), "v")
    assert command(specs["java-pc-unordered"], java, tmp_path) == ["java", "-cp", "x", "bench.PcPeer"]


def test_an_unavailable_environment_makes_its_contenders_unavailable_with_the_reason(tmp_path: Path) -> None:
    spec = next(s for s in catalog() if s.id == "pyrallel-1.0.0-async-key")
    env = Environment("pyrallel-1.0.0", reason="pyrallel-consumer==1.0.0 needs Python >= 3.12; none found")
    info = spec.info(env)
    assert not info.available and info.reason == env.reason
    with pytest.raises(ValueError, match=r"unavailable: pyrallel-consumer==1\.0\.0 needs Python >= 3\.12"):
        command(spec, env, tmp_path)


def test_no_suitable_python_is_a_reason_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "find_python", lambda minimum, extra_dirs=(): None)
    env = venv_environment("pyrallel-1.0.0", tmp_path / "venv", "pyrallel-consumer==1.0.0", "pyrallel-consumer",
                           (3, 12))
    assert not env.ready
    assert env.reason.startswith("pyrallel-consumer==1.0.0 needs Python >= 3.12; none found")


def test_a_failing_pip_install_is_reported_with_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "find_python", lambda minimum, extra_dirs=(): sys.executable)
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], what: str, cwd: Path | None = None) -> str | None:
        calls.append(cmd)
        return None if what == "python -m venv" else f"{what} failed (exit 1): No matching distribution found"

    monkeypatch.setattr(peers, "_run", fake_run)
    env = venv_environment("arroyo", tmp_path / "venv", "sentry-arroyo", "sentry-arroyo")
    assert env.reason == "pip install sentry-arroyo failed (exit 1): No matching distribution found"
    assert len(calls) == 2


def test_java_without_maven_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers.shutil, "which", lambda tool: None if tool == "mvn" else "/usr/bin/" + tool)
    env = java_environment(tmp_path)
    assert env.reason == "`mvn` is not on PATH (Java 17+ and Maven 3 are needed)"


def test_prepare_without_peers_lists_them_as_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "calibrated", lambda env: env)
    envs = peers.prepare(tmp_path, tmp_path, with_peers=False)
    assert envs["main"].ready
    assert all(not envs[n].ready and "not requested" in envs[n].reason for n in ("pyrallel-1.0.0", "arroyo", "java"))


def test_plan_cells_run_every_ordering_only_at_the_fewest_keys() -> None:
    cells = Plan().cells()
    assert ("async-unordered", "sleep5ms", 100) in cells
    assert ("async-unordered", "sleep5ms", 1000) not in cells
    assert ("process-key", "cpu2ms", 1000) in cells and ("process-key", "noop", 1000) in cells
    assert [c for c in cells if c[0] == UVLOOP_CONTENDER] == [(UVLOOP_CONTENDER, "noop", 1000)]
    assert Plan().topic_keys() == [100, 1000, 10_000]
    assert len(cells) == len(set(cells))


def test_plan_for_applies_overrides_and_keeps_the_other_record_counts() -> None:
    plan = plan_for("all", records={"cpu2ms": 100}, max_seconds=None, with_peers=False)
    assert plan.records == {"noop": 200_000, "sleep5ms": 100_000, "cpu2ms": 100}
    assert not plan.with_peers and plan.max_seconds == Plan().max_seconds
    assert plan_for("cpu").workloads == ("cpu2ms", "noop")
    with pytest.raises(ValueError, match="unknown suite 'x'"):
        plan_for("x")
