"""Tracing without a broker: the switch, what it costs when off, and span ends a broker test does not reach."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pyrallel_consumer import ConfigError, ConsumerConfig, Record, WorkItem
from pyrallel_consumer.observability.tracing import Tracing

pytestmark = pytest.mark.unit

BASE = {"bootstrap_servers": "127.0.0.1:1", "group_id": "g", "topics": ["t"]}


def test_tracing_without_the_api_installed_is_refused_with_the_extra_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert ConsumerConfig(**BASE, tracing_enabled=True).tracing_enabled
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # what find_spec sees when it is not installed
    with pytest.raises(ConfigError, match=r"tracing_enabled: .*pip install 'pyrallel-consumer\[tracing\]'"):
        ConsumerConfig(**BASE, tracing_enabled=True)
    assert not ConsumerConfig(**BASE).tracing_enabled


@pytest.mark.parametrize("engine", ["async", "process"])
def test_a_consumer_without_tracing_never_imports_opentelemetry(engine: str) -> None:
    script = textwrap.dedent(f"""
        import sys
        from pyrallel_consumer import ConsumerConfig, PyrallelConsumer
        import pyrallel_consumer.kafka.dead_letter, pyrallel_consumer.execution.process.worker

        async def handle(record):
            pass

        config = ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"], engine="{engine}")
        PyrallelConsumer(config, handle if config.engine == "async" else "json:dumps")
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def _item(item_id: int, offset: int) -> WorkItem:
    return WorkItem(item_id, Record("t", 0, offset, b"k", b"v"))


def test_a_cancelled_record_span_ends_and_says_it_runs_again(span_exporter: InMemorySpanExporter) -> None:
    tracing = Tracing("g")
    tracing.record_started(_item(1, 7))
    tracing.record_cancelled(1, _item(1, 7).record)
    (span,) = span_exporter.get_finished_spans()
    assert [(e.name, e.attributes) for e in span.events] == [
        ("pyrallel.cancelled", {"messaging.destination.partition.id": "0", "messaging.kafka.offset": 7})]


def test_a_batch_span_ends_when_its_last_record_leaves(span_exporter: InMemorySpanExporter) -> None:
    tracing = Tracing("g")
    tracing.batch_started([_item(1, 0), _item(2, 1), _item(3, 2)])
    tracing.record_finished(1)
    tracing.record_cancelled(3, _item(3, 2).record)
    assert span_exporter.get_finished_spans() == ()
    tracing.record_failed(2, "ValueError", "bad")
    tracing.record_finished(2)
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes is not None and span.attributes["messaging.batch.message_count"] == 3
    assert span.attributes["error.type"] == "ValueError"
    assert [e.attributes["messaging.kafka.offset"] for e in span.events if e.attributes] == [2]
