"""Exactly-once pieces without a broker: the Output API, the config rules, both engines carrying outputs, the
transaction cycle against a recording producer, and the coordinator's side of the cycle.

The same cycle against the real broker, with read_committed readers judging the outputs, is in
tests/integration/test_exactly_once.py and tests/faults/test_exactly_once_faults.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pyrallel_consumer import ConfigError, ConsumerConfig, KafkaClients, Output, Record
from pyrallel_consumer.control.coordinator import Coordinator
from pyrallel_consumer.execution.async_engine import AsyncExecutionEngine
from pyrallel_consumer.execution.engine import Completion, ExecutionEngine, RetryPolicy, WorkItem
from pyrallel_consumer.execution.process import codec
from pyrallel_consumer.kafka.events import Assignment
from pyrallel_consumer.kafka.settings import kafka_conf, transactional_conf
from pyrallel_consumer.kafka.transactions import TransactionOutcome, Transactions
from pyrallel_consumer.output import outputs_of

pytestmark = pytest.mark.unit

BASE: dict[str, Any] = {"bootstrap_servers": "127.0.0.1:1", "group_id": "g", "topics": ["t"]}


def _config(**values: Any) -> ConsumerConfig:
    return ConsumerConfig(**{**BASE, **values})


# ---- the API ------------------------------------------------------------------------------------------------


def test_a_handler_returns_none_or_a_list_of_outputs_and_anything_else_is_refused() -> None:
    out = Output("out", b"v", key="k", headers=[("h", b"1")])  # type: ignore[arg-type]
    assert outputs_of(None) == ()
    assert outputs_of([out]) == (out,)
    assert out.headers == (("h", b"1"),), "headers are kept as a tuple"
    with pytest.raises(TypeError, match=r"list of pyrallel_consumer\.Output"):
        outputs_of("out")
    with pytest.raises(TypeError, match="held a dict"):
        outputs_of([{"topic": "out"}])
    with pytest.raises(TypeError, match="topic"):
        Output("", b"v")
    with pytest.raises(TypeError, match="value"):
        Output("out", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="partition"):
        Output("out", b"v", partition=-1)


def test_outputs_cross_the_process_boundary_as_the_handler_returned_them() -> None:
    outputs = (Output("out", "text", b"k", (("h", None),), 3), Output("out2", None))
    result = codec.unpacker()
    result.feed(codec.encode_message((codec.DONE, [codec.success(7, outputs), codec.success(8)])))
    _kind, (first, second) = next(result)
    assert codec.decode_result(first) == (7, None) and codec.decode_result(second) == (8, None)
    assert codec.decode_outputs(first) == (Output("out", b"text", b"k", (("h", None),), 3), Output("out2", None))
    assert codec.decode_outputs(second) == ()
    assert codec.decode_outputs(codec.failure(9, "ValueError", "boom")) == ()


def test_the_async_engine_completes_with_what_the_handler_returned_and_fails_a_wrong_return() -> None:
    async def handle(record: Record) -> list[Output] | None:
        if record.offset == 1:
            return "oops"  # type: ignore[return-value]
        return [Output("out", record.value)]

    async def scenario() -> list[Completion]:
        done: list[Completion] = []
        engine = AsyncExecutionEngine(handle, RetryPolicy(max_retries=0))
        await engine.start(done.append)
        engine.submit(WorkItem(1, Record("t", 0, 0, None, b"a")))
        engine.submit(WorkItem(2, Record("t", 0, 1, None, b"b")))
        await engine.shutdown(drain=True, timeout_s=5)  # waits for both
        return done

    by_id = {c.item_id: c for c in asyncio.run(scenario())}
    assert by_id[1].ok and by_id[1].outputs == (Output("out", b"a"),)
    assert not by_id[2].ok and by_id[2].error_type == "TypeError"


# ---- configuration ------------------------------------------------------------------------------------------


def test_exactly_once_reads_committed_and_its_producer_is_transactional() -> None:
    config = _config(processing_guarantee="exactly_once", instance_id="pod-1", output_kafka={"linger.ms": "20"})
    assert kafka_conf(config)["isolation.level"] == "read_committed"
    conf = transactional_conf(config)
    assert conf["transactional.id"] == "pyrallel-g-pod-1"
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["transaction.timeout.ms"] == 10_000 and conf["linger.ms"] == "20"
    static = _config(processing_guarantee="exactly_once", group_instance_id="member-3")
    assert transactional_conf(static)["transactional.id"] == "pyrallel-g-member-3", "survives a restart"
    assert "isolation.level" not in kafka_conf(_config())


@pytest.mark.parametrize(("values", "message"), [
    ({"kafka": {"isolation.level": "read_uncommitted"}}, "isolation.level=read_committed"),
    ({"dlq_kafka": {"linger.ms": "5"}}, "dlq_kafka does not apply"),
    ({"commit_interval_ms": 10_000}, "must be larger than commit_interval_ms"),
    ({"output_kafka": {"transactional.id": "x"}}, "'transactional.id' is set by the library"),
    ({"output_kafka": {"linger.mss": "5"}}, "librdkafka refuses 'linger.mss'"),
    ({"kafka": {"enable.auto.commit": "true"}}, "'enable.auto.commit' is set by the library"),
])
def test_settings_that_contradict_exactly_once_are_refused_with_the_reason(values: dict[str, Any],
                                                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(processing_guarantee="exactly_once", **values)


def test_transaction_settings_without_exactly_once_are_refused() -> None:
    with pytest.raises(ConfigError, match="transactional_id applies only"):
        _config(transactional_id="x")


# ---- the transaction cycle against a recording producer ----------------------------------------------------


class RecordingProducer:
    """Records the transactional calls in order; ``fail_next`` makes the next call of that name raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_next: dict[str, KafkaError] = {}
        self.thread_names: set[str] = set()
        self.gate = threading.Event()
        """produce() waits for it: a slow broker."""
        self.gate.set()

    def _call(self, name: str, *args: Any) -> None:
        self.thread_names.add(threading.current_thread().name)
        self.calls.append((name, *args))
        error = self.fail_next.pop(name, None)
        if error is not None:
            raise KafkaException(error)

    def init_transactions(self, timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        self.gate.wait()
        self._call("produce", topic, value)

    def send_offsets_to_transaction(self, offsets: list[Any], metadata: Any, timeout: float) -> None:
        self._call("offsets", tuple((tp.partition, tp.offset) for tp in offsets), metadata)

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


class RecordingClients(KafkaClients):
    def __init__(self) -> None:
        self.producer = RecordingProducer()

    def new_producer(self, conf: dict[str, Any]) -> Any:
        return self.producer


class Sink:
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_transaction_aborted(self, reason: str) -> None:
        self.events.append(f"aborted: {reason}")

    def on_transactions_failed(self, error: BaseException) -> None:
        self.events.append(f"failed: {error}")


def _point(offset: int) -> Any:
    from pyrallel_consumer.control.offset_tracker import CommitPoint, PartitionOffsets

    tracker = PartitionOffsets(("t", 0), 1, 0, max_window=100)
    return CommitPoint("t", 0, 1, offset, "", tracker)


def _names(calls: Iterable[tuple[Any, ...]]) -> list[str]:
    return [c[0] for c in calls]


def test_a_transaction_holds_the_outputs_queued_before_its_commit_and_the_next_one_begins_after_it() -> None:
    clients, sink = RecordingClients(), Sink()

    async def scenario() -> tuple[TransactionOutcome, TransactionOutcome]:
        transactions = Transactions(_config(processing_guarantee="exactly_once"), clients)
        await transactions.start(sink, lambda: "group-metadata")
        transactions.produce([Output("out", b"1")])
        transactions.produce([Output("out", b"2")])
        first = transactions.commit([_point(2)])
        transactions.produce([Output("out", b"3")])
        second = transactions.commit([_point(3)])
        outcomes = (await first, await second)
        await transactions.close()
        return outcomes

    first, second = asyncio.run(scenario())
    assert first.committed and [r.point.offset for r in first.results] == [2]
    assert second.committed
    assert clients.producer.calls == [
        ("init",), ("begin",), ("produce", "out", b"1"), ("produce", "out", b"2"),
        ("offsets", ((0, 2),), "group-metadata"), ("commit",),
        ("begin",), ("produce", "out", b"3"), ("offsets", ((0, 3),), "group-metadata"), ("commit",),
    ]
    assert clients.producer.thread_names == {"pyrallel-transactions"}, "every producer call on its own thread"
    assert sink.events == []


def test_an_abort_tells_the_loop_first_and_drops_what_was_queued_for_the_aborted_generation() -> None:
    clients, sink = RecordingClients(), Sink()
    clients.producer.fail_next["offsets"] = KafkaError(KafkaError.ILLEGAL_GENERATION, "stale generation",
                                                       txn_requires_abort=True)

    async def scenario() -> tuple[TransactionOutcome, TransactionOutcome, TransactionOutcome, list[str]]:
        transactions = Transactions(_config(processing_guarantee="exactly_once"), clients)
        await transactions.start(sink, lambda: "meta")
        transactions.produce([Output("out", b"lost-with-the-abort")])
        aborted = transactions.commit([_point(1)])
        transactions.produce([Output("out", b"queued-behind-the-abort")])  # old generation: dropped
        stale = transactions.commit([_point(2)])
        seen_when_resolved: list[str] = []
        aborted.add_done_callback(lambda _f: seen_when_resolved.extend(sink.events))
        first, second = await aborted, await stale
        transactions.produce([Output("out", b"after")])
        third = await transactions.commit([_point(1)])
        await transactions.close()
        return first, second, third, seen_when_resolved

    first, second, third, seen = asyncio.run(scenario())
    assert first.aborted and not first.committed and "stale generation" in (first.error or "")
    assert not second.committed and not second.results
    assert third.committed
    assert seen == [sink.events[0]], "the loop restarted its partitions before the aborted commit resolved"
    assert sink.events[0].startswith("aborted:")
    produced = [c[2] for c in clients.producer.calls if c[0] == "produce"]
    assert produced == [b"lost-with-the-abort", b"after"]
    assert _names(clients.producer.calls) == ["init", "begin", "produce", "offsets", "abort",
                                              "begin", "produce", "offsets", "commit"]


def test_a_retriable_commit_error_is_tried_again_and_a_fatal_one_stops_the_consumer() -> None:
    clients, sink = RecordingClients(), Sink()
    clients.producer.fail_next["commit"] = KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True)

    async def scenario() -> tuple[TransactionOutcome, TransactionOutcome, bool]:
        transactions = Transactions(_config(processing_guarantee="exactly_once"), clients)
        await transactions.start(sink, lambda: "meta")
        transactions.produce([Output("out", b"1")])
        retried = await transactions.commit([_point(1)])
        clients.producer.fail_next["begin"] = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
        transactions.produce([Output("out", b"2")])
        failed = await transactions.commit([_point(2)])
        await asyncio.sleep(0)  # the failure report is posted before the future's result
        usable = transactions.usable
        await transactions.close()
        return retried, failed, usable

    retried, failed, usable = asyncio.run(scenario())
    assert retried.committed
    assert _names(clients.producer.calls)[:6] == ["init", "begin", "produce", "offsets", "commit", "commit"]
    assert not failed.committed and not usable
    assert sink.events and sink.events[-1].startswith("failed:") and "fenced" in sink.events[-1]


def test_dispatch_waits_while_the_producer_thread_is_behind_and_is_woken_when_it_caught_up() -> None:
    clients, sink = RecordingClients(), Sink()
    clients.producer.gate.clear()

    async def scenario() -> tuple[bool, bool, bool]:
        transactions = Transactions(_config(processing_guarantee="exactly_once", transaction_max_records=10), clients)
        await transactions.start(sink, lambda: "meta")
        woken = asyncio.Event()
        for n in range(12):
            transactions.produce([Output("out", b"%d" % n)])
        behind = transactions.backlogged(woken.set)
        clients.producer.gate.set()
        await asyncio.wait_for(woken.wait(), 30)
        after = transactions.backlogged(woken.set)
        committed = (await transactions.commit([_point(12)])).committed
        await transactions.close()
        return behind, after, committed

    behind, after, committed = asyncio.run(scenario())
    assert behind, "12 outputs waiting is over transaction_max_records=10"
    assert not after and committed
    assert len([c for c in clients.producer.calls if c[0] == "produce"]) == 12


def test_a_fatal_state_that_is_not_fencing_gets_a_new_producer_and_the_records_run_again() -> None:
    clients, sink = RecordingClients(), Sink()
    clients.producer.fail_next["commit"] = KafkaError(KafkaError.INVALID_TXN_STATE, "bad state", fatal=True)

    async def scenario() -> tuple[TransactionOutcome, TransactionOutcome, bool]:
        transactions = Transactions(_config(processing_guarantee="exactly_once"), clients)
        await transactions.start(sink, lambda: "meta")
        transactions.produce([Output("out", b"1")])
        failed = await transactions.commit([_point(1)])
        transactions.produce([Output("out", b"again")])
        committed = await transactions.commit([_point(1)])
        usable = transactions.usable
        await transactions.close()
        return failed, committed, usable

    failed, committed, usable = asyncio.run(scenario())
    assert failed.aborted and not failed.committed
    assert sink.events and sink.events[0].startswith("aborted: the producer was created again"), sink.events
    assert committed.committed and usable, "the consumer goes on with the new producer"
    assert _names(clients.producer.calls).count("init") == 2


# ---- the coordinator's side -----------------------------------------------------------------------------------


class HeldEngine(ExecutionEngine):
    def __init__(self) -> None:
        self.running: list[WorkItem] = []
        self.cancelled: list[int] = []

    async def start(self, on_complete: object) -> None:
        return None

    def submit(self, item: WorkItem) -> None:
        self.running.append(item)

    def cancel(self, item_ids: Iterable[int]) -> None:
        self.cancelled.extend(item_ids)

    def in_flight(self) -> int:
        return len(self.running)

    async def shutdown(self, drain: bool, timeout_s: float) -> None:
        return None


class FakeTransactions(Transactions):
    """Records what the coordinator queues, without a thread."""

    def __init__(self, config: ConsumerConfig) -> None:
        super().__init__(config, KafkaClients())
        self.usable = True
        self.log: list[Any] = []

    def produce(self, outputs: Iterable[Output]) -> None:
        batch = tuple(outputs)
        self.produced += len(batch)
        self.log.append(("produce", batch))

    def commit(self, points: list[Any]) -> asyncio.Future[TransactionOutcome]:
        self.log.append(("commit", sorted((p.partition, p.offset) for p in points)))
        done: asyncio.Future[TransactionOutcome] = asyncio.get_running_loop().create_future()
        done.set_result(TransactionOutcome(True))
        return done

    def abort(self, reason: str) -> asyncio.Future[TransactionOutcome]:
        self.log.append(("abort", reason))
        done: asyncio.Future[TransactionOutcome] = asyncio.get_running_loop().create_future()
        done.set_result(TransactionOutcome(False, aborted=True))
        return done


def test_outputs_are_queued_before_the_record_counts_as_complete() -> None:
    config = _config(processing_guarantee="exactly_once")
    engine, transactions = HeldEngine(), FakeTransactions(config)
    coordinator = Coordinator(config, engine, transactions=transactions)

    async def scenario() -> None:
        coordinator.on_assigned([Assignment("t", 0, 1, -1, None)])
        coordinator.on_records([(Record("t", 0, 0, b"k", b"v"), 1)])
        item = engine.running.pop()
        tracker = coordinator._assignments.of(("t", 0))
        assert tracker is not None

        original = transactions.produce

        def produce_checking(outputs: Iterable[Output]) -> None:
            assert tracker.commit_offset() == 0, "not complete yet when its outputs are queued"
            original(outputs)

        transactions.produce = produce_checking  # type: ignore[method-assign]
        coordinator._on_complete(Completion(item.item_id, True, 1, 0.0, outputs=(Output("out", b"x"),)))
        assert transactions.log == [("produce", (Output("out", b"x"),))]
        assert tracker.commit_offset() == 1

    asyncio.run(scenario())


def test_outputs_under_at_least_once_fail_the_record_with_a_clear_error() -> None:
    engine = HeldEngine()
    config = _config(max_retries=0)
    exhausted: list[Completion] = []

    class Keep:
        outcome = "kept"

        async def __call__(self, record: Record, completion: Completion) -> bool:
            exhausted.append(completion)
            return True

    coordinator = Coordinator(config, engine, on_exhausted=Keep())

    async def scenario() -> None:
        coordinator.on_assigned([Assignment("t", 0, 1, -1, None)])
        coordinator.on_records([(Record("t", 0, 0, b"k", b"v"), 1)])
        item = engine.running.pop()
        coordinator._on_complete(Completion(item.item_id, True, 1, 0.0, outputs=(Output("out", b"x"),)))
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert [c.error_type for c in exhausted] == ["OutputsNeedExactlyOnceError"]


class RewindingPoller:
    def __init__(self) -> None:
        self.rewound: list[tuple[list[tuple[str, int]], dict[tuple[str, int], int]]] = []

    def rewind(self, partitions: list[tuple[str, int]], fallback: dict[tuple[str, int], int]) -> None:
        self.rewound.append((list(partitions), dict(fallback)))


def test_an_aborted_transaction_restarts_every_partition_and_nothing_of_the_old_state_is_committed() -> None:
    config = _config(processing_guarantee="exactly_once")
    engine, transactions = HeldEngine(), FakeTransactions(config)
    coordinator = Coordinator(config, engine, transactions=transactions)
    poller = RewindingPoller()
    coordinator._poller = poller  # type: ignore[assignment]

    async def scenario() -> None:
        coordinator.on_assigned([Assignment("t", 0, 1, 5, None), Assignment("t", 1, 2, -1, None)])
        coordinator.on_records([(Record("t", 0, 5, b"a", b"v"), 1), (Record("t", 0, 6, b"b", b"v"), 1),
                                (Record("t", 1, 0, b"c", b"v"), 2)])
        done, running = engine.running[0], engine.running[1:]
        coordinator._on_complete(Completion(done.item_id, True, 1, 0.0, outputs=(Output("out", b"x"),)))
        coordinator.on_transaction_aborted("test")
        assert sorted(engine.cancelled) == sorted(i.item_id for i in running), "in-flight records stop"
        assert coordinator._commits.points() == [], "no tracker left to commit from until the restart"
        assert poller.rewound == [([("t", 0), ("t", 1)], {("t", 0): 5, ("t", 1): 0})]
        produced_before = len(transactions.log)
        for item in running:  # a completion arriving late belongs to the forgotten state
            coordinator._on_complete(Completion(item.item_id, True, 1, 0.0, outputs=(Output("out", b"y"),)))
        assert len(transactions.log) == produced_before, "no output of the forgotten state is produced"
        coordinator.on_repositioned([Assignment("t", 0, 3, 5, None)])
        coordinator.on_records([(Record("t", 0, 6, b"b", b"v"), 1)])  # fetched under the old epoch: dropped
        assert coordinator._work.queued == 0
        coordinator.on_records([(Record("t", 0, 5, b"a", b"v"), 3)])
        assert engine.running[-1].record.offset == 5, "the record of the aborted transaction runs again"

    asyncio.run(scenario())


def test_a_revocation_commits_the_open_transaction_before_the_partitions_go_and_commits_nothing_itself() -> None:
    config = _config(processing_guarantee="exactly_once")
    engine, transactions = HeldEngine(), FakeTransactions(config)
    coordinator = Coordinator(config, engine, transactions=transactions)

    async def scenario() -> list[Any]:
        coordinator.on_assigned([Assignment("t", 0, 1, -1, None), Assignment("t", 1, 2, -1, None)])
        coordinator.on_records([(Record("t", 0, 0, b"a", b"v"), 1), (Record("t", 1, 0, b"b", b"v"), 2)])
        for item in list(engine.running):
            coordinator._on_complete(Completion(item.item_id, True, 1, 0.0, outputs=(Output("out", b"x"),)))
        return await coordinator.on_revoked([("t", 0)])

    points = asyncio.run(scenario())
    assert points == [], "nothing for the poller to commit outside the transaction"
    assert transactions.log[-1] == ("commit", [(0, 1), (1, 1)]), "every partition's outputs and offsets, at once"
    assert coordinator.assigned == [("t", 1)]


def test_lost_partitions_abort_the_open_transaction() -> None:
    config = _config(processing_guarantee="exactly_once")
    engine, transactions = HeldEngine(), FakeTransactions(config)
    coordinator = Coordinator(config, engine, transactions=transactions)

    async def scenario() -> None:
        coordinator.on_assigned([Assignment("t", 0, 1, -1, None)])
        coordinator.on_lost([("t", 0)])

    asyncio.run(scenario())
    assert transactions.log == [("abort", "partitions lost: t[0]")]


def test_a_commit_point_that_leaves_done_records_out_of_its_map_is_marked_lossy() -> None:
    from pyrallel_consumer.control.offset_tracker import PartitionOffsets

    tracker = PartitionOffsets(("t", 0), 1, 0, max_window=100)
    for offset in range(300):
        tracker.receive(offset)
    for offset in range(1, 250):
        tracker.complete(offset)
    point = tracker.commit_point()
    assert point is not None and point.offset == 0
    assert tracker.map_lossy, "offsets 100-249 are done but beyond the 100-offset window: they would run again"
    tracker.complete(0)
    assert tracker.commit_point() is not None and not tracker.map_lossy


def test_exactly_once_holds_back_a_transaction_whose_offset_map_is_lossy() -> None:
    config = _config(processing_guarantee="exactly_once", max_pending_offsets=100, ordering="unordered")
    engine, transactions = HeldEngine(), FakeTransactions(config)
    coordinator = Coordinator(config, engine, transactions=transactions)

    async def scenario() -> tuple[list[Any], list[Any]]:
        coordinator.on_assigned([Assignment("t", 0, 1, -1, None)])
        coordinator.on_records([(Record("t", 0, offset, None, b"v"), 1) for offset in range(300)])
        first, rest = engine.running[0], engine.running[1:]
        for item in rest:  # everything but offset 0 done: 1-299, most beyond the 100-offset window
            coordinator._on_complete(Completion(item.item_id, True, 1, 0.0))
        await coordinator._periodic_transaction()
        held = list(transactions.log)
        coordinator._on_complete(Completion(first.item_id, True, 1, 0.0))
        await coordinator._periodic_transaction()
        return held, list(transactions.log)

    held, after = asyncio.run(scenario())
    assert held == [], "not committed: records 100-299 would run again with their outputs visible"
    assert after == [("commit", [(0, 300)])], "committed once the map is exact again"


def test_the_integration_judge_counts_duplicates_gaps_and_reordered_keys() -> None:
    from tests.eos_support import judge_outputs

    delivered = {(0, 0): b"k1", (0, 1): b"k1", (0, 2): b"k2", (1, 0): b"k3"}
    outputs = [(0, b"k1", b"0:1:v"), (0, b"k1", b"0:0:v"), (0, b"k2", b"0:2:v"), (0, b"k2", b"0:2:v")]
    verdict = judge_outputs("control", delivered, outputs)
    assert (verdict.inputs, verdict.outputs, verdict.duplicates, verdict.missing, verdict.order_violations,
            verdict.unexpected) == (4, 4, 1, 1, 1, 0)
