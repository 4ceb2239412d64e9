"""Small asyncio HTTP/1.1 JSON servers: every consumer's lifecycle control API, and the plumbing the
blue/green tools (load producer, consume app) reuse for their runtime knobs.

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
import json
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ValidationError

from pyrallel_consumer.config import is_loopback_host, token_problem
from pyrallel_consumer.control.lifecycle import GenerationError, LifecycleState

if TYPE_CHECKING:
    from pyrallel_consumer.config import ConsumerConfig

__all__ = [
    "Handler",
    "HttpError",
    "HttpServer",
    "LifecycleControl",
    "Request",
    "Response",
    "add_lifecycle_routes",
    "add_settings_routes",
    "create_control_server",
]

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8192
MAX_HEADERS = 64
MAX_BODY_BYTES = 1_048_576
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
MAX_WAIT_S = 3600.0
"""Upper bound of ``?wait=``: a request must not be able to hold a connection forever."""
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class HttpError(Exception):
    """Raised by the parser or a route to answer ``status`` with the JSON body ``{"error": message, **extra}``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def response(self) -> Response:
        return Response(self.status, {"error": self.message, **self.extra})


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request; header names are lower-case, query values decoded."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The body as JSON; 400 when it is missing or invalid."""
        if not self.body.strip():
            raise HttpError(400, "a JSON body is required")
        try:
            return json.loads(self.body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise HttpError(400, f"the body is not valid JSON: {exc}") from None

    def allow_query(self, *names: str) -> None:
        """400 for a query parameter the route does not know: a typo must not be silently ignored."""
        unknown = sorted(set(self.query) - set(names))
        if unknown:
            allowed = ", ".join(names) or "none"
            raise HttpError(400, f"unknown query parameter(s) {', '.join(unknown)} (allowed: {allowed})")

    def query_float(self, name: str, minimum: float, maximum: float) -> float | None:
        """A plain decimal number (digits, optionally a point and digits): no sign, exponent, inf, nan or ``_``."""
        raw = self.query.get(name)
        if raw is None:
            return None
        if not _DECIMAL.fullmatch(raw):
            raise HttpError(400, f"query parameter {name} must be a plain decimal number, not {raw!r}")
        value = float(raw)
        if not minimum <= value <= maximum:
            raise HttpError(400, f"query parameter {name} must be between {minimum:g} and {maximum:g}")
        return value

    def query_int(self, name: str, minimum: int, maximum: int) -> int | None:
        """ASCII digits only: ``int()`` alone would also take ``1_0``, `` 1``, ``+1`` and non-ASCII digits."""
        raw = self.query.get(name)
        if raw is None:
            return None
        try:
            if not _DIGITS.fullmatch(raw):
                raise ValueError(raw)
            value = int(raw)
        except ValueError:  # not digits, or more digits than int() converts
            raise HttpError(400, f"query parameter {name} must be a non-negative integer of digits 0-9, "
                                 f"not {raw!r}") from None
        if not minimum <= value <= maximum:
            raise HttpError(400, f"query parameter {name} must be between {minimum} and {maximum}")
        return value


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: Any
    """Anything ``json.dumps`` accepts."""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _Route:
    handler: Handler
    public: bool


class _ConnectionClosedError(Exception):
    """The client closed the connection before sending a request: nothing to answer."""


@dataclass(frozen=True, slots=True)
class _Head:
    method: str
    target: str
    headers: dict[str, str]


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
                    head = await _read_head(reader)
                async with asyncio.timeout_at(started + READ_TIMEOUT_S):
                    request = await _read_body(reader, head)
            except HttpError as exc:
                response = exc.response()
            except TimeoutError:
                response = Response(408, {"error": "the request was not received in time"})
            else:
                response = await self.handle(request)
                log.debug("%s %s -> %d", request.method, request.path, response.status)
            writer.write(_encode(response))
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()
        except (_ConnectionClosedError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
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


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # the line exceeded the stream limit
        raise HttpError(431, f"a request line or header is longer than {MAX_LINE_BYTES} bytes") from None


async def _read_head(reader: asyncio.StreamReader) -> _Head:
    """The request line and headers; the caller bounds the time (``head_timeout_s``)."""
    line = await _read_line(reader)
    if not line:
        raise _ConnectionClosedError
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, target, _version = parts
    headers: dict[str, str] = {}
    while True:
        raw = await _read_line(reader)
        if raw in (b"\r\n", b"\n"):
            break
        if not raw:
            raise HttpError(400, "the headers ended early")
        if len(headers) >= MAX_HEADERS:
            raise HttpError(431, f"more than {MAX_HEADERS} headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        headers[name.lower()] = value.strip()
    return _Head(method, target, headers)


async def _read_body(reader: asyncio.StreamReader, head: _Head) -> Request:
    """The body announced by Content-Length (decimal digits only), then the parsed request."""
    headers = head.headers
    if "transfer-encoding" in headers:
        raise HttpError(501, "Transfer-Encoding is not supported; send a Content-Length")
    raw_length = headers.get("content-length", "0")
    if not _DIGITS.fullmatch(raw_length):
        raise HttpError(400, "Content-Length must be a non-negative integer of digits 0-9")
    length = int(raw_length) if len(raw_length) <= 18 else MAX_BODY_BYTES + 1
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = await reader.readexactly(length) if length else b""
    if not head.target.startswith("/"):
        raise HttpError(400, "the request target must be a path")
    split = urlsplit(head.target)
    try:
        pairs = parse_qsl(split.query, keep_blank_values=True, strict_parsing=bool(split.query))
    except ValueError:
        raise HttpError(400, "malformed query string") from None
    query = dict(pairs)
    if len(query) != len(pairs):
        raise HttpError(400, "a query parameter is given more than once")
    return Request(head.method.upper(), split.path, query, headers, body)


def _encode(response: Response) -> bytes:
    body = json.dumps(response.body).encode()
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    head = [f"HTTP/1.1 {response.status} {reason}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close"]
    head.extend(f"{name}: {value}" for name, value in response.headers.items())
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


# ---- lifecycle API ---------------------------------------------------------------------------------------


class LifecycleControl(Protocol):
    """What the lifecycle routes need from ``control.lifecycle.Lifecycle`` (a fake in unit tests)."""

    state: LifecycleState
    generation: int

    @property
    def ready(self) -> bool: ...

    def request_pause(self, generation: int | None = None, cause: str = ...) -> LifecycleState: ...

    def request_resume(self, generation: int | None = None, cause: str = ...) -> LifecycleState: ...

    async def wait_for(self, state: LifecycleState, timeout_s: float) -> bool: ...

    def status(self) -> dict[str, Any]: ...


def add_lifecycle_routes(server: HttpServer, lifecycle: LifecycleControl) -> None:
    """POST /lifecycle/pause|resume, GET /lifecycle/status, GET /healthz and /readyz (public)."""

    async def pause(request: Request) -> Response:
        return await _transition(request, lifecycle, LifecycleState.PAUSED)

    async def resume(request: Request) -> Response:
        return await _transition(request, lifecycle, LifecycleState.ACTIVE)

    async def status(request: Request) -> Response:
        request.allow_query()
        return Response(200, lifecycle.status())

    async def healthz(request: Request) -> Response:
        request.allow_query()
        alive = lifecycle.state is not LifecycleState.STOPPED
        return Response(200 if alive else 503, {"status": "ok" if alive else "stopped",
                                                "state": lifecycle.state.value})

    async def readyz(request: Request) -> Response:
        request.allow_query()
        ready = lifecycle.ready
        body: dict[str, Any] = {"ready": ready, "state": lifecycle.state.value}
        if not ready and lifecycle.state in (LifecycleState.ACTIVE, LifecycleState.PAUSED):
            body["waiting_for"] = "broker"  # started, but no broker has answered yet
        return Response(200 if ready else 503, body)

    server.add_route("POST", "/lifecycle/pause", pause)
    server.add_route("POST", "/lifecycle/resume", resume)
    server.add_route("GET", "/lifecycle/status", status)
    server.add_route("GET", "/healthz", healthz, public=True)
    server.add_route("GET", "/readyz", readyz, public=True)


async def _transition(request: Request, lifecycle: LifecycleControl, target: LifecycleState) -> Response:
    """202 with the state the request leads to; with ``?wait=S`` 200 once ``target`` is reached, else 504."""
    request.allow_query("wait", "generation")
    _refuse_body(request)
    wait_s = request.query_float("wait", 0.0, MAX_WAIT_S)
    generation = request.query_int("generation", 0, 2**63 - 1)
    ask = lifecycle.request_pause if target is LifecycleState.PAUSED else lifecycle.request_resume
    try:
        heading = ask(generation, cause=f"{'pause' if target is LifecycleState.PAUSED else 'resume'} over HTTP")
    except GenerationError as exc:  # older than the current one, or too far ahead of it: nothing changed
        raise HttpError(409, str(exc), generation=lifecycle.generation, state=lifecycle.state.value) from None
    except RuntimeError as exc:  # STARTING or STOPPED: retry later
        raise HttpError(503, str(exc), state=lifecycle.state.value) from None
    if wait_s is None:
        return Response(202, {"state": heading.value, "target": target.value, "generation": lifecycle.generation})
    if await lifecycle.wait_for(target, wait_s):
        return Response(200, {"state": target.value, "target": target.value, "generation": lifecycle.generation})
    raise HttpError(504, f"not {target.value} after {wait_s:g}s", state=lifecycle.state.value,
                    target=target.value, generation=lifecycle.generation)


def _refuse_body(request: Request) -> None:
    """Lifecycle commands take their parameters from the query string only.

    A body that is not JSON is a 400, and so is JSON with content (e.g. ``{"generation": 9}``): a parameter
    put in the body would otherwise be ignored silently, and a command the caller believes fenced would not
    be. No body, a blank one, ``{}`` and ``null`` are accepted, as HTTP clients send them by habit.
    """
    if not request.body.strip():
        return
    content = request.json()
    if content is not None and content != {}:
        raise HttpError(400, "lifecycle commands take no body: give generation and wait in the query string "
                             "(?generation=N&wait=S)")


def create_control_server(config: ConsumerConfig, lifecycle: LifecycleControl) -> HttpServer:
    """The lifecycle control server a PyrallelConsumer runs when ``config.control_port`` is set."""
    if config.control_port is None:
        raise ValueError("control_port is not set")
    token = config.control_token.get_secret_value() if config.control_token is not None else None
    server = HttpServer(config.control_host, config.control_port, token=token, name="control",
                        max_connections=config.control_max_connections)
    add_lifecycle_routes(server, lifecycle)
    return server


# ---- runtime settings resources ------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def add_settings_routes(
    server: HttpServer,
    path: str,
    current: Callable[[], M],
    apply: Callable[[M, Iterable[str]], None],
    extra: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """GET/PUT ``path`` over a pydantic model: PUT merges a partial JSON object, validates, then ``apply``s it.

    ``apply`` also gets the names the PUT body set, for one-shot knobs (e.g. a stall) that act when set.
    ``extra`` adds read-only fields (counters) to both answers.
    """

    def body() -> dict[str, Any]:
        return {**current().model_dump(), **(extra() if extra is not None else {})}

    async def get(request: Request) -> Response:
        request.allow_query()
        return Response(200, body())

    async def put(request: Request) -> Response:
        request.allow_query()
        update = request.json()
        if not isinstance(update, dict):
            raise HttpError(400, "the body must be a JSON object")
        model = current()
        try:
            new = type(model).model_validate({**model.model_dump(), **update})
        except ValidationError as exc:
            raise HttpError(400, describe_validation_error(exc)) from None
        apply(new, list(update))
        return Response(200, body())

    server.add_route("GET", path, get)
    server.add_route("PUT", path, put)


def describe_validation_error(exc: ValidationError) -> str:
    """'field: problem' per bad field, for HTTP answers and CLI errors alike."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    )
