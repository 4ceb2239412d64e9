"""Suite-wide settings and fixtures."""

from collections.abc import Iterator

import pytest
from hypothesis import settings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# The real-broker fixtures (kafka_bootstrap, new_topic, ...): the plugin is opt-in, so a user's own test suite does
# not get them just because the tools are installed.
pytest_plugins = ["pyrallel_tools.testing.pytest_plugin"]

# Property tests judge results, not speed: a loaded CI machine that pauses the process for a moment must not fail
# them on hypothesis' default 200 ms deadline per example.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.fixture(scope="session")
def _memory_tracing() -> Iterator[InMemorySpanExporter]:
    """The process's OpenTelemetry tracer provider (the API takes one per process), exporting every span into
    memory as it ends."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()


@pytest.fixture
def span_exporter(_memory_tracing: InMemorySpanExporter) -> InMemorySpanExporter:
    """The real SDK's in-memory exporter behind the global tracer provider, emptied for this test."""
    _memory_tracing.clear()
    return _memory_tracing
