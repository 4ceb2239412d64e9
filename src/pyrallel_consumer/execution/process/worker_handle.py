"""The parent's handle on one worker process: the process, its pipes and slot, and the items it holds.

The supervisor creates one per worker with :meth:`WorkerHandle.spawn` and uses it on the event loop's thread
only. The handle writes to the worker without blocking the loop, asks it to stop (and kills it when it does
not), and, once it died, tells which held item is to blame.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Final

from pyrallel_consumer.execution.engine import HandlerTimeoutError, describe_error
from pyrallel_consumer.execution.process import codec, slot
from pyrallel_consumer.execution.process.ledger import Item
from pyrallel_consumer.execution.process.worker import WorkerSpec, worker_main

log = logging.getLogger(__name__)

_STOP_GRACE_S: Final = 5.0


class WorkerDiedError(RuntimeError):
    """The worker process running an attempt died (crash, ``os._exit``, SIGKILL, out of memory)."""


class WorkerHandle:
    """One worker process and what the parent knows about it."""

    @classmethod
    def spawn(cls, ctx: SpawnContext, spec: WorkerSpec, name: str, task_limit: int,
              loop: asyncio.AbstractEventLoop) -> WorkerHandle:
        """Start a worker process (OSError when the system cannot); it reports READY once its handler loaded."""
        from_parent, to_worker = ctx.Pipe(duplex=False)
        from_worker, to_parent = ctx.Pipe(duplex=False)
        shared = slot.new_slot(ctx)
        process = ctx.Process(target=worker_main, args=(spec, from_parent, to_parent, shared), name=name,
                              daemon=True)
        try:
            process.start()
        except BaseException:
            to_worker.close()
            from_worker.close()
            raise
        finally:
            from_parent.close()
            to_parent.close()
        return cls(process, to_worker, from_worker, shared, task_limit, loop)

    def __init__(self, process: SpawnProcess, to_worker: Connection[Any, Any], from_worker: Connection[Any, Any],
                 shared: slot.Slot, task_limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self.process = process
        self.pid = process.pid or -1
        self._loop = loop
        self._to_worker = to_worker
        self._from_worker = from_worker
        self.out_fd = to_worker.fileno()
        self.in_fd = from_worker.fileno()
        os.set_blocking(self.out_fd, False)
        os.set_blocking(self.in_fd, False)
        self._slot = shared
        self._unpacker = codec.unpacker()
        self._outbuf = bytearray()
        self.held: dict[int, Item] = {}
        self.assigned = 0
        self.task_limit = task_limit
        self.ready = False
        self.retiring = False  # gets no more work: recycled, killed, or the engine is stopping
        self.stop_sent = False
        self._stop_timer: asyncio.TimerHandle | None = None  # kills it if STOP does not end it in time
        self.reported = False  # delivered a result: it ran items, so it is not broken from the start
        self.timed_out: int | None = None  # the item whose attempt outlived the timeout; the worker was killed
        self.fatal: str | None = None
        self.exited: asyncio.Future[None] = loop.create_future()

    # ---- pipes ---------------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write without blocking; what the pipe cannot take now is written when it becomes writable."""
        if self._outbuf:
            self._outbuf += data
            return
        try:
            written = os.write(self.out_fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the worker is gone; its sentinel reports the exit
        if written < len(data):
            self._outbuf += data[written:]
            self._loop.add_writer(self.out_fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            written = os.write(self.out_fd, self._outbuf)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._outbuf)
        del self._outbuf[:written]
        if not self._outbuf:
            self._loop.remove_writer(self.out_fd)

    def read(self) -> bytes | None:
        """What the worker sent: b"" at the end of the pipe, None when nothing is waiting. OSError if it broke."""
        try:
            return os.read(self.in_fd, codec.READ_CHUNK)
        except BlockingIOError:
            return None

    def messages(self, data: bytes) -> Iterator[tuple[Any, ...]]:
        """The messages ``data`` completes, in order."""
        self._unpacker.feed(data)
        stream: Iterator[tuple[Any, ...]] = self._unpacker
        return stream

    # ---- life cycle ----------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """STOP, and a kill after a grace period: a thread or atexit hook left by the handler must not keep a
        stopped worker alive."""
        if not self.stop_sent:
            self.stop_sent = True
            self.send(codec.STOP_MESSAGE)
            self._stop_timer = self._loop.call_later(_STOP_GRACE_S, self._kill_stopped)

    def _kill_stopped(self) -> None:
        log.warning("Worker process %d did not stop within %gs; killing it", self.pid, _STOP_GRACE_S)
        self.process.kill()

    def kill_for_timeout(self, item_id: int, timeout_s: float) -> None:
        log.warning("Item %d exceeded the %gs handler timeout; killing worker process %d", item_id, timeout_s,
                    self.pid)
        self.timed_out = item_id
        self.retiring = True
        self.process.kill()

    def running(self) -> tuple[int, float] | None:
        """(item id, attempt start) of the attempt it runs; None between items."""
        return slot.running(self._slot)

    def reap(self) -> int | None:
        """Once the process ended: stop writing to it, collect its exit code and close everything."""
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        self._loop.remove_writer(self.out_fd)
        self.process.join()
        code = self.process.exitcode
        self.process.close()
        self._to_worker.close()
        self._from_worker.close()
        return code

    def blame(self, code: int | None, timeout_s: float) -> tuple[int | None, tuple[str, str]]:
        """After its death: the held item charged an attempt for it (None for none), and the error it is charged."""
        if self.timed_out is not None:
            return self.timed_out, describe_error(HandlerTimeoutError(timeout_s))
        culprit: int | None
        running = self.running()
        if running is not None:
            culprit, when = running[0], "while handling the record"
        else:
            last = slot.last_started(self._slot)
            culprit = last if last in self.held else next(iter(self.held), None)
            when = "outside the handler, before reporting the record's result"
        return culprit, (WorkerDiedError.__name__, f"worker process {self.pid} {describe_exit(code)} {when}")


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
