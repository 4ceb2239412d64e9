"""The lifecycle routes of the control server: POST /lifecycle/pause|resume, GET /lifecycle/status, and the public
health probes /healthz and /readyz. Routes run on the consumer's event loop and call ``control.lifecycle.Lifecycle``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pyrallel_consumer.control.lifecycle import GenerationError, LifecycleState, PositionsRefusedError
from pyrallel_consumer.control.positions import Position, positions_from_json
from pyrallel_consumer.control_server.messages import HttpError, Request, Response
from pyrallel_consumer.control_server.server import HttpServer
from pyrallel_consumer.observability.log_events import LIFECYCLE_COMMAND, event_extra

if TYPE_CHECKING:
    from pyrallel_consumer.config import ConsumerConfig

log = logging.getLogger(__name__)

MAX_WAIT_S = 3600.0
"""Upper bound of ``?wait=``: a request must not be able to hold a connection forever."""

Route = Callable[[Request], Awaitable[Response]]


class LifecycleControl(Protocol):
    """What the lifecycle routes need from ``control.lifecycle.Lifecycle`` (a fake in unit tests)."""

    state: LifecycleState
    generation: int

    @property
    def ready(self) -> bool: ...

    def request_pause(self, generation: int | None = None, cause: str = ...) -> LifecycleState: ...

    def request_resume(self, generation: int | None = None, cause: str = ...) -> LifecycleState: ...

    async def take_positions(self, positions: Sequence[Position], generation: int | None = None) -> None: ...

    async def wait_for(self, state: LifecycleState, timeout_s: float) -> bool: ...

    def status(self) -> dict[str, Any]: ...


def add_lifecycle_routes(server: HttpServer, lifecycle: LifecycleControl, *, color: str | None = None,
                         instance: str | None = None) -> None:
    """POST /lifecycle/pause|resume, GET /lifecycle/status, GET /healthz and /readyz (public).

    Every POST is logged once answered (event ``lifecycle_command``, with ``color`` and ``instance`` as given).
    """

    def logged(command: str, handle: Route) -> Route:
        async def route(request: Request) -> Response:
            started = time.monotonic()
            try:
                response = await handle(request)
            except HttpError as exc:
                _log_command(command, request, lifecycle, exc.status, time.monotonic() - started, color, instance)
                raise
            except Exception:  # the server answers 500
                _log_command(command, request, lifecycle, 500, time.monotonic() - started, color, instance)
                raise
            _log_command(command, request, lifecycle, response.status, time.monotonic() - started, color, instance)
            return response
        return route

    async def pause(request: Request) -> Response:
        return await _transition(request, lifecycle, LifecycleState.PAUSED)

    async def resume(request: Request) -> Response:
        return await _transition(request, lifecycle, LifecycleState.ACTIVE)

    async def positions(request: Request) -> Response:
        return await _take_positions(request, lifecycle)

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

    server.add_route("POST", "/lifecycle/pause", logged("pause", pause))
    server.add_route("POST", "/lifecycle/resume", logged("resume", resume))
    server.add_route("POST", "/lifecycle/positions", logged("positions", positions))
    server.add_route("GET", "/lifecycle/status", status)
    server.add_route("GET", "/healthz", healthz, public=True)
    server.add_route("GET", "/readyz", readyz, public=True)


def _log_command(command: str, request: Request, lifecycle: LifecycleControl, status: int, seconds: float,
                 color: str | None, instance: str | None) -> None:
    requested = request.query.get("generation")
    log.info("Lifecycle command %s (generation %s) answered %d in %.3fs: %s, generation %d", command,
             requested if requested is not None else "-", status, seconds, lifecycle.state.value,
             lifecycle.generation,
             extra=event_extra(LIFECYCLE_COMMAND, command=command, requested_generation=_as_int(requested),
                               generation=lifecycle.generation, state=lifecycle.state.value, status=status,
                               seconds=round(seconds, 6), color=color, instance=instance))


def _as_int(text: str | None) -> int | str | None:
    """The generation a command carried, as a number when it is one (a refused one is logged as sent)."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text[:64]


async def _transition(request: Request, lifecycle: LifecycleControl, target: LifecycleState) -> Response:
    """202 with the state the request leads to; with ``?wait=S`` 200 once ``target`` is reached, else 504."""
    request.allow_query("wait", "generation")
    _refuse_body(request)
    wait_s = request.query_float("wait", 0.0, MAX_WAIT_S)
    generation = request.query_int("generation", 0, 2**63 - 1)
    try:
        if target is LifecycleState.PAUSED:
            heading = lifecycle.request_pause(generation, cause="pause over HTTP")
        else:
            heading = lifecycle.request_resume(generation, cause="resume over HTTP")
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
    """Lifecycle commands take their parameters from the query string only (handed-over positions aside).

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


async def _take_positions(request: Request, lifecycle: LifecycleControl) -> Response:
    """POST /lifecycle/positions?generation=N with ``{"positions": [{"topic", "partition", "offset", "metadata"},
    ...]}`` (blue/green strategy B's hand-over): 200 once a PAUSED consumer took them; 409 when it may not (not
    PAUSED or a transition under way, partitions released while paused, another topic, an older generation),
    400 for a bad body, 500 when taking them failed (the consumer stays PAUSED)."""
    request.allow_query("generation")
    generation = request.query_int("generation", 0, 2**63 - 1)
    content = request.json() if request.body.strip() else None
    if not isinstance(content, dict) or set(content) != {"positions"}:
        raise HttpError(400, 'the body must be {"positions": [{"topic", "partition", "offset", "metadata"}, ...]}')
    try:
        positions = positions_from_json(content["positions"])
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    try:
        await lifecycle.take_positions(positions, generation)
    except (GenerationError, PositionsRefusedError) as exc:
        raise HttpError(409, str(exc), generation=lifecycle.generation, state=lifecycle.state.value) from None
    except RuntimeError as exc:  # STARTING or STOPPED
        raise HttpError(503, str(exc), state=lifecycle.state.value) from None
    except Exception as exc:  # noqa: BLE001 - the commit or the restart failed: still PAUSED, say why
        raise HttpError(500, f"taking the positions failed, still PAUSED: {exc}", state=lifecycle.state.value,
                        generation=lifecycle.generation) from None
    return Response(200, {"state": lifecycle.state.value, "positions": len(positions),
                          "generation": lifecycle.generation})


def create_control_server(config: ConsumerConfig, lifecycle: LifecycleControl) -> HttpServer:
    """The lifecycle control server a PyrallelConsumer runs when ``config.control_port`` is set."""
    if config.control_port is None:
        raise ValueError("control_port is not set")
    token = config.control_token.get_secret_value() if config.control_token is not None else None
    server = HttpServer(config.control_host, config.control_port, token=token, name="control",
                        max_connections=config.control_max_connections)
    add_lifecycle_routes(server, lifecycle, color=config.color, instance=config.instance_id)
    return server
