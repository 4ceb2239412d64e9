"""``build_report``: the blue/green test report, every scenario run's file in, ``test-report.md`` and PNG plots out.

The scenario runner writes one JSON file per run; the report only reads them, so it can be rebuilt (or built
on another machine) without a broker.  Beside the strategies it shows the rebalance benchmark's plain-group
hand-over, when that benchmark's results file is there.  Called by ``pyrallel report`` and, after its runs, by
``pyrallel scenario run``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyrallel_tools.bluegreen.reporting.handover import DEFAULT_REBALANCE_RESULTS, read_handover
from pyrallel_tools.bluegreen.reporting.load import ReportError, load_runs
from pyrallel_tools.bluegreen.reporting.markdown import render_report
from pyrallel_tools.bluegreen.reporting.plots import plot_run

__all__ = ["FIGURES_DIR", "REPORT_NAME", "build_report"]

log = logging.getLogger(__name__)

REPORT_NAME = "test-report.md"
FIGURES_DIR = "figures"


def build_report(runs_dir: Path, out_dir: Path, rebalance_results: Path | None = DEFAULT_REBALANCE_RESULTS) -> Path:
    """Write ``out_dir/test-report.md`` and ``out_dir/figures/*.png`` from the run files; returns the markdown path.

    ``rebalance_results`` (relative to the current directory) is ``pyrallel bench --suite rebalance``'s results
    file; missing or unreadable, the report says so in one line. None leaves the plain-group hand-over out.
    """
    runs, skipped = load_runs(runs_dir)
    if not runs:
        raise ReportError(f"none of the {len(skipped)} run file(s) in {runs_dir} could be read: "
                          + "; ".join(f"{p.name}: {why}" for p, why in skipped))
    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures = {run.path: plot_run(run, figures_dir) for run in runs}
    path = out_dir / REPORT_NAME
    handover = None if rebalance_results is None else read_handover(rebalance_results)
    path.write_text(render_report(runs, skipped, figures, runs_dir, out_dir, handover), encoding="utf-8")
    log.info("Report written to %s (%d runs, %d skipped)", path, len(runs), len(skipped))
    return path
