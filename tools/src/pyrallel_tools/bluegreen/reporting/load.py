"""The report's input: every run file of a directory, read through the shared run model.

A file that does not parse or does not fit :class:`~pyrallel_tools.bluegreen.run_record.RunRecord` is
skipped with the reason, which the report lists: one bad file must not hide the other runs.  Called by
:func:`pyrallel_tools.bluegreen.reporting.build.build_report`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pyrallel_tools.bluegreen.run_record import RunRecord, read_run_record

__all__ = ["ReportError", "RunFile", "load_runs"]

log = logging.getLogger(__name__)


class ReportError(ValueError):
    """The report cannot be built at all (no runs directory, no readable run, matplotlib missing)."""


@dataclass(frozen=True, slots=True)
class RunFile:
    """One run as the report sees it: the file it came from and what the file holds."""

    path: Path
    record: RunRecord

    @property
    def label(self) -> str:
        variant = f" ({self.record.variant})" if self.record.variant else ""
        return f"{self.record.strategy} scenario {self.record.scenario}{variant}"


def load_runs(runs_dir: Path) -> tuple[list[RunFile], list[tuple[Path, str]]]:
    """All readable runs in ``runs_dir`` (sorted by scenario, strategy, variant) and the skipped files with why."""
    if not runs_dir.is_dir():
        raise ReportError(f"runs directory {runs_dir} does not exist; run `pyrallel scenario run` first")
    files = sorted(runs_dir.glob("*.json"))
    if not files:
        raise ReportError(f"no run files (*.json) in {runs_dir}; run `pyrallel scenario run` first")
    runs: list[RunFile] = []
    skipped: list[tuple[Path, str]] = []
    for path in files:
        try:
            runs.append(RunFile(path, read_run_record(path)))
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("Skipping run file %s: %s", path, exc)
            skipped.append((path, f"{type(exc).__name__}: {exc}"))
    runs.sort(key=lambda r: (r.record.scenario, r.record.strategy, r.record.variant or "", r.record.started_at))
    return runs, skipped
