"""The process engine on the real broker: a worker process killed while it holds records."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.integration import process_handlers
from tests.integration.process_handlers import SpanLog, attempt_pids
from tests.support import committed_map, wait_for

from pyrallel_consumer import ConsumerConfig, Ordering, PyrallelConsumer
from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration

RECORDS = 400
BLOCKED = 50


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigkill_of_a_worker_loses_nothing_and_never_commits_past_what_it_held(
    kafka_bootstrap: str, new_topic: Callable[[int], str], unique_name: Callable[[str], str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, workers: int,
) -> None:
    """Record 50's first attempt blocks its worker, and the items queued behind it wait on that worker. The test
    SIGKILLs the worker: the engine re-queues what it held, record 50 charged with the attempt. Record 50's later
    attempts fail until the test releases it, so it stays incomplete while every other record completes, and
    every commit seen from the kill until the release stays at 50. With one worker the whole pool dies and the
    replacement runs everything after 50; with two, the other worker keeps going meanwhile."""
    topic, group = new_topic(1), unique_name("g")
    produce_keyed(kafka_bootstrap, topic, RECORDS, keys=RECORDS)
    monkeypatch.setenv(process_handlers.DIR_ENV, str(tmp_path))
    monkeypatch.setenv(process_handlers.BLOCK_ENV, str(BLOCKED))
    handled = SpanLog("process", tmp_path)
    seen_commits: list[int] = []

    def committed_at(offset: int, completed_above: int | None = None) -> bool:
        """The group committed ``offset`` (with that many completed records mapped above it)."""
        at, omap = committed_map(kafka_bootstrap, group, topic)
        seen_commits.append(at)
        if completed_above is None:
            return at == offset
        return at == offset and omap is not None and omap.completed_count == completed_above

    def never_past_50(condition: Callable[[], bool]) -> Callable[[], bool]:
        """``condition``, checking at every poll that the commit has not passed the record the dead worker held."""

        def check() -> bool:
            committed_at(BLOCKED)
            if seen_commits[-1] > BLOCKED:
                raise AssertionError(f"committed {seen_commits[-1]} while record {BLOCKED} was still incomplete")
            return condition()

        return check

    config = ConsumerConfig(
        bootstrap_servers=kafka_bootstrap, group_id=group, topics=[topic], ordering=Ordering.UNORDERED,
        engine="process", process_workers=workers, ipc_batch_size=8, commit_interval_ms=100,
        max_retries=1000, retry_backoff_ms=20, max_retry_backoff_ms=100,
    )
    async with PyrallelConsumer(config, process_handlers.handle_or_block) as consumer:
        await wait_for(lambda: len(attempt_pids(tmp_path)) == 1, what="record 50 blocking its worker")
        await wait_for(lambda: committed_at(BLOCKED), what="commit at the blocked record 50")
        victim = attempt_pids(tmp_path)[0]
        if workers == 1:  # the only worker is stuck: nothing after 50 can have run yet
            assert {s.offset for s in handled.spans()} == set(range(BLOCKED))
        seen_commits.clear()
        os.kill(victim, signal.SIGKILL)

        await wait_for(never_past_50(lambda: not _alive(victim)), what="the killed worker reaped")
        await wait_for(never_past_50(lambda: len(attempt_pids(tmp_path)) >= 2), what="record 50 retried elsewhere")
        await wait_for(never_past_50(lambda: len({s.offset for s in handled.spans()}) == RECORDS - 1),
                       what="every record but 50 handled")
        await wait_for(never_past_50(lambda: committed_at(BLOCKED, completed_above=RECORDS - BLOCKED - 1)),
                       what="a commit covering every other record, still at 50")
        # Every commit seen from the kill until record 50's release stayed at the record the dead worker held.
        assert seen_commits and set(seen_commits) == {BLOCKED}

        (tmp_path / process_handlers.RELEASE_FILE).touch()
        await wait_for(lambda: committed_at(RECORDS), what="commit at the end after the release")
        snapshot = consumer.metrics()

    spans = handled.spans()
    assert victim not in attempt_pids(tmp_path)[1:]
    assert {s.offset for s in spans} == set(range(RECORDS))  # nothing lost
    # What the victim completed was reported before it died (the commit at 50 covered it): nothing ran twice.
    assert [o for o, n in Counter(s.offset for s in spans).items() if n > 1] == []
    if workers == 1:  # everything after 50 was held by the victim or waited for it: the replacement ran it all
        assert all(s.pid != victim for s in spans if s.offset > BLOCKED)
    assert (snapshot.records_succeeded, snapshot.records_failed) == (RECORDS, 0)
    assert snapshot.retries == len(attempt_pids(tmp_path)) - 1
