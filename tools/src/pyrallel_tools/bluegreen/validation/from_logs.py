"""``validate_files``: the log loaders and the judge in one streaming pass, for whoever starts from files.

Called by ``pyrallel validate`` and by the scenario runner; neither ever holds the raw records in memory.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from pyrallel_tools.bluegreen.validation.findings import ValidationReport
from pyrallel_tools.bluegreen.validation.judge import validate
from pyrallel_tools.bluegreen.validation.load import LoadStats, PathLike, records_of_files

__all__ = ["validate_files"]


def validate_files(
    producer_logs: Iterable[PathLike],
    consumer_logs: Iterable[PathLike] = (),
    sink_files: Iterable[tuple[PathLike, str]] = (),
    pending_seqs: Collection[int] = (),
    dual_active_gap_s: float = 0.0,
    *,
    activity_gap_s: float = 1.0,
) -> ValidationReport:
    """Load and validate in one streaming pass so the CLI never holds the raw records in memory."""
    stats = LoadStats()
    produced, consumed = records_of_files(producer_logs, consumer_logs, sink_files, stats)
    # validate() drains produced before consumed, so stats is complete when it is read.
    return validate(
        produced,
        consumed,
        pending_seqs,
        dual_active_gap_s,
        activity_gap_s=activity_gap_s,
        load_stats=stats,
    )
