"""Handlers of the tracing integration tests, for both engines, and the spans they made.

Every handler call opens a span ``handle <offset>`` (``handle batch`` for a batch handler), a child of whatever span
is current, and fails as the record asks: key ``flaky`` fails its first two attempts, key ``poison`` every attempt;
a batch holding offset 0 fails its first attempt whole. Attempts are counted in files under the directory named by
``PYRALLEL_TEST_DIR`` (``attempts-<partition>-<offset>``), so an attempt on another worker process counts too.

A spawned worker process cannot export into the test's memory: when this module is imported in one (the process
engine loads the handler from it), it sets up a tracer provider of its own that writes each span, as it ends, as one
line of ``spans-<pid>.jsonl`` in that directory. :func:`handler_spans` reads them back, or takes the test process's
in-memory exporter for the async engine, so both engines are held to the same assertions.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pyrallel_consumer.record import Record

DIR_ENV = "PYRALLEL_TEST_DIR"
_tracer = trace.get_tracer("tests.tracing_handlers")


class Exported(NamedTuple):
    """What the tests need of a handler's span: its name and where it sits in its trace."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None


def exported(span: ReadableSpan) -> Exported:
    context, parent = span.get_span_context(), span.parent
    if context is None:
        raise ValueError(f"span {span.name} has no context")
    return Exported(span.name, context.trace_id, context.span_id, parent.span_id if parent is not None else None)


class _FileExporter(SpanExporter):
    """Appends each ended span as one JSON line (a worker process's spans, for the test to read)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._path.open("a") as out:
            for span in spans:
                out.write(json.dumps(exported(span)._asdict()) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: every export opens and closes the file."""


if multiprocessing.parent_process() is not None and DIR_ENV in os.environ:  # a spawned worker of the process engine
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(_FileExporter(Path(os.environ[DIR_ENV]) / f"spans-{os.getpid()}"
                                                                                                ".jsonl")))
    trace.set_tracer_provider(_provider)


def handler_spans(engine: str, directory: Path, memory: InMemorySpanExporter) -> list[Exported]:
    """The spans the handlers made: from ``memory`` (async engine, this process) or the workers' files."""
    if engine == "async":
        return [exported(s) for s in memory.get_finished_spans() if s.name.startswith("handle")]
    return [Exported(**json.loads(line)) for path in sorted(directory.glob("spans-*.jsonl"))
            for line in path.read_text().splitlines()]


def _attempt(record: Record) -> int:
    """Count one more attempt of ``record``; returns its number (1 for the first)."""
    path = Path(os.environ[DIR_ENV]) / f"attempts-{record.partition}-{record.offset}"
    with path.open("a") as out:
        out.write("x")
    return path.stat().st_size


def handle(record: Record) -> None:
    with _tracer.start_as_current_span(f"handle {record.offset}"):
        attempt = _attempt(record)
        if record.key == b"poison" or (record.key == b"flaky" and attempt <= 2):
            raise ValueError(f"attempt {attempt} of offset {record.offset} fails")


def handle_batch(records: list[Record]) -> None:
    with _tracer.start_as_current_span("handle batch"):
        attempts = [_attempt(record) for record in records]
        if any(r.offset == 0 and attempt == 1 for r, attempt in zip(records, attempts, strict=True)):
            raise ValueError("the first attempt of the batch holding offset 0 fails")


async def handle_async(record: Record) -> None:
    await asyncio.sleep(0)  # suspends, as an I/O-bound handler does: the engine brings in more workers then
    handle(record)


async def handle_batch_async(records: list[Record]) -> None:
    handle_batch(records)
