"""``pyrallel demo``: the main job of ``make demo`` — scenario 1 of strategies B, C and E, then the report."""

from __future__ import annotations

from pathlib import Path

import click

from pyrallel_tools.bluegreen.run_spec import RunOptions
from pyrallel_tools.cli.scenario_cmds import plan, run_plan


@click.command()
@click.option("--bootstrap-servers", envvar="PYRALLEL_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap address (env PYRALLEL_BOOTSTRAP_SERVERS).")
@click.option("--connect-url", envvar="PYRALLEL_CONNECT_URL", required=True,
              help="Kafka Connect REST URL (env PYRALLEL_CONNECT_URL).")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True)
def demo(bootstrap_servers: str, connect_url: str, report_dir: Path) -> None:
    """Switch blue -> green with each strategy on the local Kafka, validate every run, write the report."""
    runs_dir = report_dir / "run"
    for stale in runs_dir.glob("*.json") if runs_dir.exists() else []:
        stale.unlink()
    options = RunOptions(bootstrap=bootstrap_servers, connect_url=connect_url, out_dir=runs_dir,
                         work_dir=report_dir / "work")
    runs = plan(["C", "B", "E"], [1])
    failed, path = run_plan(runs, options, report_dir)
    click.echo(f"{len(runs) - failed} of {len(runs)} runs passed.")
    click.echo(f"Report: {path.resolve()}")
    click.echo(f"Figures: {(path.parent / 'figures').resolve()}")
    if failed:
        raise SystemExit(1)
