"""PyrallelConsumer: the public entry point that wires the control plane to an execution engine."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pyrallel_consumer.config import BATCH_FIELDS, ConfigError, ConsumerConfig
from pyrallel_consumer.control.coordinator import Coordinator
from pyrallel_consumer.control.exhaustion import ExhaustionPolicy
from pyrallel_consumer.control.lifecycle import Lifecycle
from pyrallel_consumer.control.observer import ConsumerObserver
from pyrallel_consumer.control_server import HttpServer, create_control_server
from pyrallel_consumer.execution import create_engine
from pyrallel_consumer.execution.engine import ExecutionEngine
from pyrallel_consumer.kafka.clients import KafkaClients
from pyrallel_consumer.kafka.dead_letter import DeadLetterPublisher, TransactionalDeadLetters
from pyrallel_consumer.kafka.transactions import Transactions
from pyrallel_consumer.observability import tracing_for
from pyrallel_consumer.observability.log_events import CONSUMER_STARTED, event_extra
from pyrallel_consumer.observability.metrics import PrometheusExporter
from pyrallel_consumer.observability.snapshot import MetricsSnapshot

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class PyrallelConsumer:
    """Consume ``config.topics`` and run ``handler`` for every record, with far more concurrency than partitions.

    ``async with PyrallelConsumer(config, handle) as consumer:`` starts on enter and stops with a drain on
    exit. The handler is ``async def handle(record)`` for the async engine, or an importable
    ``def handle(record)`` (or ``"module:function"``) for ``engine="process"``.

    ``batch_handler`` instead of ``handler`` makes it a batch consumer: ``async def handle_batch(records)`` (or an
    importable ``def handle_batch(records)`` for ``engine="process"``) gets lists of up to ``batch_max_records``
    records and returns None or a ``BatchResult`` naming the records that failed (see docs/architecture.md).

    ``kafka_clients`` creates the confluent-kafka clients (consumer, dead-letter producer, admin); test tooling
    passes a subclass of ``KafkaClients`` that injects faults, applications leave the default.
    """

    def __init__(
        self,
        config: ConsumerConfig,
        handler: Any = None,
        *,
        batch_handler: Any = None,
        on_exhausted: ExhaustionPolicy | None = None,
        engine: ExecutionEngine | None = None,
        observer: ConsumerObserver | None = None,
        kafka_clients: KafkaClients | None = None,
    ) -> None:
        if not isinstance(config, ConsumerConfig):
            raise TypeError("config must be a ConsumerConfig")
        if config.group_type == "share":
            raise ConfigError("group_type='share': a share group's records are consumed by PyrallelShareConsumer")
        batch = batch_handler is not None
        check_handlers(config, handler, batch_handler, engine)
        self.config = config
        tracing = tracing_for(config)
        self._engine = engine if engine is not None else create_engine(config, batch_handler if batch else handler,
                                                                        batch=batch, tracing=tracing)
        self._observer = self.metrics_exporter = PrometheusExporter(config, self.metrics, chained=observer)
        self.metrics_registry = self.metrics_exporter.registry
        """This consumer's own Prometheus registry (never the global one); an app may serve it itself."""
        clients = kafka_clients or KafkaClients()
        self._dead_letters: DeadLetterPublisher | None = None
        transactions = Transactions(config, clients) if config.processing_guarantee == "exactly_once" else None
        if on_exhausted is None and config.dlq_enabled:
            if transactions is not None:
                on_exhausted = TransactionalDeadLetters(config, transactions, tracing)
            else:
                self._dead_letters = on_exhausted = DeadLetterPublisher(config, clients, self._observer, tracing)
        self._coordinator = Coordinator(config, self._engine, on_exhausted, self._observer, self._stopped, clients,
                                        batch=batch, transactions=transactions, tracing=tracing)
        self.lifecycle = Lifecycle(self._coordinator, config, self._observer)
        self.control_server: HttpServer | None = None
        """The HTTP lifecycle API when ``config.control_port`` is set; apps may add routes (``add_route``)."""
        if config.control_port is not None:
            self.control_server = create_control_server(config, self.lifecycle)
        self._started = False
        self._start_done = asyncio.Event()
        """Set once start() has finished, successfully or not."""

    async def start(self) -> None:
        """Start fetching and handling; on any failure, everything started so far is stopped again."""
        if self._started:
            raise RuntimeError("PyrallelConsumer.start() was called twice, or after stop(); create a new consumer")
        self._started = True
        try:
            self.metrics_exporter.start()
            await self._coordinator.start()
            self.lifecycle.started()
            if self.control_server is not None:
                await self.control_server.start()
        except BaseException:
            await self._coordinator.stop(drain=False)  # engine workers, metrics server, dead-letter producer
            raise
        finally:
            self._start_done.set()
        config = self.config
        log.info("Consumer started: group %s, topics %s, %s, color=%s instance=%s", config.group_id,
                 ", ".join(config.topics), self.lifecycle.state.value, config.color, config.instance_id,
                 extra=event_extra(CONSUMER_STARTED, group_id=config.group_id, topics=", ".join(config.topics),
                                   state=self.lifecycle.state.value, color=config.color,
                                   instance=config.instance_id))

    async def stop(self, drain: bool = True) -> None:
        """drain=True finishes in-flight records and commits; drain=False cancels them, commits what completed.

        A stop() during start() waits for it first, so nothing it starts outlives the stop.
        """
        if not self._started:
            self._started = True  # never started: only the dead-letter producer exists
            if self._dead_letters is not None:
                self._dead_letters.close()
            return
        await self._start_done.wait()
        try:
            await self._coordinator.stop(drain=drain)
        finally:
            if self.control_server is not None:
                await self.control_server.close()

    def _stopped(self) -> None:
        self.lifecycle.stopped()
        self.metrics_exporter.stop()
        if self._dead_letters is not None:
            self._dead_letters.close()

    async def wait_stopped(self) -> None:
        """Wait until the consumer stopped; raise the error that stopped it, if any."""
        await self._coordinator.wait_stopped()

    def metrics(self) -> MetricsSnapshot:
        return self._coordinator.metrics()

    async def __aenter__(self) -> PyrallelConsumer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop(drain=True)


def check_handlers(config: ConsumerConfig, handler: object, batch_handler: object,
                   engine: ExecutionEngine | None) -> None:
    """Refuse a consumer that would not run what its author meant: called by PyrallelConsumer's constructor.

    Exactly one of ``handler`` and ``batch_handler`` (with a custom ``engine``, ``handler`` may be left out: the
    engine runs its own); the batch fields only with a batch handler (they would silently do nothing otherwise),
    and ``batch_max_records`` within ``max_in_flight`` (a batch's records count as in flight); no batch handler under
    ``processing_guarantee="exactly_once"`` (a batch cannot return outputs yet).
    """
    if handler is not None and batch_handler is not None:
        raise TypeError("pass either handler (one record per call) or batch_handler (a list of records per call), "
                        "not both")
    if handler is None and batch_handler is None and engine is None:
        raise TypeError("PyrallelConsumer needs a handler: PyrallelConsumer(config, handle) for one record per "
                        "call, or PyrallelConsumer(config, batch_handler=handle_batch) for lists of records")
    if batch_handler is None:
        set_here = [name for name in BATCH_FIELDS if name in config.model_fields_set]
        if set_here:
            raise ConfigError(f"{', '.join(set_here)} only apply to a batch handler, and this consumer has a "
                              "per-record handler: pass batch_handler=... instead of handler, or leave them unset "
                              "(PYRALLEL_BATCH_* environment variables count as set)")
    elif config.processing_guarantee == "exactly_once":
        raise ConfigError("batch handlers do not support processing_guarantee='exactly_once' yet: use a per-record "
                          "handler that returns its outputs (list[Output]), or at_least_once with the batch handler")
    elif config.batch_max_records > config.max_in_flight:
        raise ConfigError(f"batch_max_records ({config.batch_max_records}) is larger than max_in_flight "
                          f"({config.max_in_flight}): a batch's records count as in flight, so no batch could fill; "
                          "raise max_in_flight or lower batch_max_records")
