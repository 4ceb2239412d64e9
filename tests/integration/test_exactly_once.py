"""Exactly-once consume-transform-produce on the real broker, judged by a read_committed reader of the outputs
against the input producer's delivery reports (tests/eos_support.py): every input yields its output exactly once
and the outputs of a key come in the order of their inputs, across a rebalance between two consumers, two SIGKILLs
of the consumer, and a zombie consumer (SIGSTOP past its session timeout, then SIGCONT) whose late transaction
must be fenced. The broker crash is in tests/faults/test_exactly_once_faults.py.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.eos_support import (
    EosConsumer,
    InputProducer,
    OutputWatcher,
    assert_exactly_once,
    judge_outputs,
    read_outputs,
    wait_until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
WAIT_S = 120.0


class _Run:
    """Input and output topics, the input producer, the consumers started so far and a watcher of the outputs."""

    def __init__(self, bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
                 tmp: Path, rate: int = 300) -> None:
        self.bootstrap, self.tmp = bootstrap, tmp
        self.source, self.sink, self.group = new_topic(PARTITIONS), new_topic(PARTITIONS), unique_name("eos")
        self.producer = InputProducer(bootstrap, self.source, rate=rate)
        self.watcher = OutputWatcher(bootstrap, self.sink, PARTITIONS)
        self.consumers: list[EosConsumer] = []
        self.producer.start()

    def consumer(self, name: str, instance: str | None = None, engine: str = "async") -> EosConsumer:
        started = EosConsumer(self.tmp, self.bootstrap, self.group, self.source, self.sink, name, instance, engine)
        self.consumers.append(started)
        return started

    def progress(self, more: int, what: str) -> None:
        """Until ``more`` further inputs have their output committed."""
        target = self.watcher.poll() + more
        wait_until(lambda: self.watcher.poll() >= target, WAIT_S, what)

    def finish(self, scenario: str) -> None:
        """Stop the input, wait for every output, stop the consumers (drained), then judge."""
        self.producer.stop()
        assert self.producer.failed == 0
        wait_until(lambda: self.watcher.covers(self.producer.delivered), WAIT_S, "an output for every input")
        for consumer in self.consumers:
            consumer.stop()
        outputs = read_outputs(self.bootstrap, self.sink, PARTITIONS)
        assert_exactly_once(judge_outputs(scenario, self.producer.delivered, outputs))

    def close(self) -> None:
        self.producer.stop()
        self.watcher.close()
        for consumer in self.consumers:
            consumer.stop(timeout_s=10)


@pytest.fixture
def run(kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str],
        tmp_path: Path) -> Iterator[_Run]:
    made = _Run(kafka_bootstrap, new_topic, unique_name, tmp_path)
    yield made
    made.close()


@pytest.mark.parametrize("engine", ["async", "process"])
def test_two_consumers_and_their_rebalances_produce_every_output_exactly_once(run: _Run, engine: str) -> None:
    a = run.consumer("a", engine=engine)
    run.progress(300, "a under way")
    b = run.consumer("b", engine=engine)
    wait_until(lambda: bool(b.owned()) and bool(a.owned()), WAIT_S, "a rebalance giving b partitions")
    run.progress(300, "both under way")
    assert a.stop() == 0, a.output()[-3000:]  # drained stop: its partitions go to b after its last transaction
    wait_until(lambda: b.owned() == set(range(PARTITIONS)), WAIT_S, "b to own every partition")
    run.progress(300, "b alone under way")
    run.finish(f"two consumers, two rebalances ({engine})")


@pytest.mark.parametrize("engine", ["async", "process"])
def test_a_consumer_killed_twice_mid_run_leaves_every_output_exactly_once(run: _Run, engine: str) -> None:
    """SIGKILL (with its workers) with transactions open; the restart (same instance: same transactional.id) aborts
    what its predecessor left open and starts from the last committed transaction."""
    first = run.consumer("x1", instance="x", engine=engine)
    run.progress(500, "the first process under way")
    first.kill()
    second = run.consumer("x2", instance="x", engine=engine)
    run.progress(500, "the second process under way")
    second.kill()
    run.consumer("x3", instance="x", engine=engine)
    run.progress(300, "the third process under way")
    run.finish(f"consumer SIGKILL x2 ({engine})")


def test_a_zombie_consumer_is_fenced_and_its_late_transaction_never_shows(run: _Run) -> None:
    """SIGSTOP one of two consumers past its session timeout: the other takes its partitions and goes on. SIGCONT:
    the zombie's open transaction (and anything it tries to commit for partitions it no longer owns) is refused."""
    zombie, other = run.consumer("zombie"), run.consumer("other")
    wait_until(lambda: bool(zombie.owned()) and bool(other.owned()), WAIT_S, "both to own partitions")
    run.progress(500, "both under way")
    taken = zombie.owned()
    zombie.signal(signal.SIGSTOP)
    wait_until(lambda: other.owned() == set(range(PARTITIONS)), WAIT_S,
               f"the other consumer to take the stopped one's partitions {sorted(taken)}")
    run.progress(300, "the other consumer alone under way")
    zombie.signal(signal.SIGCONT)
    fenced = ("Aborting the transaction", "Exactly-once producer failed")
    wait_until(lambda: any(zombie.lines(marker) for marker in fenced), WAIT_S,
               "the zombie's late transaction to be refused")
    run.progress(300, "processing after the zombie woke up")
    run.finish("zombie consumer (SIGSTOP past the session, SIGCONT)")
