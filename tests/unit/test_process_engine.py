"""What only the process engine does: worker supervision, recycling, size limits, handler import, log forwarding.

The handlers are top-level functions of this module, which the spawned workers import by name. Their state
goes to files in the directory named by the record's ``dir`` header.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.execution.engine import Completion, EngineError, RetryPolicy, WorkItem
from pyrallel_consumer.execution.process import worker
from pyrallel_consumer.execution.process.codec import decode_record, encode_record
from pyrallel_consumer.execution.process.engine import ProcessExecutionEngine, RecordTooLargeError
from pyrallel_consumer.execution.process.worker_handle import WorkerDiedError
from pyrallel_consumer.record import Record

pytestmark = pytest.mark.unit

WAIT_S = 60.0
WORKER_LOGGER = "pyrallel_test.worker"


# ---- handlers run by the workers ----------------------------------------------------------------------------


def _dir(record: Record) -> Path:
    return Path((dict(record.headers)["dir"] or b"").decode())


def _attempt(record: Record) -> int:
    path = _dir(record) / f"{record.offset}.attempts"
    with path.open("ab") as out:
        out.write(b".")
    return path.stat().st_size


def first_attempt_blocks(record: Record) -> None:
    """Writes its pid per attempt; the first attempt blocks until its worker is killed."""
    attempt = _attempt(record)
    (_dir(record) / f"{record.offset}.pid{attempt}").write_text(str(os.getpid()))
    if attempt == 1:
        time.sleep(3600)


def exits_on_bad(record: Record) -> None:
    if record.value == b"bad":
        os._exit(7)


def batch_exits_on_bad(records: list[Record]) -> None:
    if any(record.value == b"bad" for record in records):
        os._exit(7)


def note_pid(record: Record) -> None:
    (_dir(record) / f"{record.offset}.pid").write_text(str(os.getpid()))


def logs(record: Record) -> None:
    logger = logging.getLogger(WORKER_LOGGER)
    logger.info("hello from offset %d", record.offset)
    logger.debug("not shipped: below the parent's level")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("handled failure at offset %d", record.offset)


def does_nothing(record: Record) -> None:
    """A no-op."""


def waits_for_go(record: Record) -> None:
    """Writes its pid, then runs until the test creates the ``go`` file."""
    note_pid(record)
    go = _dir(record) / "go"
    deadline = time.monotonic() + WAIT_S
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def leaves_a_thread(record: Record) -> None:
    """Leaves a non-daemon thread running, which keeps the worker's interpreter from exiting."""
    note_pid(record)
    threading.Thread(target=time.sleep, args=(3600,)).start()


def _exit_now(outbox: object) -> None:
    os._exit(9)


def dies_after_returning(record: Record) -> None:
    """The worker dies after the handler returned, when it would report the result: a crash outside the handler."""
    worker._Outbox.flush = _exit_now  # in this worker process only


SURROGATE_MESSAGE = "cannot open " + b"\xff".decode(errors="surrogateescape")


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this error")


def fails_with_surrogates(record: Record) -> None:
    raise ValueError(SURROGATE_MESSAGE)


def fails_unprintably(record: Record) -> None:
    raise UnprintableError


async def async_handler(record: Record) -> None:
    """Not for this engine."""


# ---- harness --------------------------------------------------------------------------------------------------


def _read_if_present(path: Path) -> str:
    return path.read_text() if path.exists() else ""


class Run:
    def __init__(self, engine: ProcessExecutionEngine, directory: Path) -> None:
        self.engine = engine
        self.directory = directory
        self.completions: list[Completion] = []

    def submit(self, item_id: int, value: bytes = b"ok") -> None:
        headers = (("dir", str(self.directory).encode()),)
        self.engine.submit(WorkItem(item_id, Record("t", 0, item_id, None, value, headers)))

    async def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.completions) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(self.completions)} of {count} completions after {WAIT_S}s")
            await asyncio.sleep(0.01)

    async def wait_for_file(self, path: Path) -> str:
        deadline = time.monotonic() + WAIT_S
        while not (text := _read_if_present(path)):
            if time.monotonic() > deadline:
                pytest.fail(f"{path} did not appear within {WAIT_S}s")
            await asyncio.sleep(0.01)
        return text

    def by_id(self) -> dict[int, Completion]:
        return {c.item_id: c for c in self.completions}


def make_config(**overrides: Any) -> ConsumerConfig:
    fields: dict[str, Any] = {"bootstrap_servers": "localhost:9092", "group_id": "g", "topics": ["t"],
                              "engine": "process", "process_workers": 2}
    return ConsumerConfig(**(fields | overrides))


RETRY = RetryPolicy(max_retries=3, backoff_s=0.01, max_backoff_s=0.05, timeout_s=30.0)
MakeRun = Callable[..., Awaitable[Run]]


@pytest.fixture
async def make_run(tmp_path: Path) -> AsyncIterator[MakeRun]:
    engines: list[ProcessExecutionEngine] = []

    async def make(handler: Any, retry: RetryPolicy = RETRY, batch: bool = False, **config: Any) -> Run:
        engine = ProcessExecutionEngine(handler, retry, make_config(**config), batch=batch)
        engines.append(engine)
        run = Run(engine, tmp_path)
        await engine.start(run.completions.append)
        return run

    yield make
    for engine in engines:
        await engine.shutdown(drain=False, timeout_s=5)
    assert multiprocessing.active_children() == []


# ---- tests ----------------------------------------------------------------------------------------------------


async def test_killed_worker_item_completes_once_on_a_replacement(make_run: MakeRun) -> None:
    run = await make_run(first_attempt_blocks, process_workers=1)
    run.submit(1)
    first_pid = int(await run.wait_for_file(run.directory / "1.pid1"))
    os.kill(first_pid, signal.SIGKILL)
    await run.wait_for(1)
    await run.engine.shutdown(drain=True, timeout_s=WAIT_S)

    (completion,) = run.completions
    assert completion.ok
    assert completion.attempts == 2
    assert int((run.directory / "1.pid2").read_text()) != first_pid
    assert run.engine.workers_started == 2


async def test_item_that_keeps_killing_workers_fails(make_run: MakeRun) -> None:
    run = await make_run(exits_on_bad, RetryPolicy(max_retries=1, backoff_s=0.01, timeout_s=30.0),
                         process_workers=1)
    for item_id in range(1, 11):
        run.submit(item_id, b"bad" if item_id == 5 else b"ok")
    await run.wait_for(10)

    done = run.by_id()
    assert Counter(c.item_id for c in run.completions) == Counter(range(1, 11))
    assert not done[5].ok
    assert done[5].attempts == 2
    assert done[5].error_type == WorkerDiedError.__name__
    assert "exited with code 7" in (done[5].error_message or "")
    # the items queued behind the crash were not charged for it
    assert all(done[i].ok and done[i].attempts == 1 for i in done if i != 5)


async def test_crash_outside_the_handler_fails_the_record_after_its_retries(make_run: MakeRun) -> None:
    run = await make_run(dies_after_returning, RetryPolicy(max_retries=2, backoff_s=0.01, timeout_s=30.0),
                         process_workers=1)
    run.submit(1)
    await run.wait_for(1)

    (completion,) = run.completions
    assert (completion.ok, completion.attempts, completion.error_type) == (False, 3, WorkerDiedError.__name__)
    assert "exited with code 9 outside the handler" in (completion.error_message or "")


@pytest.mark.parametrize(("handler", "error_type", "message"), [
    (fails_with_surrogates, "ValueError", "cannot open \\udcff"),
    (fails_unprintably, "UnprintableError", "could not be formatted"),
])
async def test_failure_whose_message_is_not_plain_text_is_reported(
    make_run: MakeRun, handler: Any, error_type: str, message: str,
) -> None:
    run = await make_run(handler, RetryPolicy(max_retries=1, backoff_s=0.01, timeout_s=30.0), process_workers=1)
    run.submit(1)
    await run.wait_for(1)

    (completion,) = run.completions
    assert (completion.ok, completion.attempts, completion.error_type) == (False, 2, error_type)
    assert message in (completion.error_message or "")
    assert run.engine.workers_started == 1


async def test_workers_work_with_fd_numbers_above_1024(make_run: MakeRun) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip("needs 1200 open files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    fillers: list[int] = []
    try:
        while not fillers or fillers[-1] < 1024:  # the workers' pipes get (and keep) the next, higher numbers
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        run = await make_run(note_pid, process_workers=1)
        for item_id in range(1, 6):
            run.submit(item_id)
        await run.wait_for(5)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert all(c.ok and c.attempts == 1 for c in run.completions)
    assert run.engine.workers_started == 1


async def test_sigterm_does_not_interrupt_a_worker(make_run: MakeRun) -> None:
    run = await make_run(waits_for_go, process_workers=1)
    run.submit(1)
    pid = int(await run.wait_for_file(run.directory / "1.pid"))
    os.kill(pid, signal.SIGTERM)  # as systemd does to every process of the service at stop
    (run.directory / "go").touch()
    await run.wait_for(1)

    (completion,) = run.completions
    assert (completion.ok, completion.attempts) == (True, 1)
    assert run.engine.workers_started == 1


async def test_shutdown_while_starting_fails_start_cleanly() -> None:
    engine = ProcessExecutionEngine(does_nothing, RETRY, make_config())
    starting = asyncio.create_task(engine.start(lambda completion: None))
    await asyncio.sleep(0)  # one loop step: start() spawned the workers and now waits for them
    assert engine.workers_started == engine.pool_size
    assert not starting.done()

    await engine.shutdown(drain=True, timeout_s=5)
    with pytest.raises(EngineError, match=r"shutdown\(\) was called while start\(\) waited"):
        await starting
    assert multiprocessing.active_children() == []


async def test_unreadable_exit_is_still_handled(make_run: MakeRun, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    run = await make_run(first_attempt_blocks, process_workers=1)

    def unreadable(worker: object) -> None:
        raise msgpack.FormatError("corrupt stream")

    monkeypatch.setattr(run.engine._supervisor, "_read_all", unreadable)
    run.submit(1)
    os.kill(int(await run.wait_for_file(run.directory / "1.pid1")), signal.SIGKILL)
    await run.wait_for(1)
    await asyncio.wait_for(run.engine.shutdown(drain=True, timeout_s=WAIT_S), WAIT_S)

    (completion,) = run.completions
    assert (completion.ok, completion.attempts) == (True, 2)
    assert "Could not read what worker process" in caplog.text


async def test_record_too_large_fails_without_reaching_a_worker(make_run: MakeRun) -> None:
    run = await make_run(note_pid, max_item_bytes=1024)
    big = Record("t", 0, 1, None, b"x" * 2000, (("dir", str(run.directory).encode()),))
    run.submit(1, b"x" * 2000)
    run.submit(2, b"small")
    await run.wait_for(2)

    done = run.by_id()
    assert done[2].ok
    assert not done[1].ok
    assert done[1].error_type == RecordTooLargeError.__name__
    assert "max_item_bytes=1024" in (done[1].error_message or "")
    assert f"is {len(encode_record(1, big))} bytes" in (done[1].error_message or "")
    assert not (run.directory / "1.pid").exists()


async def test_a_batch_that_kills_its_worker_is_charged_and_the_batch_behind_it_is_not(make_run: MakeRun) -> None:
    run = await make_run(batch_exits_on_bad, RetryPolicy(max_retries=1, backoff_s=0.01, timeout_s=30.0),
                         batch=True, process_workers=1)
    headers = (("dir", str(run.directory).encode()),)
    batches = [[1, 2], [3, 4]]
    for ids in batches:
        run.engine.submit_batch([WorkItem(i, Record("t", 0, i, None, b"bad" if i == 2 else b"ok", headers))
                                 for i in ids])
    await run.wait_for(4)

    done = run.by_id()
    assert [(done[i].ok, done[i].attempts, done[i].error_type) for i in (1, 2)] == [
        (False, 2, WorkerDiedError.__name__)] * 2
    assert [(done[i].ok, done[i].attempts) for i in (3, 4)] == [(True, 1)] * 2


async def test_a_too_large_record_of_a_batch_fails_alone(make_run: MakeRun) -> None:
    run = await make_run(batch_exits_on_bad, batch=True, max_item_bytes=1024)
    headers = (("dir", str(run.directory).encode()),)
    run.engine.submit_batch([WorkItem(1, Record("t", 0, 1, None, b"x" * 2000, headers)),
                             WorkItem(2, Record("t", 0, 2, None, b"ok", headers))])
    await run.wait_for(2)

    done = run.by_id()
    assert (done[1].ok, done[1].error_type) == (False, RecordTooLargeError.__name__)
    assert (done[2].ok, done[2].attempts) == (True, 1)


def _nested_handler() -> Callable[[Record], None]:
    def nested(record: Record) -> None:
        """Not importable by name."""

    return nested


@pytest.mark.parametrize(("handler", "message"), [
    (lambda record: None, "lambda or a nested function"),
    (_nested_handler(), "lambda or a nested function"),
    (async_handler, "engine='async'"),
    ("no_such_module_pyrallel:handle", "No module named 'no_such_module_pyrallel'"),
    (f"{__name__}:missing_handler", "missing_handler"),
    ("not an import string", "package.module:name"),
    (42, "not a handler function"),
])
async def test_unusable_handler_fails_at_start(handler: Any, message: str) -> None:
    engine = ProcessExecutionEngine(handler, RETRY, make_config())
    with pytest.raises(EngineError, match=message.replace("(", r"\(").replace(".", r"\.")):
        await engine.start(lambda completion: None)
    await engine.shutdown(drain=False, timeout_s=5)
    assert multiprocessing.active_children() == []


async def test_async_handler_by_import_string_fails_at_start() -> None:
    engine = ProcessExecutionEngine(f"{__name__}:async_handler", RETRY, make_config())
    with pytest.raises(EngineError, match="engine='async'"):
        await engine.start(lambda completion: None)
    assert multiprocessing.active_children() == []


async def test_import_string_handler(make_run: MakeRun) -> None:
    run = await make_run(f"{__name__}:note_pid")
    for item_id in range(1, 6):
        run.submit(item_id)
    await run.wait_for(5)
    assert all(c.ok for c in run.completions)
    assert int((run.directory / "1.pid").read_text()) != os.getpid()


async def test_recycled_workers_lose_and_duplicate_nothing(make_run: MakeRun) -> None:
    run = await make_run(note_pid, max_tasks_per_child=5)
    for item_id in range(1, 101):
        run.submit(item_id)
    await run.wait_for(100)
    await run.engine.shutdown(drain=True, timeout_s=WAIT_S)

    assert Counter(c.item_id for c in run.completions) == Counter(range(1, 101))
    assert all(c.ok and c.attempts == 1 for c in run.completions)
    assert run.engine.workers_started > run.engine.pool_size
    pids = Counter((run.directory / f"{i}.pid").read_text() for i in range(1, 101))
    assert len(pids) > run.engine.pool_size
    assert max(pids.values()) <= 6  # 5 tasks per child, +10% jitter


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_recycled_worker_that_does_not_exit_is_killed(make_run: MakeRun) -> None:
    run = await make_run(leaves_a_thread, process_workers=1, max_tasks_per_child=1)
    run.submit(1)
    await run.wait_for(1)
    pid = int((run.directory / "1.pid").read_text())
    deadline = time.monotonic() + WAIT_S
    while _alive(pid):
        assert time.monotonic() < deadline, f"recycled worker {pid} is still running"
        await asyncio.sleep(0.05)


async def test_worker_logs_reach_parent_logging(make_run: MakeRun, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run = await make_run(logs)
    run.submit(7)
    await run.wait_for(1)
    await run.engine.shutdown(drain=True, timeout_s=WAIT_S)  # stops the listener: every record is delivered

    worker_records = [r for r in caplog.records if r.name == WORKER_LOGGER]
    assert [r.getMessage().splitlines()[0] for r in worker_records] == [
        "hello from offset 7", "handled failure at offset 7",
    ]
    assert all(r.process != os.getpid() for r in worker_records)
    assert "RuntimeError: boom" in worker_records[1].getMessage()
    assert worker_records[1].levelno == logging.ERROR


PARENT = """
import asyncio, pathlib, sys
from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.execution.engine import RetryPolicy, WorkItem
from pyrallel_consumer.execution.process.engine import ProcessExecutionEngine
from pyrallel_consumer.record import Record

async def main():
    config = ConsumerConfig(bootstrap_servers="localhost:9092", group_id="g", topics=["t"], process_workers=2)
    engine = ProcessExecutionEngine(sys.argv[1], RetryPolicy(timeout_s=3600), config)
    await engine.start(print)
    engine.submit(WorkItem(1, Record("t", 0, 1, None, b"", (("dir", sys.argv[2].encode()),))))
    while not pathlib.Path(sys.argv[2], "1.pid1").exists():
        await asyncio.sleep(0.01)
    if sys.argv[3] == "stay":
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _parent_command(tmp_path: Path, then: str) -> tuple[list[str], dict[str, str]]:
    """Runs PARENT: it starts an engine whose only record blocks, waits until it runs, then stays or returns."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    return [sys.executable, "-c", PARENT, f"{__name__}:first_attempt_blocks", str(tmp_path), then], env


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_workers_do_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    command, env = _parent_command(tmp_path, "stay")
    parent = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        pid_file = tmp_path / "1.pid1"
        deadline = time.monotonic() + WAIT_S
        while not _read_if_present(pid_file):
            assert parent.poll() is None, "the parent process failed"
            assert time.monotonic() < deadline, "the handler did not start"
            time.sleep(0.02)
        worker = int(pid_file.read_text())
    finally:
        parent.kill()
        parent.wait(WAIT_S)
    deadline = time.monotonic() + WAIT_S
    try:
        while _alive(worker):
            assert time.monotonic() < deadline, f"worker {worker} outlived its killed parent"
            time.sleep(0.02)
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_parent_that_never_shuts_down_the_engine_still_exits(tmp_path: Path) -> None:
    # workers ignore SIGTERM, which multiprocessing's exit hook sends before it joins them
    command, env = _parent_command(tmp_path, "return")
    assert subprocess.run(command, env=env, stdout=subprocess.DEVNULL, timeout=WAIT_S).returncode == 0


PARENT_SIDE = ["engine", "ledger", "log_relay", "supervisor", "timeout_watch", "worker_handle"]


def test_worker_module_leaves_the_parent_side_out() -> None:
    # a spawned worker unpickles its entry point, importing the worker module by name
    code = "import sys, pyrallel_consumer.execution.process.worker as w; print(w.worker_main.__module__, *sys.modules)"
    entry_module, *modules = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                            check=True, timeout=WAIT_S).stdout.split()
    assert entry_module == worker.__name__
    assert not {f"pyrallel_consumer.execution.process.{name}" for name in PARENT_SIDE} & set(modules)


def test_pool_size_defaults_to_the_cpu_count() -> None:
    engine = ProcessExecutionEngine(does_nothing, RETRY, make_config(process_workers=0))
    assert engine.pool_size == (os.cpu_count() or 1)


headers = st.lists(st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=50))), max_size=4)
records = st.builds(
    Record,
    topic=st.text(min_size=1, max_size=30),
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
    key=st.one_of(st.none(), st.binary(max_size=100)),
    value=st.one_of(st.none(), st.binary(max_size=1000)),
    headers=headers.map(tuple),
    timestamp=st.integers(-1, 2**63 - 1),
)


@given(item_id=st.integers(0, 2**53), record=records)
def test_record_encoding_round_trips(item_id: int, record: Record) -> None:
    fields = msgpack.unpackb(encode_record(item_id, record), use_list=False, raw=False)
    assert fields[0] == item_id
    assert decode_record(fields) == record
