"""PollerThread: the thread of its own that a confluent-kafka consumer lives on, and how it talks to the event loop.

The consumers of confluent-kafka (Consumer, ShareConsumer) block in their calls and must not be used from two
threads at once. So each lives on one thread, which runs the commands the loop queued between its polls and posts
what it learns back to the loop. BrokerPoller (consumer groups) and SharePoller (share groups) each own one
PollerThread: it starts the thread, queues and runs the commands, posts to the loop, and tells the loop how the
thread ended (``finished``, and the poller's failure callback when it raised).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

ClientT = TypeVar("ClientT")
JOIN_TIMEOUT_S = 1.0
"""How long close() waits for the thread after it reported its end (its last act, so microseconds)."""


class PollerThread(Generic[ClientT]):
    """Runs a poller's body on a daemon thread named ``name``; a body that raises is reported through ``on_failed``.

    The body runs until ``stopping`` is set (by close(), or by the poller itself on a fatal error), and closes its
    client before it returns. Created, started and closed on the event loop; ``post`` and ``run_commands`` are for
    the body.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str,
                 on_failed: Callable[[BaseException], None]) -> None:
        self._loop = loop
        self._name = name
        self._on_failed = on_failed
        self.commands: queue.SimpleQueue[Callable[[ClientT], None]] = queue.SimpleQueue()
        """Steps the loop asks of the client; the body runs them with ``run_commands``."""
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.finished: asyncio.Future[None] = loop.create_future()
        """Done (on the loop) once the body returned or raised."""

    def start(self, body: Callable[[], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(body,), name=self._name, daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Ask the body to end and wait until it did; the thread is gone on return (a stopped consumer leaves no
        thread behind, which a test checks right after stop())."""
        self.stopping.set()
        await asyncio.shield(self.finished)
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)

    # ---- poller thread ---------------------------------------------------------------------------------

    def post(self, fn: Callable[..., object], *args: object) -> None:
        """Call ``fn(*args)`` on the event loop; dropped when the loop is closed already."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            log.debug("Event loop closed; dropping %s", getattr(fn, "__name__", fn))

    def run_commands(self, client: ClientT) -> None:
        """Run every queued command with ``client``, oldest first."""
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return
            command(client)

    def _run(self, body: Callable[[], None]) -> None:
        error: BaseException | None = None
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - reported to the loop, which stops the consumer
            error = exc
            log.error("%s failed: %r", self._name, exc)
        finally:
            self.post(self._finish, error)

    def _finish(self, error: BaseException | None) -> None:
        if error is not None:
            self._on_failed(error)
        if not self.finished.done():
            self.finished.set_result(None)
