"""The HTTP control server against a fake lifecycle: parsing, routing, auth, status codes, settings resources."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field
from tests.support import wait_for

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.control.lifecycle import LifecycleState, StaleGenerationError
from pyrallel_consumer.control.positions import Position
from pyrallel_consumer.control_server import (
    HttpServer,
    Request,
    Response,
    add_lifecycle_routes,
    create_control_server,
)
from pyrallel_tools.bluegreen.settings_routes import add_settings_routes

pytestmark = pytest.mark.unit

TOKEN = "s3cret-token-value"


class FakeLifecycle:
    """Behaves like Lifecycle from the outside: fencing, RuntimeError when not running, wait_for."""

    def __init__(self, state: LifecycleState = LifecycleState.ACTIVE, reachable: bool = True) -> None:
        self.state = state
        self.generation = 0
        self.reachable = reachable
        self.calls: list[tuple[str, int | None, str]] = []

    def _request(self, name: str, target: LifecycleState, generation: int | None, cause: str) -> LifecycleState:
        if self.state in (LifecycleState.STARTING, LifecycleState.STOPPED):
            raise RuntimeError(f"the consumer is {self.state.value}")
        if generation is not None:
            if generation < self.generation:
                raise StaleGenerationError(f"generation {generation} is older than {self.generation}")
            self.generation = generation
        self.calls.append((name, generation, cause))
        if target is LifecycleState.PAUSED and self.state is LifecycleState.ACTIVE:
            return LifecycleState.DRAINING
        return target

    def request_pause(self, generation: int | None = None, cause: str = "") -> LifecycleState:
        return self._request("pause", LifecycleState.PAUSED, generation, cause)

    def request_resume(self, generation: int | None = None, cause: str = "") -> LifecycleState:
        return self._request("resume", LifecycleState.ACTIVE, generation, cause)

    async def take_positions(self, positions: Sequence[Position], generation: int | None = None) -> None:
        self.calls.append(("positions", generation, str(len(positions))))

    async def wait_for(self, state: LifecycleState, timeout_s: float) -> bool:
        if self.reachable:
            self.state = state
            return True
        await asyncio.sleep(timeout_s)
        return self.state is state

    def status(self) -> dict[str, Any]:
        return {"state": self.state.value, "generation": self.generation, "color": "blue"}

    @property
    def ready(self) -> bool:
        return self.state in (LifecycleState.ACTIVE, LifecycleState.PAUSED)


class Reply:
    def __init__(self, raw: bytes) -> None:
        head, _, self.raw_body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1]) if lines[0] else 0
        self.headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}

    @property
    def body(self) -> Any:
        return json.loads(self.raw_body)


async def send_raw(server: HttpServer, data: bytes) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()  # a request cut short must get its answer, not wait for the read timeout
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return Reply(raw)


async def call(server: HttpServer, method: str, target: str, body: bytes = b"",
               token: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    lines = [f"{method} {target} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    return await send_raw(server, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


@pytest.fixture
def lifecycle() -> FakeLifecycle:
    return FakeLifecycle()


@pytest.fixture
async def server(lifecycle: FakeLifecycle) -> AsyncIterator[HttpServer]:
    srv = HttpServer("127.0.0.1", 0, name="test")
    add_lifecycle_routes(srv, lifecycle)
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def guarded(lifecycle: FakeLifecycle) -> AsyncIterator[HttpServer]:
    srv = HttpServer("127.0.0.1", 0, token=TOKEN, name="test")
    add_lifecycle_routes(srv, lifecycle)
    await srv.start()
    yield srv
    await srv.close()


# ---- lifecycle routes ------------------------------------------------------------------------------------


async def test_status_is_the_lifecycle_status(server: HttpServer, lifecycle: FakeLifecycle) -> None:
    reply = await call(server, "GET", "/lifecycle/status")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["connection"] == "close"
    assert reply.body == lifecycle.status()


async def test_pause_answers_202_at_once_with_the_state_it_leads_to(
    server: HttpServer, lifecycle: FakeLifecycle
) -> None:
    reply = await call(server, "POST", "/lifecycle/pause")
    assert reply.status == 202
    assert reply.body == {"state": "DRAINING", "target": "PAUSED", "generation": 0}
    assert lifecycle.calls == [("pause", None, "pause over HTTP")]
    assert lifecycle.state is LifecycleState.ACTIVE, "202 must not wait for the transition"


async def test_resume_is_idempotent(server: HttpServer, lifecycle: FakeLifecycle) -> None:
    for _ in range(2):
        reply = await call(server, "POST", "/lifecycle/resume")
        assert reply.status == 202
        assert reply.body["state"] == "ACTIVE"


async def test_wait_answers_200_once_the_state_is_reached(server: HttpServer, lifecycle: FakeLifecycle) -> None:
    reply = await call(server, "POST", "/lifecycle/pause?wait=5")
    assert reply.status == 200
    assert reply.body["state"] == "PAUSED"
    assert lifecycle.state is LifecycleState.PAUSED


async def test_wait_answers_504_when_the_state_is_not_reached_in_time(
    server: HttpServer, lifecycle: FakeLifecycle
) -> None:
    lifecycle.reachable = False
    reply = await call(server, "POST", "/lifecycle/pause?wait=0.05")
    assert reply.status == 504
    assert reply.body["state"] == "ACTIVE"
    assert reply.body["target"] == "PAUSED"
    assert "error" in reply.body


async def test_stale_generation_is_409_and_does_not_act(server: HttpServer, lifecycle: FakeLifecycle) -> None:
    assert (await call(server, "POST", "/lifecycle/pause?generation=3")).status == 202
    reply = await call(server, "POST", "/lifecycle/resume?generation=2")
    assert reply.status == 409
    assert reply.body["generation"] == 3
    assert "older" in reply.body["error"]
    assert [c[0] for c in lifecycle.calls] == ["pause"]
    assert (await call(server, "POST", "/lifecycle/resume?generation=3&wait=1")).status == 200


@pytest.mark.parametrize("state", [LifecycleState.STARTING, LifecycleState.STOPPED])
async def test_commands_while_not_running_are_503(server: HttpServer, lifecycle: FakeLifecycle,
                                                  state: LifecycleState) -> None:
    lifecycle.state = state
    reply = await call(server, "POST", "/lifecycle/pause")
    assert reply.status == 503
    assert reply.body["state"] == state.value


@pytest.mark.parametrize(("state", "health", "ready"), [
    (LifecycleState.STARTING, 200, 503),
    (LifecycleState.ACTIVE, 200, 200),
    (LifecycleState.DRAINING, 200, 503),
    (LifecycleState.PAUSED, 200, 200),
    (LifecycleState.STOPPED, 503, 503),
])
async def test_probes(server: HttpServer, lifecycle: FakeLifecycle, state: LifecycleState,
                      health: int, ready: int) -> None:
    lifecycle.state = state
    healthz = await call(server, "GET", "/healthz")
    readyz = await call(server, "GET", "/readyz")
    assert (healthz.status, readyz.status) == (health, ready)
    assert readyz.body == {"ready": ready == 200, "state": state.value}


@pytest.mark.parametrize("target", [
    "/lifecycle/pause?wait=abc", "/lifecycle/pause?wait=-1", "/lifecycle/pause?wait=nan",
    "/lifecycle/pause?wait=1e9", "/lifecycle/pause?generation=1.5", "/lifecycle/pause?generation=-2",
    "/lifecycle/pause?gen=1", "/lifecycle/pause?wait=1&wait=2", "/lifecycle/pause?wait",
    "/lifecycle/status?verbose=1",
])
async def test_bad_query_is_400_and_does_not_act(server: HttpServer, lifecycle: FakeLifecycle, target: str) -> None:
    reply = await call(server, "POST" if "pause" in target else "GET", target)
    assert reply.status == 400
    assert isinstance(reply.body["error"], str)
    assert lifecycle.calls == []


async def test_unknown_path_is_404_and_bad_method_405(server: HttpServer) -> None:
    missing = await call(server, "GET", "/lifecycle/nope")
    assert missing.status == 404
    assert "/lifecycle/nope" in missing.body["error"]
    wrong = await call(server, "GET", "/lifecycle/pause")
    assert wrong.status == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.body["allowed"] == ["POST"]
    assert (await call(server, "DELETE", "/healthz")).status == 405


# ---- authentication --------------------------------------------------------------------------------------


async def test_token_is_required_on_control_routes(guarded: HttpServer, lifecycle: FakeLifecycle) -> None:
    for token in (None, "wrong", TOKEN + "x", ""):
        reply = await call(guarded, "POST", "/lifecycle/pause", token=token)
        assert reply.status == 401
        assert reply.headers["www-authenticate"] == "Bearer"
        assert "token" in reply.body["error"]
    basic = await call(guarded, "GET", "/lifecycle/status", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status == 401
    assert lifecycle.calls == []
    assert (await call(guarded, "POST", "/lifecycle/pause", token=TOKEN)).status == 202
    lower = await call(guarded, "GET", "/lifecycle/status", headers={"Authorization": f"bearer {TOKEN}"})
    assert lower.status == 200


async def test_probes_are_public_and_unknown_paths_do_not_leak_without_token(guarded: HttpServer) -> None:
    assert (await call(guarded, "GET", "/healthz")).status == 200
    assert (await call(guarded, "GET", "/readyz")).status == 200
    assert (await call(guarded, "GET", "/secret-path")).status == 401
    assert (await call(guarded, "GET", "/secret-path", token=TOKEN)).status == 404


async def test_token_is_never_logged(guarded: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await call(guarded, "POST", "/lifecycle/pause", token=TOKEN)
    await call(guarded, "POST", "/lifecycle/pause", token="wrong-" + TOKEN)
    assert caplog.records, "requests are logged at DEBUG"
    assert TOKEN not in caplog.text


def test_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        HttpServer("127.0.0.1", 0, token="")


# ---- HTTP parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "status"), [
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET /healthz\r\n\r\n", 400),
    (b"GET /healthz SPDY/3\r\n\r\n", 400),
    (b"GET http://host/healthz HTTP/1.1\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nNoColonHere\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n Folded: x\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n", 431),
    (b"PUT /healthz HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400),
    (b"PUT /healthz HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
    (b"PUT /healthz HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", 413),
    (b"PUT /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 400),
])
async def test_malformed_requests_get_json_errors(server: HttpServer, raw: bytes, status: int) -> None:
    reply = await send_raw(server, raw)
    assert reply.status == status
    assert isinstance(reply.body["error"], str)
    assert (await call(server, "GET", "/healthz")).status == 200, "the server keeps serving"


async def test_a_connection_closed_without_a_request_is_harmless(server: HttpServer) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.close()
    await writer.wait_closed()
    assert (await call(server, "GET", "/healthz")).status == 200


async def test_lowercase_method_and_bare_newlines_are_accepted(server: HttpServer) -> None:
    reply = await send_raw(server, b"get /healthz HTTP/1.0\nHost: x\n\n")
    assert reply.status == 200


async def test_a_failing_handler_is_500_and_the_server_survives(server: HttpServer) -> None:
    async def broken(request: Request) -> Response:
        raise KeyError("boom")

    server.add_route("GET", "/broken", broken)
    reply = await call(server, "GET", "/broken")
    assert reply.status == 500
    assert "internal" in reply.body["error"]
    assert (await call(server, "GET", "/healthz")).status == 200


async def test_duplicate_routes_are_refused(server: HttpServer) -> None:
    with pytest.raises(ValueError, match="routed already"):
        add_lifecycle_routes(server, FakeLifecycle())


async def test_close_ends_waiting_requests_and_stops_listening(lifecycle: FakeLifecycle) -> None:
    lifecycle.reachable = False
    srv = HttpServer("127.0.0.1", 0)
    add_lifecycle_routes(srv, lifecycle)
    await srv.start()
    port = srv.port
    assert port > 0
    pending = asyncio.create_task(call(srv, "POST", "/lifecycle/pause?wait=60"))
    await wait_for(lambda: bool(lifecycle.calls), what="the request waiting in its route")
    await asyncio.wait_for(srv.close(), 5)
    reply = await asyncio.wait_for(pending, 5)
    assert reply.status == 0, "the connection is closed without an answer"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    with pytest.raises(RuntimeError, match="not started"):
        _ = srv.port


# ---- settings resources ----------------------------------------------------------------------------------


class Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=1.0, gt=0)
    size: int = Field(default=10, ge=0)


async def test_settings_get_and_partial_put() -> None:
    state = {"knobs": Knobs()}
    changes: list[list[str]] = []

    def apply(knobs: Knobs, changed: Iterable[str]) -> None:
        state["knobs"] = knobs
        changes.append(list(changed))

    srv = HttpServer("127.0.0.1", 0)
    add_settings_routes(srv, "/config", lambda: state["knobs"], apply, lambda: {"sent": 7})
    await srv.start()
    try:
        got = await call(srv, "GET", "/config")
        assert (got.status, got.body) == (200, {"rate": 1.0, "size": 10, "sent": 7})
        put = await call(srv, "PUT", "/config", b'{"rate": 5}')
        assert (put.status, put.body) == (200, {"rate": 5.0, "size": 10, "sent": 7})
        assert changes == [["rate"]]
        for body, fragment in [(b'{"rate": 0}', "rate"), (b'{"colour": 1}', "colour"), (b"[1]", "object"),
                               (b"{not json", "JSON"), (b"", "required"), (b'{"size": "big"}', "size")]:
            bad = await call(srv, "PUT", "/config", body)
            assert bad.status == 400, body
            assert fragment in bad.body["error"], (body, bad.body)
        assert state["knobs"] == Knobs(rate=5.0), "a refused PUT changes nothing"
    finally:
        await srv.close()


# ---- wiring from the consumer's config -------------------------------------------------------------------


async def test_create_control_server_from_config(lifecycle: FakeLifecycle) -> None:
    config = ConsumerConfig(bootstrap_servers="localhost:1", group_id="g", topics=["t"], control_port=0,
                            control_token=TOKEN)
    srv = create_control_server(config, lifecycle)
    await srv.start()
    try:
        assert srv.url == f"http://127.0.0.1:{srv.port}"
        assert (await call(srv, "GET", "/lifecycle/status")).status == 401
        assert (await call(srv, "GET", "/lifecycle/status", token=TOKEN)).status == 200
    finally:
        await srv.close()
    off = ConsumerConfig(bootstrap_servers="localhost:1", group_id="g", topics=["t"])
    with pytest.raises(ValueError, match="control_port"):
        create_control_server(off, lifecycle)


async def test_a_request_that_never_completes_gets_408(server: HttpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pyrallel_consumer.control_server.server.READ_TIMEOUT_S", 0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # and then nothing: the headers never end
    await writer.drain()
    reply = Reply(await asyncio.wait_for(reader.read(), 5))
    writer.close()
    assert reply.status == 408
