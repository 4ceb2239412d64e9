"""The controller's estimate of a switch's processing gap: from the old color's pause completing (the pause waits
for in-flight records) to the new color's first handled record after its resume.

The reconciler starts a ``GapSampler`` on a thread of its own just before a switch (B or C) and, once the switch
returned and its status was written, waits for the figure on another thread (``finish``); ``cancel`` ends the wait
when the controller shuts down. The sampler polls ``GET /lifecycle/status`` of the new color's instances every
50 ms; the first poll whose summed ``records_succeeded`` exceeds the first one's (taken while the new color was
still paused) marks the first record, with up to one poll interval (plus the request's time) of overstatement.
When no record flows within the bound after the switch (nothing was produced), the gap is None with the reason.

This is an estimate from the outside. The validator's gap (``pyrallel validate`` / the scenario runner: every
record's send and handling times from the producer's and consumers' logs) is the authoritative figure.
"""

from __future__ import annotations

import logging
import threading
import time

from pyrallel_consumer.bluegreen.controller import SwitchError, SwitchResult, http_json

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05
BOUND_S = 30.0


class GapSampler:
    def __init__(self, urls: list[str], token: str | None, interval_s: float = POLL_INTERVAL_S,
                 bound_s: float = BOUND_S) -> None:
        self._urls = list(urls)
        self._token = token
        self._interval_s = interval_s
        self._bound_s = bound_s
        self._stop = threading.Event()
        self._cancelled = False
        self._deadline: float | None = None
        self.baseline: int | None = None
        self.first_record_at: float | None = None
        """Wall-clock time (``time.time()``) of the poll that first saw a record handled by the new color."""
        self._thread = threading.Thread(target=self._run, name="gap-sampler", daemon=True)

    def start(self) -> GapSampler:
        self._thread.start()
        return self

    def _total(self) -> int | None:
        total = 0
        for url in self._urls:
            try:
                status = http_json("GET", f"{url}/lifecycle/status", token=self._token, timeout_s=2)
            except SwitchError:
                return None
            if not isinstance(status, dict):
                return None
            total += int(status.get("records_succeeded", 0))
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            total = self._total()
            seen_at = time.time()
            if total is not None:
                if self.baseline is None:
                    self.baseline = total
                elif total > self.baseline:
                    self.first_record_at = seen_at
                    return
            if self._deadline is not None and time.monotonic() > self._deadline:
                return
            self._stop.wait(self._interval_s)

    def cancel(self) -> None:
        """Stop polling now (the controller is shutting down); a ``finish`` waiting returns at once."""
        self._cancelled = True
        self._stop.set()

    def finish(self, result: SwitchResult) -> tuple[float | None, str | None]:
        """(gap in seconds, None) or (None, why not); waits up to the bound for the first record."""
        try:
            if not result.ok:
                return None, "the switch did not complete (rolled back or failed)"
            if not self._urls:
                return None, f"no {result.to_color} instances were known"
            pause = next((s for s in result.steps if s.ok and s.name == f"pause {result.from_color}"), None)
            if pause is None:
                return None, "the switch has no pause step of the old color"
            paused_at = pause.started_at + pause.seconds
            resume = next((s for s in result.steps if s.ok and s.name == f"resume {result.to_color}"), None)
            resumed_at = resume.started_at + resume.seconds if resume is not None else time.time()
            remaining = max(0.0, resumed_at + self._bound_s - time.time())
            self._deadline = time.monotonic() + remaining
            self._thread.join(remaining + 5)
            if self.first_record_at is None and self._cancelled:
                return None, "not measured: the controller stopped before the first record"
            if self.first_record_at is None:
                return None, f"no record was handled by {result.to_color} within {self._bound_s:g}s of its resume"
            if self.first_record_at < paused_at:
                return None, f"{result.to_color} handled records before {result.from_color}'s pause completed"
            return self.first_record_at - paused_at, None
        finally:
            self._stop.set()
