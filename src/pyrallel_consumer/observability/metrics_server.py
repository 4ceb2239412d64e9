"""MetricsServer: the /metrics HTTP endpoint of one consumer's registry, served while the consumer runs.

Owned by ConsumerMetrics (PyrallelConsumer) and by PyrallelShareConsumer; both start it in start() and stop it in
stop(), on the event loop. prometheus_client serves from a thread of its own.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)


class MetricsServer:
    """Serves ``registry`` on ``port`` (0: a port the OS picks) at ``host`` between start() and stop()."""

    def __init__(self, registry: CollectorRegistry, port: int | None, host: str) -> None:
        self._registry = registry
        self._port = port
        self._host = host
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve when a port is set (once)."""
        if self._port is None or self._server is not None:
            return
        self._server, self._thread = start_http_server(self._port, self._host, self._registry)
        log.info("Serving Prometheus metrics on http://%s:%d/metrics", self._host, self._server.server_port)

    @property
    def port(self) -> int | None:
        """The port /metrics is served on (the one the OS picked for port 0), None when not serving."""
        return None if self._server is None else self._server.server_port

    def stop(self) -> None:
        """Stop serving: the target disappears instead of reporting a stopped consumer's frozen state."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
