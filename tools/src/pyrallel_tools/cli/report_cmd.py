"""``pyrallel report``: the blue/green test report from the scenario runs' JSON files."""

from __future__ import annotations

from pathlib import Path

import click

from pyrallel_tools.bluegreen.reporting.build import build_report
from pyrallel_tools.bluegreen.reporting.handover import DEFAULT_REBALANCE_RESULTS
from pyrallel_tools.bluegreen.reporting.load import ReportError


@click.command("report")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("report/run"),
              show_default=True, help="Directory with one JSON file per scenario run.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Where test-report.md and figures/ are written.")
@click.option("--rebalance-results", "rebalance_results", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_REBALANCE_RESULTS, show_default=True,
              help="Results of `pyrallel bench --suite rebalance`, shown as the plain-group hand-over beside the "
                   "strategies; a missing or unreadable file is noted in the report, not an error.")
def report(runs_dir: Path, out_dir: Path, rebalance_results: Path) -> None:
    """Write OUT/test-report.md and OUT/figures/*.png; unreadable run files are listed in the report."""
    try:
        path = build_report(runs_dir, out_dir, rebalance_results)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Report written to {path.resolve()}")
