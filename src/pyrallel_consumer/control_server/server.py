"""HttpServer: a small asyncio HTTP/1.1 JSON server on the consumer's event loop, with exact-path routes and an
optional bearer token. It serves every consumer's lifecycle control API (``control_port``), and the tools reuse it
for their own runtime knobs.

Stdlib only on purpose: the library must not pull a web framework into every consumer process. It serves
one request per connection (``Connection: close``), JSON bodies only, with bounded line, header and body
sizes and a read timeout, so a slow or hostile client cannot pin the consumer's event loop. It holds at most
``max_connections`` connections (more are closed at once, unanswered), closes a connection that has not sent
its request head within ``head_timeout_s``, and logs refused connections and failed ``accept()`` calls at most
once per ``LOG_EVERY_S``: idle sockets must not use up the process's file handles or flood its log.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from pyrallel_consumer.config import is_loopback_host, token_problem
from pyrallel_consumer.control_server.messages import (
    MAX_LINE_BYTES,
    ConnectionClosedError,
    Handler,
    HttpError,
    Request,
    Response,
    encode_response,
    read_body,
    read_head,
)

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 10.0
"""Time to receive a whole request (head and body)."""
HEAD_TIMEOUT_S = 2.0
"""Default time to receive the request line and headers: an idle connection is closed after this."""
DEFAULT_MAX_CONNECTIONS = 16
"""Default number of connections one server holds at once (a controller needs one per command)."""
WRITE_TIMEOUT_S = 10.0
"""Time to hand an answer to a client that does not read it, before the connection is dropped."""
ACCEPT_RETRY_S = 1.0
"""Pause of the accept loop after accept() failed (e.g. EMFILE: the process is out of file handles)."""
LOG_EVERY_S = 60.0
"""Refused connections and failed accept() calls are logged at most once per this period, with a count."""
LISTEN_BACKLOG = 100
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True, slots=True)
class _Route:
    handler: Handler
    public: bool


class _LogThrottle:
    """Counts events and says when one WARNING about them is due: at the first, then once per ``interval_s``.

    Used on the event-loop thread by the accept loop, so a flood of refused connections or failing accept()
    calls costs one log line per period instead of one (with a traceback) per event.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next_at = 0.0
        self._count = 0

    def due(self) -> int:
        """Count one event; return the events since the last message when a message is due now, else 0."""
        self._count += 1
        now = time.monotonic()
        if now < self._next_at:
            return 0
        count, self._count = self._count, 0
        self._next_at = now + self._interval_s
        return count


class HttpServer:
    """A JSON-over-HTTP server on the running event loop, with exact-path routes and an optional bearer token.

    Routes can be added before or after ``start()``; apps use that to put their own endpoints next to the
    lifecycle API. The token guards every route except those added with ``public=True`` (health probes).

    It runs its own accept loop instead of ``asyncio.start_server``: over ``max_connections`` a new connection
    is closed at once, before anything is read or allocated for it (cheap, and a controller treats the closed
    connection as an unreachable instance and retries), and a failing ``accept()`` (EMFILE) pauses the loop for
    ``ACCEPT_RETRY_S`` and is logged once per ``LOG_EVERY_S`` instead of once per pending connection.
    """

    def __init__(self, host: str, port: int, *, token: str | None = None, name: str = "http",
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, head_timeout_s: float = HEAD_TIMEOUT_S) -> None:
        if token is not None and (problem := token_problem(token)) is not None:
            raise ValueError(problem)
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, not {max_connections}")
        if not head_timeout_s > 0:
            raise ValueError(f"head_timeout_s must be > 0, not {head_timeout_s}")
        self._host = host
        self._requested_port = port
        self._token = token.encode() if token is not None else None
        self._name = name
        self._max_connections = max_connections
        self._head_timeout_s = head_timeout_s
        self._routes: dict[str, dict[str, _Route]] = {}
        self._listeners: list[socket.socket] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._refusals = _LogThrottle(LOG_EVERY_S)
        self._accept_failures = _LogThrottle(LOG_EVERY_S)

    def add_route(self, method: str, path: str, handler: Handler, *, public: bool = False) -> None:
        methods = self._routes.setdefault(path, {})
        if method.upper() in methods:
            raise ValueError(f"{method.upper()} {path} is routed already")
        methods[method.upper()] = _Route(handler, public)

    async def start(self) -> None:
        """Bind and start accepting on the running loop; OSError when the address cannot be bound."""
        if self._listeners:
            raise RuntimeError(f"the {self._name} server is started already")
        loop = asyncio.get_running_loop()
        self._listeners = await self._bind(loop)
        self._acceptors = [loop.create_task(self._accept_loop(listener), name=f"pyrallel-{self._name}-accept")
                           for listener in self._listeners]
        log.info("%s server listening on %s%s", self._name, self.url, " (bearer token required)" if self._token else "")
        if self._token is None and not is_loopback_host(self._host):
            log.warning("%s server on %s serves WITHOUT a bearer token on a non-loopback address: anyone who can "
                        "reach it can use it (control_insecure)", self._name, self.url)

    async def _bind(self, loop: asyncio.AbstractEventLoop) -> list[socket.socket]:
        """One listening socket per address ``host`` resolves to, as ``asyncio.start_server`` would bind them."""
        infos = await loop.getaddrinfo(self._host or None, self._requested_port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        listeners: list[socket.socket] = []
        seen: set[tuple[int, Any]] = set()
        try:
            for family, kind, proto, _canonical, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                listener = socket.socket(family, kind, proto)
                listeners.append(listener)
                if os.name == "posix":
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    listener.bind(address)
                except OSError as exc:
                    raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: "
                                             f"{exc.strerror}") from None
                listener.listen(LISTEN_BACKLOG)
                listener.setblocking(False)
        except BaseException:
            for listener in listeners:
                listener.close()
            raise
        if not listeners:
            raise OSError(f"{self._host!r} resolves to no address")
        return listeners

    async def _accept_loop(self, listener: socket.socket) -> None:
        """Accept connections until cancelled by close(); runs as one task per listening socket."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _address = await loop.sock_accept(listener)
            except ConnectionAbortedError:  # the client gave up before we accepted
                continue
            except OSError as exc:
                if listener.fileno() == -1:
                    return
                if count := self._accept_failures.due():
                    log.warning("%s server: accept() failed %d time(s) (%s)%s; retrying every %.1fs, logged at most "
                                "once per %.0fs", self._name, count, exc,
                                " - the process is out of file handles" if exc.errno in _RESOURCE_ERRNOS else "",
                                ACCEPT_RETRY_S, LOG_EVERY_S)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            if len(self._connections) >= self._max_connections:
                conn.close()
                if count := self._refusals.due():
                    log.warning("%s server: the limit of %d open connections is reached: new connections are "
                                "closed unanswered (%d since the last such message, which is logged at most once "
                                "per %.0fs)", self._name, self._max_connections, count, LOG_EVERY_S)
                continue
            task = loop.create_task(self._serve_socket(conn), name=f"pyrallel-{self._name}-connection")
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    @property
    def open_connections(self) -> int:
        """Connections held right now (being read, handled or answered); never more than ``max_connections``."""
        return len(self._connections)

    @property
    def port(self) -> int:
        """The bound port (the one picked by the OS when 0 was asked for)."""
        if not self._listeners:
            raise RuntimeError(f"the {self._name} server is not started")
        return int(self._listeners[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and cancel open requests (e.g. a long ``?wait=``)."""
        listeners, self._listeners = self._listeners, []
        if not listeners:
            return
        acceptors, self._acceptors = self._acceptors, []
        for task in acceptors:
            task.cancel()
        await asyncio.gather(*acceptors, return_exceptions=True)
        for listener in listeners:
            listener.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        log.info("%s server closed", self._name)

    async def handle(self, request: Request) -> Response:
        """Route one request: 401 before anything else on guarded routes, then 404, 405, the handler."""
        methods = self._routes.get(request.path, {})
        route = methods.get(request.method)
        if not (route is not None and route.public) and not self._authorized(request):
            return Response(401, {"error": "a valid bearer token is required"}, {"WWW-Authenticate": "Bearer"})
        if not methods:
            return HttpError(404, f"no such path: {request.path}").response()
        if route is None:
            allowed = ", ".join(sorted(methods))
            return Response(405, {"error": f"{request.method} is not allowed on {request.path}",
                                  "allowed": sorted(methods)}, {"Allow": allowed})
        try:
            return await route.handler(request)
        except HttpError as exc:
            return exc.response()
        except Exception:  # one broken request must not take the server down
            log.exception("%s %s failed", request.method, request.path)
            return Response(500, {"error": "internal error; see the server log"})

    def _authorized(self, request: Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    async def _serve_socket(self, conn: socket.socket) -> None:
        """One connection, as a task of the accept loop; the socket is closed whatever happens."""
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=MAX_LINE_BYTES)
        except (OSError, asyncio.CancelledError):  # reset at once, or close() came first
            conn.close()
            return
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            try:
                async with asyncio.timeout_at(started + min(self._head_timeout_s, READ_TIMEOUT_S)):
                    head = await read_head(reader)
                async with asyncio.timeout_at(started + READ_TIMEOUT_S):
                    request = await read_body(reader, head)
            except HttpError as exc:
                response = exc.response()
            except TimeoutError:
                response = Response(408, {"error": "the request was not received in time"})
            else:
                response = await self.handle(request)
                log.debug("%s %s -> %d", request.method, request.path, response.status)
            writer.write(encode_response(response))
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()
        except (ConnectionClosedError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # close() cancels open requests and gathers them; nobody else awaits this task.
            pass
        finally:
            writer.close()
            try:
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await writer.wait_closed()
            except (ConnectionError, TimeoutError, asyncio.CancelledError):
                writer.transport.abort()  # a client that does not read must not keep the slot
