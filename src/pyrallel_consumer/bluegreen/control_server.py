"""Small asyncio HTTP/1.1 JSON servers: every consumer's lifecycle control API, and the plumbing the
blue/green tools (load producer, consume app) reuse for their runtime knobs.

Stdlib only on purpose: the library must not pull a web framework into every consumer process. It serves
one request per connection (``Connection: close``), JSON bodies only, with bounded line, header and body
sizes and a read timeout, so a slow or hostile client cannot pin the consumer's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ValidationError

from pyrallel_consumer.control.lifecycle import LifecycleState, StaleGenerationError

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
MAX_WAIT_S = 3600.0
"""Upper bound of ``?wait=``: a request must not be able to hold a connection forever."""


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
        raw = self.query.get(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise HttpError(400, f"query parameter {name} must be a number, not {raw!r}") from None
        if not minimum <= value <= maximum:  # also refuses nan
            raise HttpError(400, f"query parameter {name} must be between {minimum:g} and {maximum:g}")
        return value

    def query_int(self, name: str, minimum: int, maximum: int) -> int | None:
        raw = self.query.get(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise HttpError(400, f"query parameter {name} must be an integer, not {raw!r}") from None
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


class HttpServer:
    """A JSON-over-HTTP server on the running event loop, with exact-path routes and an optional bearer token.

    Routes can be added before or after ``start()``; apps use that to put their own endpoints next to the
    lifecycle API. The token guards every route except those added with ``public=True`` (health probes).
    """

    def __init__(self, host: str, port: int, *, token: str | None = None, name: str = "http") -> None:
        if token is not None and not token:
            raise ValueError("the bearer token must not be empty")
        self._host = host
        self._requested_port = port
        self._token = token.encode() if token is not None else None
        self._name = name
        self._routes: dict[str, dict[str, _Route]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    def add_route(self, method: str, path: str, handler: Handler, *, public: bool = False) -> None:
        methods = self._routes.setdefault(path, {})
        if method.upper() in methods:
            raise ValueError(f"{method.upper()} {path} is routed already")
        methods[method.upper()] = _Route(handler, public)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"the {self._name} server is started already")
        self._server = await asyncio.start_server(
            self._serve, self._host, self._requested_port, limit=MAX_LINE_BYTES
        )
        log.info("%s server listening on %s%s", self._name, self.url, " (bearer token required)" if self._token else "")

    @property
    def port(self) -> int:
        """The bound port (the one picked by the OS when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError(f"the {self._name} server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and cancel open requests (e.g. a long ``?wait=``)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            try:
                request = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT_S)
            except HttpError as exc:
                response = exc.response()
            except TimeoutError:
                response = Response(408, {"error": "the request was not received in time"})
            else:
                response = await self.handle(request)
                log.debug("%s %s -> %d", request.method, request.path, response.status)
            writer.write(_encode(response))
            await writer.drain()
        except (_ConnectionClosedError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() cancels open requests; ending cancelled would make asyncio's stream callback log an error
            # (it calls task.exception() on the task). This task is a leaf: nobody awaits its cancellation.
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # the line exceeded the stream limit
        raise HttpError(431, f"a request line or header is longer than {MAX_LINE_BYTES} bytes") from None


async def _read_request(reader: asyncio.StreamReader) -> Request:
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
    if "transfer-encoding" in headers:
        raise HttpError(501, "Transfer-Encoding is not supported; send a Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "Content-Length must be an integer") from None
    if length < 0:
        raise HttpError(400, "Content-Length must not be negative")
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = await reader.readexactly(length) if length else b""
    if not target.startswith("/"):
        raise HttpError(400, "the request target must be a path")
    split = urlsplit(target)
    try:
        pairs = parse_qsl(split.query, keep_blank_values=True, strict_parsing=bool(split.query))
    except ValueError:
        raise HttpError(400, "malformed query string") from None
    query = dict(pairs)
    if len(query) != len(pairs):
        raise HttpError(400, "a query parameter is given more than once")
    return Request(method.upper(), split.path, query, headers, body)


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
        ready = lifecycle.state in (LifecycleState.ACTIVE, LifecycleState.PAUSED)
        return Response(200 if ready else 503, {"ready": ready, "state": lifecycle.state.value})

    server.add_route("POST", "/lifecycle/pause", pause)
    server.add_route("POST", "/lifecycle/resume", resume)
    server.add_route("GET", "/lifecycle/status", status)
    server.add_route("GET", "/healthz", healthz, public=True)
    server.add_route("GET", "/readyz", readyz, public=True)


async def _transition(request: Request, lifecycle: LifecycleControl, target: LifecycleState) -> Response:
    """202 with the state the request leads to; with ``?wait=S`` 200 once ``target`` is reached, else 504."""
    request.allow_query("wait", "generation")
    wait_s = request.query_float("wait", 0.0, MAX_WAIT_S)
    generation = request.query_int("generation", 0, 2**63 - 1)
    ask = lifecycle.request_pause if target is LifecycleState.PAUSED else lifecycle.request_resume
    try:
        heading = ask(generation, cause=f"{'pause' if target is LifecycleState.PAUSED else 'resume'} over HTTP")
    except StaleGenerationError as exc:
        raise HttpError(409, str(exc), generation=lifecycle.generation, state=lifecycle.state.value) from None
    except RuntimeError as exc:  # STARTING or STOPPED: retry later
        raise HttpError(503, str(exc), state=lifecycle.state.value) from None
    if wait_s is None:
        return Response(202, {"state": heading.value, "target": target.value, "generation": lifecycle.generation})
    if await lifecycle.wait_for(target, wait_s):
        return Response(200, {"state": target.value, "target": target.value, "generation": lifecycle.generation})
    raise HttpError(504, f"not {target.value} after {wait_s:g}s", state=lifecycle.state.value,
                    target=target.value, generation=lifecycle.generation)


def create_control_server(config: ConsumerConfig, lifecycle: LifecycleControl) -> HttpServer:
    """The lifecycle control server a PyrallelConsumer runs when ``config.control_port`` is set."""
    if config.control_port is None:
        raise ValueError("control_port is not set")
    token = config.control_token.get_secret_value() if config.control_token is not None else None
    server = HttpServer(config.control_host, config.control_port, token=token, name="control")
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
