"""The one nearest-rank quantile of the tools: the blue/green report's gap percentiles
(:mod:`pyrallel_tools.bluegreen.reporting.summary`) and the recovery benchmark's kill percentiles
(:mod:`pyrallel_tools.benchmark.recovery`). Pure code, standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``: the smallest value with at least ``q`` of the
    values at or below it, as the run files' latency percentiles are taken; None for no values. With fewer than
    100 values the p99 is the maximum."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
