"""The run file: one JSON document per scenario run, written by the scenario runner, read by the report.

Both sides go through the models below (:func:`write_run_record`, :func:`read_run_record`), so the file has
one description and the writer and the reader cannot drift apart: a field renamed here is renamed for both,
and a file that still has the old name fails to read, naming the field.  Reading is strict, like JSON typing:
a number for a float field, an integer (not ``2.0``, not ``true``) for an int field, a string for a string;
every field without a default must be there (null where it may be null), and an unknown field is an error
too.  A file that does not fit raises ``ValueError`` with the first problem and the path to the field that
has it, e.g. ``switches[0].steps[1].ok: expected true or false, got 1``, ``verdict: expected a string, got
None`` (absent) or ``cause: missing``; the report lists it next to the file's name.

Switches are the controller's own :class:`~pyrallel_consumer.bluegreen.controller.SwitchResult` records, timed
by the controller's steps, each with what the records felt of it (the processing gap and the end-to-end latency,
measured from the logs by :mod:`pyrallel_tools.bluegreen.validation.switch_impact`; see :class:`RunSwitch`),
and the run's ``latency`` series; files written before them do without. A run switched through the Kubernetes controller
(``environment["driver"] == "kubernetes"``; older files have no driver: the runner's own controller) also has
each switch's gap as that controller estimated it.  The ``validation`` section is the judge's JSON
(``ValidationReport.to_dict``), of which the model types the counts the report reads and keeps the rest as it is.
"""

from __future__ import annotations

import copy
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails

from pyrallel_consumer.bluegreen.controller import SwitchResult

__all__ = [
    "Criterion",
    "Event",
    "LatencyPoint",
    "RunRecord",
    "RunSwitch",
    "Sample",
    "SwitchFigures",
    "ValidationSummary",
    "read_run_record",
    "write_run_record",
]

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True, slots=True, config=_STRICT)
class Sample:
    """One instance as the runner's sampler saw it (twice a second); the report plots these."""

    t: float
    color: str
    instance: str
    state: str
    """The lifecycle state, ``DOWN`` when the instance did not answer."""
    lag: int | None
    """Records behind the end of the instance's partitions; None when it did not answer."""
    handled: int
    """Records the instance handled since it started (a restart starts again from 0)."""
    rebalances: int | None = None
    """Rebalances of the instance so far; None when it did not answer and for connectors."""
    assigned: int | None = None
    """Partitions assigned to the instance; None when it did not answer and for connectors."""


@dataclass(frozen=True, slots=True, config=_STRICT)
class Event:
    """Something the scenario did, e.g. ``switch_start``, ``kill``, ``scale_down``."""

    t: float
    kind: str
    detail: str


@dataclass(frozen=True, slots=True, config=_STRICT)
class Criterion:
    """One pass/fail check of the run; the run passes when all of its criteria pass."""

    name: str
    target: str
    measured: str
    passed: bool = Field(alias="pass")


@dataclass(frozen=True, slots=True, config=_STRICT)
class SwitchFigures:
    """What the records felt of one switch or rollback, from the logs; None where no record tells."""

    processing_gap_s: float | None
    """The longest time a record handled from the switch's start until the next switch (or the run's end) waited
    on its partition with no one handling it: ``h(r) - max(produced(r), h(previous record of the partition))``."""
    processing_gap_end: float | None
    """When the record that waited longest was handled: the gap's end, which places it among the run's events."""
    latency_p50_s: float | None
    """Produced (acked) to first handled, over the records produced from the switch's start until the next switch
    (or the run's end); nearest-rank percentiles."""
    latency_p99_s: float | None
    latency_max_s: float | None
    records: int
    """Records the latency figures are taken over."""


@dataclass(config=_STRICT)
class RunSwitch(SwitchResult):
    """The controller's record of one switch (its steps timed by the controller: the controller step time), with
    the figures of what the records felt of it; a switch rolled back automatically has its rollback's figures in
    ``automatic_rollback``. The figures are null in files written before they were measured."""

    processing_gap_s: float | None = None
    processing_gap_end: float | None = None
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    latency_max_s: float | None = None
    latency_records: int = 0
    automatic_rollback: SwitchFigures | None = None
    controller_gap_s: float | None = None
    """The controller's own estimate of the processing gap, where it makes one (the Kubernetes controller's
    ``status.lastSwitch.processingGapSeconds``: polled from the outside); ``processing_gap_s`` is the measured one."""
    controller_gap_note: str | None = None
    """Why the controller has no estimate (``processingGapNote``)."""

    @classmethod
    def of(cls, result: SwitchResult, felt: SwitchFigures | None, rollback: SwitchFigures | None,
           controller_gap: tuple[float | None, str | None] = (None, None)) -> RunSwitch:
        own = felt or SwitchFigures(None, None, None, None, None, 0)
        base: dict[str, Any] = {f.name: getattr(result, f.name) for f in fields(SwitchResult)}
        return cls(**base, processing_gap_s=own.processing_gap_s, processing_gap_end=own.processing_gap_end,
                   latency_p50_s=own.latency_p50_s, latency_p99_s=own.latency_p99_s, latency_max_s=own.latency_max_s,
                   latency_records=own.records, automatic_rollback=rollback, controller_gap_s=controller_gap[0],
                   controller_gap_note=controller_gap[1])

    def felt(self) -> list[tuple[str, SwitchFigures]]:
        """(action, figures) of the switch and of its automatic rollback, if any."""
        own = SwitchFigures(self.processing_gap_s, self.processing_gap_end, self.latency_p50_s, self.latency_p99_s,
                            self.latency_max_s, self.latency_records)
        return [(self.action, own)] + ([("rollback", self.automatic_rollback)] if self.automatic_rollback else [])


@dataclass(frozen=True, slots=True, config=_STRICT)
class LatencyPoint:
    """End-to-end latency of the records produced in one second from ``t`` on; the report plots these."""

    t: float
    p50_s: float
    max_s: float
    records: int


class ValidationSummary(BaseModel):
    """The judge's JSON of the run: the counts the report reads are typed, the rest is kept as written."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    produced: int
    consumed: int
    lost: int
    pending: int
    duplicates: int
    duplicates_by_color: dict[str, int]
    cross_color_duplicates: int
    dual_active_count: int
    order_violations: int


class RunRecord(BaseModel):
    """One scenario run: what was run where, what happened, the judge's counts and the verdict."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)

    verdict: str
    """``PASS`` when every criterion passed, else ``FAIL``."""
    cause: str | None
    """The failed criteria, None when the run passed."""
    strategy: str
    scenario: int
    variant: str | None
    title: str
    run_id: str | None = None
    """The runner's id of the run, also the file's name; None in files written by hand."""
    started_at: float
    ended_at: float
    environment: dict[str, Any]
    """Versions and sizes (Kafka, Python, partitions, rate, ...): JSON values."""
    conditions: dict[str, Any]
    """What the scenario set up or measured on the way (topic, groups, lag at the switch, ...): JSON values."""
    switches: list[RunSwitch]
    latency: list[LatencyPoint] = Field(default_factory=list)
    """End-to-end latency over the run, per second of production, in time order."""
    validation: ValidationSummary
    samples: list[Sample]
    """In time order."""
    events: list[Event]
    """In time order."""
    rebalances: dict[str, int]
    """Rebalances per color, summed over the color's instances."""
    criteria: list[Criterion]

    @field_validator("verdict")
    @classmethod
    def _pass_or_fail(cls, verdict: str) -> str:
        if verdict not in ("PASS", "FAIL"):
            raise ValueError(f"expected PASS or FAIL, got {verdict!r}")
        return verdict

    @field_validator("samples", "events", "latency")
    @classmethod
    def _in_time_order(cls, items: list[Any]) -> list[Any]:
        return sorted(items, key=lambda item: item.t)

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"


def write_run_record(record: RunRecord, path: Path) -> None:
    path.write_text(record.model_dump_json(by_alias=True, indent=1) + "\n", encoding="utf-8")


def read_run_record(path: Path) -> RunRecord:
    """Read one run file; raises ``OSError``, or ``ValueError`` for bad JSON (``JSONDecodeError``) or a bad run."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)  # bad JSON is a JSONDecodeError, with line and column
    try:
        return RunRecord.model_validate_json(text)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
    if problem["type"] == "missing":
        # Say what the field should hold: the same check with a null in its place names the expected type.
        try:
            RunRecord.model_validate_json(json.dumps(_with_null(data, problem["loc"])))
        except ValidationError as exc:
            as_null = exc.errors(include_url=False)[0]
            problem = as_null if as_null["loc"] == problem["loc"] else problem
    raise _SchemaError(_describe(problem))


class _SchemaError(ValueError):
    """A run file is valid JSON but not a run; the message names the offending field."""


def _with_null(data: Any, loc: tuple[int | str, ...]) -> Any:
    """A copy of ``data`` with null at ``loc``, which is the place of a missing field (so its parent is there)."""
    edited = copy.deepcopy(data)
    parent = edited
    for part in loc[:-1]:
        parent = parent[part]
    parent[loc[-1]] = None
    return edited


_EXPECTED: dict[str, str] = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a number",
    "bool_type": "true or false",
}
_CONTAINERS: dict[str, str] = {
    "model_type": "an object",
    "dataclass_type": "an object",
    "dict_type": "an object",
    "list_type": "a list",
}


def _describe(problem: ErrorDetails) -> str:
    """``where: what is wrong``, where is the path to the field (``run`` for the document itself)."""
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem["loc"]).lstrip(".")
    where = where or "run"
    kind = problem["type"]
    if kind in _EXPECTED:
        return f"{where}: expected {_EXPECTED[kind]}, got {problem['input']!r}"
    if kind in _CONTAINERS:
        return f"{where}: expected {_CONTAINERS[kind]}"
    if kind == "missing":
        return f"{where}: missing"
    if kind == "extra_forbidden":
        return f"{where}: unknown field"
    if kind == "value_error":
        return f"{where}: {problem['ctx']['error']}"
    return f"{where}: {problem['msg']}"
