"""``pyrallel bench --profile CONTENDER``: one contender's throughput run under cProfile, then under py-spy.

* cProfile (standard library) profiles the contender's main process: ``<out>/profile-<id>.pstats`` and the top
  functions by own and by cumulative time in ``profile-<id>.txt``;
* py-spy (installed on first use in ``benchmarks/.venv-tools``) samples the contender and its worker processes
  from outside, native threads included: ``profile-<id>-flame.svg``. When py-spy cannot be installed or cannot
  attach (no ptrace permission), that is written to the text file instead.
"""

from __future__ import annotations

import io
import logging
import pstats
from pathlib import Path

from pyrallel_tools.benchmark.measure import run_to_result
from pyrallel_tools.benchmark.peers import catalog, prepare, venv_environment
from pyrallel_tools.benchmark.production import prepared_topic
from pyrallel_tools.benchmark.results import BenchReport
from pyrallel_tools.benchmark.runner import Bench, Plan, new_group

log = logging.getLogger(__name__)


class ProfileError(RuntimeError):
    """The contender cannot be profiled; the message says why."""


def profile_contender(bootstrap: str, contender_id: str, workload: str, keys: int, plan: Plan, out_dir: Path,
                      peers_dir: Path, venv_root: Path, run_dir: Path) -> list[Path]:
    """Profile one contender on a fresh topic; return the files written."""
    specs = {spec.id: spec for spec in catalog()}
    if contender_id not in specs:
        raise ProfileError(f"unknown contender {contender_id!r}; one of: {', '.join(specs)}")
    spec = specs[contender_id]
    if spec.environment == "java":
        raise ProfileError("the Java peer is not profiled here (use a JVM profiler)")
    # Contenders run with the run directory as their working directory: every path handed to them is absolute.
    peers_dir, run_dir, venv_root = peers_dir.resolve(), run_dir.resolve(), venv_root.resolve()
    out_dir = out_dir.resolve()
    envs = prepare(peers_dir, venv_root, with_peers=spec.family == "peer")
    if not envs[spec.environment].ready:
        raise ProfileError(f"{spec.name} is unavailable: {envs[spec.environment].reason}")
    run_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(bootstrap, plan, out_dir, peers_dir, run_dir, envs, BenchReport({}, {}), specs)
    records = plan.records[workload]
    topic = prepared_topic(bootstrap, f"profile-{keys}k", records, keys, plan.partitions)

    def argv() -> list[str]:
        return bench.argv(contender_id, topic=topic, group=new_group(contender_id), workload=workload,
                          limit=records, max_seconds=plan.max_seconds)

    stats_path = out_dir / f"profile-{contender_id}.pstats"
    text_path = out_dir / f"profile-{contender_id}.txt"
    base = argv()
    profiled = [base[0], "-m", "cProfile", "-o", str(stats_path), *base[1:]]
    timeout = plan.join_timeout_s + plan.max_seconds + 120
    env = bench.env(contender_id)
    outcome = run_to_result(profiled, env, run_dir / f"profile-{contender_id}.stderr", run_dir, timeout)
    if outcome.result.get("error"):
        raise ProfileError(f"{spec.name} failed under cProfile: {outcome.result['error']}")
    if not stats_path.exists():
        raise ProfileError(f"{spec.name} ran under cProfile but wrote no {stats_path}")
    report = [f"{spec.name}, {workload}, {keys:,} keys, under cProfile: {outcome.result.get('records_per_s')} rec/s "
              f"(cProfile slows pure-Python code down; compare functions, not rates)\n"]
    for order in ("tottime", "cumulative"):
        buffer = io.StringIO()
        pstats.Stats(str(stats_path), stream=buffer).strip_dirs().sort_stats(order).print_stats(30)
        report.append(f"--- top 30 by {order} ---\n{buffer.getvalue()}")
    written = [stats_path, text_path]
    flame = out_dir / f"profile-{contender_id}-flame.svg"
    tools = venv_environment("py-spy", venv_root / ".venv-tools", "py-spy", "py-spy")
    if not tools.ready:
        report.append(f"No flame graph: {tools.reason}\n")
    else:
        py_spy = str(Path(tools.prefix[0]).parent / "py-spy")
        sampled = [py_spy, "record", "--rate", "250", "--subprocesses", "--nonblocking", "--format", "flamegraph",
                   "-o", str(flame), "--", *argv()]
        spied = run_to_result(sampled, env, run_dir / f"profile-{contender_id}-py-spy.stderr", run_dir, timeout)
        if flame.exists():
            written.append(flame)
            report.append(f"py-spy flame graph: {flame.name} ({spied.result.get('records_per_s')} rec/s while "
                          "sampled)\n")
        else:
            report.append(f"No flame graph: py-spy wrote none ({spied.result.get('error', 'no error reported')})\n")
    text_path.write_text("\n".join(report))
    log.info("Profile of %s written: %s", contender_id, ", ".join(str(p) for p in written))
    return written
