"""The parent's side of the worker processes: keeps the pool full and busy, and settles every worker's end.

ProcessExecutionEngine owns one and calls it on the event loop that started the engine, where every callback
it registers (pipe readers, process sentinels, timers) runs too. It starts the workers and replaces those that
retire or die (backing off while they keep failing), hands the ledger's waiting items to the least-loaded
workers, reads what they send, kills workers whose attempt outlived the timeout, charges the item a dead worker
was running, and stops every worker at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.util
import os
import random
from typing import Final

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.execution.engine import EngineError
from pyrallel_consumer.execution.process import codec
from pyrallel_consumer.execution.process.ledger import Item, ItemLedger
from pyrallel_consumer.execution.process.log_relay import WorkerLogRelay, logging_levels
from pyrallel_consumer.execution.process.timeout_watch import TimeoutWatch
from pyrallel_consumer.execution.process.worker import WorkerSpec
from pyrallel_consumer.execution.process.worker_handle import WorkerHandle, describe_exit

log = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S: Final = 120.0
_MIN_BATCH_BYTES: Final = 4 << 20
_MAX_RESPAWN_DELAY_S: Final = 30.0


class RespawnBackoff:
    """How long replacements wait: not at all while workers are healthy; after workers that failed to start or
    died before any result, 0.5 s doubling with each of them up to 30 s, until a worker delivers a result."""

    def __init__(self) -> None:
        self._failures = 0

    def failed(self) -> None:
        self._failures += 1

    def healthy(self) -> None:
        self._failures = 0

    def delay_s(self) -> float:
        if not self._failures:
            return 0.0
        return min(_MAX_RESPAWN_DELAY_S, 0.5 * 2.0 ** (self._failures - 1))


class Supervisor:
    """The pool of worker processes of one engine, from :meth:`start` to :meth:`terminate`."""

    def __init__(self, config: ConsumerConfig, timeout_s: float, ledger: ItemLedger, *, batches: bool = False) -> None:
        self.size = config.process_workers or os.cpu_count() or 1
        self._tasks_per_child = config.max_tasks_per_child
        self._batch = config.ipc_batch_size
        self._capacity = 2 * config.ipc_batch_size  # items a worker holds: one batch running, one queued
        self._max_batch_bytes = max(_MIN_BATCH_BYTES, config.max_item_bytes)
        if batches:  # each item is a handler's batch already: one per message, one running and one queued
            self._batch, self._capacity = 1, 2
            self._max_batch_bytes = max(_MIN_BATCH_BYTES, config.max_item_bytes * config.batch_max_records + 1024)
        self._timeout_s = timeout_s
        self._ledger = ledger
        self._ctx = multiprocessing.get_context("spawn")
        self._spec: WorkerSpec | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[WorkerHandle] = []
        self._workers_started = 0
        self._backoff = RespawnBackoff()
        self._startup: asyncio.Future[None] | None = None
        self._serving = False
        self._terminating = False
        self._terminated = asyncio.Event()
        self._dispatch_scheduled = False
        self._respawn_timer: asyncio.TimerHandle | None = None
        self._timeouts = TimeoutWatch(timeout_s, self._workers, self._on_timeout)
        self._logs = WorkerLogRelay()

    @property
    def workers_started(self) -> int:
        return self._workers_started

    # ---- life cycle ----------------------------------------------------------------------------------------

    async def start(self, handler_ref: str, deserializers: tuple[str | None, str | None] = (None, None)) -> None:
        """Start the pool and wait until every worker loaded the handler (and the deserializers named by
        reference); EngineError when they cannot."""
        self._spec = WorkerSpec(handler_ref, logging_levels(), self._max_batch_bytes + 64, max(1, self._batch // 2),
                                deserializers)
        self._loop = loop = asyncio.get_running_loop()
        self._logs.start()
        self._timeouts.start(loop)
        multiprocessing.util.Finalize(self, _kill_workers, args=(self._workers,), exitpriority=0)
        self._startup = loop.create_future()
        try:
            for _ in range(self.size):
                self._spawn()
            await asyncio.wait_for(self._startup, _STARTUP_TIMEOUT_S)
        except TimeoutError as exc:
            raise EngineError(
                f"worker processes did not load handler {handler_ref} within {_STARTUP_TIMEOUT_S:g}s"
            ) from exc
        except OSError as exc:
            raise EngineError(f"could not start worker processes: {exc}") from exc
        self._serving = True

    def abort_start(self, error: EngineError) -> None:
        """Make a start() that still waits for its workers fail with ``error``."""
        if self._startup is not None and not self._startup.done():
            self._startup.set_exception(error)

    async def terminate(self) -> None:
        """Stop every worker (idle ones cleanly, busy ones by force) and wait until none is left. A second call
        (shutdown() while start() fails) waits for the first."""
        if self._terminating:
            await self._terminated.wait()
            return
        self._terminating = True
        if self._respawn_timer is not None:
            self._respawn_timer.cancel()
        self._timeouts.stop()
        for worker in self._workers:
            worker.retiring = True
            if worker.held or not worker.ready:
                worker.process.kill()
            else:
                worker.request_stop()
        await asyncio.gather(*(w.exited for w in self._workers))
        self._logs.stop()
        self._terminated.set()

    async def wait_terminated(self) -> None:
        await self._terminated.wait()

    # ---- workers -------------------------------------------------------------------------------------------

    def _spawn(self) -> None:
        loop, spec = self._require_loop(), self._spec
        if spec is None:
            raise EngineError("the engine is not started")
        limit = 0
        if self._tasks_per_child:
            limit = max(1, round(self._tasks_per_child * random.uniform(0.9, 1.1)))
        worker = WorkerHandle.spawn(self._ctx, spec, f"pyrallel-worker-{self._workers_started + 1}", limit, loop)
        self._workers_started += 1
        self._workers.append(worker)
        loop.add_reader(worker.in_fd, self._on_readable, worker)
        loop.add_reader(worker.process.sentinel, self._on_exit, worker)

    def _ensure_pool(self) -> None:
        """Start replacements for retired or dead workers; back off while workers keep failing to start."""
        if self._terminating or not self._serving or self._respawn_timer is not None:
            return
        delay = self._backoff.delay_s()
        if delay:
            self._respawn_timer = self._require_loop().call_later(delay, self._fill_pool)
        else:
            self._fill_pool()

    def _fill_pool(self) -> None:
        self._respawn_timer = None
        if self._terminating:
            return
        missing = self.size - sum(1 for w in self._workers if not w.retiring)
        try:
            for _ in range(missing):
                self._spawn()
        except OSError:
            log.exception("Could not start a worker process")
            self._backoff.failed()
            self._ensure_pool()

    def _on_timeout(self, worker: WorkerHandle, item_id: int) -> None:
        worker.kill_for_timeout(item_id, self._timeout_s)
        self._ensure_pool()

    def _on_exit(self, worker: WorkerHandle) -> None:
        """Settle a worker's exit. Its ``exited`` future is resolved whatever happens: shutdown waits for it."""
        loop = self._require_loop()
        loop.remove_reader(worker.process.sentinel)
        try:
            self._read_all(worker)
        except Exception:
            log.exception("Could not read what worker process %d sent before it exited", worker.pid)
        finally:
            loop.remove_reader(worker.in_fd)
            code = worker.reap()
            self._workers.remove(worker)
            worker.exited.set_result(None)
        if not worker.ready:
            reason = worker.fatal or (
                f"the worker {describe_exit(code)} before loading it (see its stderr; a worker re-imports the "
                "__main__ module, whose entry point must be guarded by if __name__ == '__main__')"
            )
            if not self._serving:
                self.abort_start(EngineError(f"worker process could not load the handler: {reason}"))
            elif not self._terminating:
                self._backoff.failed()
                log.error("Worker process %d failed to start: %s", worker.pid, reason)
        elif not (worker.stop_sent or worker.timed_out is not None or self._terminating):
            log.warning("Worker process %d %s; re-queueing the %d item(s) it held",
                        worker.pid, describe_exit(code), len(worker.held))
            if not worker.reported:
                self._backoff.failed()  # died before any result: replacing it at once could loop hot
        self._requeue_held(worker, code)
        self._ensure_pool()
        self.schedule_dispatch()

    def _requeue_held(self, worker: WorkerHandle, code: int | None) -> None:
        """Charge an attempt to the item the dead worker is blamed for; re-queue the rest for free."""
        culprit, error = worker.blame(code, self._timeout_s)
        for item_id, item in reversed(worker.held.items()):
            if not self._ledger.holds(item):
                continue
            if item_id == culprit:
                self._ledger.attempt_ended(item, error)
            else:
                self._ledger.put_back(item)
        worker.held.clear()

    # ---- what workers send ---------------------------------------------------------------------------------

    def _on_readable(self, worker: WorkerHandle) -> None:
        data = worker.read()
        if data is None:
            return
        if not data:
            self._require_loop().remove_reader(worker.in_fd)  # EOF: the sentinel reports the exit
            return
        self._feed(worker, data)

    def _read_all(self, worker: WorkerHandle) -> None:
        """Everything a dead worker sent before it died: completions and log records are still valid."""
        while True:
            try:
                data = worker.read()
            except OSError:
                return
            if not data:
                return
            self._feed(worker, data)

    def _feed(self, worker: WorkerHandle, data: bytes) -> None:
        for message in worker.messages(data):
            kind = message[0]
            if kind == codec.DONE:
                self._on_results(worker, message[1])
            elif kind == codec.LOG:
                self._logs.deliver(message[1])
            elif kind == codec.READY:
                self._on_ready(worker)
            else:
                worker.fatal = message[1]

    def _on_ready(self, worker: WorkerHandle) -> None:
        worker.ready = True
        startup = self._startup
        if startup is not None and not startup.done() and all(w.ready for w in self._workers):
            startup.set_result(None)
        self.schedule_dispatch()

    def _on_results(self, worker: WorkerHandle, results: tuple[codec.Result, ...]) -> None:
        worker.reported = True
        self._backoff.healthy()  # a worker that delivers results is healthy: respawns need not wait any more
        for result in results:
            item_id, error = codec.decode_result(result)
            item = worker.held.pop(item_id, None)
            if item is None or not self._ledger.holds(item):
                continue  # cancelled while it ran: the result is dropped
            if item.members is None:  # what a result's second field carries depends on the item (see codec.Result)
                self._ledger.attempt_ended(item, error, outputs=codec.decode_outputs(result))
            else:
                self._ledger.attempt_ended(item, error, failures=codec.batch_failures(result))
        if worker.retiring and not worker.held and worker.timed_out is None:
            worker.request_stop()
        self.schedule_dispatch()

    # ---- dispatch ------------------------------------------------------------------------------------------

    def schedule_dispatch(self) -> None:
        """Dispatch once per loop iteration, so items submitted together travel together."""
        if not self._dispatch_scheduled and self._loop is not None:
            self._dispatch_scheduled = True
            self._loop.call_soon(self._dispatch)

    def _free(self, worker: WorkerHandle) -> int:
        if not worker.ready or worker.retiring:
            return 0
        free = self._capacity - len(worker.held)
        if worker.task_limit:
            free = min(free, worker.task_limit - worker.assigned)
        return free

    def _dispatch(self) -> None:
        """Hand waiting items to the least-loaded workers, spread evenly, up to a batch per message."""
        self._dispatch_scheduled = False
        while self._ledger.waiting():
            candidates = [w for w in self._workers if self._free(w) > 0]
            if not candidates:
                return
            worker = min(candidates, key=lambda w: len(w.held))
            share = -(-self._ledger.waiting() // len(candidates))
            batch = self._ledger.take(min(share, self._free(worker), self._batch), self._max_batch_bytes)
            if not batch:
                return
            self._send_work(worker, batch)

    def _send_work(self, worker: WorkerHandle, batch: list[Item]) -> None:
        for item in batch:
            worker.held[item.item_id] = item
        worker.assigned += sum(len(item.sent) or 1 for item in batch)  # records: a handler's batch counts each
        worker.send(codec.encode_work([item.payload for item in batch]))
        if worker.task_limit and worker.assigned >= worker.task_limit:
            worker.retiring = True  # recycled: finishes what it holds, then gets STOP
            self._ensure_pool()
        self._timeouts.arm(self._timeout_s)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise EngineError("the engine is not started")
        return self._loop


def _kill_workers(workers: list[WorkerHandle]) -> None:
    """Workers ignore SIGTERM, so multiprocessing's exit hook (SIGTERM, then join) would wait for ever on those
    of an engine that was never shut down: kill them before it runs."""
    for worker in workers:
        worker.process.kill()
