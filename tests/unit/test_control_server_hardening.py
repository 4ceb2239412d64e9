"""Regression tests of the control server's hardening: connection limit, idle reaping, bounded generation
steps, no unauthenticated binding beyond loopback, strict parsing of tokens, numbers and bodies."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from tests.support import wait_for
from tests.unit.test_control_server import TOKEN, Reply, call

from pyrallel_consumer.config import ConfigError, ConsumerConfig
from pyrallel_consumer.control.lifecycle import Lifecycle, LifecycleState
from pyrallel_consumer.control.positions import Position
from pyrallel_consumer.control_server import HttpServer, add_lifecycle_routes, create_control_server
from pyrallel_consumer.control_server import server as server_module

pytestmark = pytest.mark.unit

BASE: dict[str, Any] = {"bootstrap_servers": "localhost:1", "group_id": "g", "topics": ["t"]}
MAX_GENERATION = 2**63 - 1


class FakeCoordinator:
    """Just enough of a Coordinator for Lifecycle: transitions finish at once."""

    def __init__(self) -> None:
        self.assigned: list[tuple[str, int]] = []
        self.taken: list[list[Position]] = []
        self.fail_with: Exception | None = None

    async def suspend(self, release: bool) -> None:
        return None

    async def activate(self) -> None:
        return None

    async def take_positions(self, positions: Sequence[Position]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.taken.append(list(positions))


class FakeObserver:
    def lifecycle_changed(self, state: str) -> None:
        return None


def running_lifecycle(**config: Any) -> Lifecycle:
    """A real Lifecycle (the fencing rules under test live there), ACTIVE, on the running loop."""
    lifecycle = Lifecycle(cast(Any, FakeCoordinator()), ConsumerConfig(**BASE, **config), cast(Any, FakeObserver()))
    lifecycle.started()
    return lifecycle


async def status_or_closed(srv: HttpServer, target: str) -> int:
    """The status of GET ``target``, or 0 when the server closed the connection without an answer."""
    try:
        return (await call(srv, "GET", target)).status
    except OSError:  # closed (or reset) before the request was even written
        return 0


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server ended the connection (EOF or reset), whatever it sent before."""
    with contextlib.suppress(ConnectionError):
        await reader.read()
    return True


# ---- 1. connection limit and idle reaping -----------------------------------------------------------------


async def test_connections_over_the_limit_are_closed_at_once_and_a_freed_slot_serves_again() -> None:
    srv = HttpServer("127.0.0.1", 0, name="test", max_connections=4, head_timeout_s=60)
    await srv.start()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(10):
            idle.append(await asyncio.open_connection("127.0.0.1", srv.port))
        closers = [asyncio.create_task(_closed_by_server(reader)) for reader, _ in idle]
        await wait_for(lambda: sum(t.done() for t in closers) >= 6, timeout_s=10,
                       what="the 6 connections over the limit closed")
        assert sum(t.done() for t in closers) == 6, "the server holds exactly max_connections"
        assert srv.open_connections == 4
        assert await status_or_closed(srv, "/healthz") == 0, "a request over the limit is closed unanswered"
        held = [writer for (_, writer), t in zip(idle, closers, strict=True) if not t.done()]
        held[0].close()  # one client goes away: its slot is free again
        # a controller retries a closed connection (UnreachableError): so does this loop, for a bounded time
        status, deadline = 0, time.monotonic() + 10
        while status == 0 and time.monotonic() < deadline:
            status = await status_or_closed(srv, "/healthz")
        assert status == 404, "the freed slot answers a real request (404: no routes on this server)"
        for task in closers:
            task.cancel()
    finally:
        for _, writer in idle:
            writer.close()
        await srv.close()


async def test_an_idle_connection_is_reaped_early_so_a_real_request_gets_through() -> None:
    srv = HttpServer("127.0.0.1", 0, name="test", max_connections=2, head_timeout_s=0.2)
    lifecycle = running_lifecycle()
    add_lifecycle_routes(srv, lifecycle)
    await srv.start()
    try:
        idle = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2)]
        for reader, writer in idle:
            # a slowloris sends its head a byte at a time: the head deadline still ends it
            writer.write(b"G")
            reply = Reply(await asyncio.wait_for(reader.read(), 5))
            assert reply.status == 408
            writer.close()
        ok = await call(srv, "GET", "/healthz")
        assert ok.status == 200
    finally:
        await srv.close()


async def test_a_whole_request_within_the_head_timeout_is_served_even_with_a_body() -> None:
    srv = HttpServer("127.0.0.1", 0, name="test", max_connections=1, head_timeout_s=5)
    add_lifecycle_routes(srv, running_lifecycle())
    await srv.start()
    try:
        assert (await call(srv, "POST", "/lifecycle/pause", b"{}")).status == 202
        assert srv.open_connections == 0, "a finished request frees its slot"
    finally:
        await srv.close()


def test_connection_limit_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        HttpServer("127.0.0.1", 0, max_connections=0)
    with pytest.raises(ValueError, match="head_timeout_s"):
        HttpServer("127.0.0.1", 0, head_timeout_s=0)


def test_control_max_connections_is_a_config_field(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ConsumerConfig(**BASE).control_max_connections == 16
    with pytest.raises(ConfigError, match="control_max_connections"):
        ConsumerConfig(**BASE, control_max_connections=0)
    monkeypatch.setenv("PYRALLEL_CONTROL_MAX_CONNECTIONS", "3")
    assert ConsumerConfig(**BASE).control_max_connections == 3


_FD_SERVER = textwrap.dedent("""
    import asyncio, logging, os, resource, sys
    from pyrallel_consumer.control_server import HttpServer, Response

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    async def main():
        srv = HttpServer("127.0.0.1", 0, name="fd-test")

        async def open_file(request):
            with open(os.devnull, "rb"):
                return Response(200, {"opened": True})

        srv.add_route("GET", "/open-file", open_file)
        await srv.start()
        headroom = int(sys.argv[1])
        in_use = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + headroom, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        print(srv.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await srv.close()

    asyncio.run(main())
""")


class FdServer:
    """A control server in a subprocess whose RLIMIT_NOFILE leaves ``headroom`` file handles free."""

    def __init__(self, tmp_path: Path, headroom: int) -> None:
        self.log_path = tmp_path / "server.log"
        with self.log_path.open("wb") as log_file:
            self.proc = subprocess.Popen([sys.executable, "-c", _FD_SERVER, str(headroom)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log_file, cwd=Path(__file__).parents[2])
        if self.proc.stdout is None or self.proc.stdin is None:
            raise RuntimeError("pipes missing")
        self.stdin = self.proc.stdin
        self.port = int(self.proc.stdout.readline())
        self.clients: list[socket.socket] = []

    def open_idle(self, count: int) -> None:
        """Connections that never send a byte; non-blocking so a full backlog cannot hang the test."""
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", self.port))
            self.clients.append(sock)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        self.stdin.write(b"stop\n")
        self.stdin.flush()
        return self.proc.wait(timeout=20)

    def kill(self) -> None:
        for sock in self.clients:
            sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


pytestmark_fd = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts open files in /proc")


@pytestmark_fd
def test_many_idle_connections_neither_exhaust_file_handles_nor_flood_the_log(tmp_path: Path) -> None:
    """The incident: more idle sockets than the process may open; accept() failed in a loop and logged it."""
    server = FdServer(tmp_path, headroom=40)
    try:
        server.open_idle(200)
        status, deadline = 0, time.monotonic() + 15
        while status != 200 and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3)
            try:
                conn.request("GET", "/open-file")
                status = conn.getresponse().status
            except OSError:
                status = 0  # closed over the limit, or not accepted yet: retry like a controller does
            finally:
                conn.close()
        assert status == 200, "the server answered a real request and could still open a file"
        assert server.stop() == 0
    finally:
        server.kill()
    log_text = server.log()
    assert "out of system resource" not in log_text
    assert len(log_text.splitlines()) < 20, log_text[-3000:]


@pytestmark_fd
def test_accept_failures_when_out_of_file_handles_are_logged_once_per_period(tmp_path: Path) -> None:
    """The process has fewer free handles than the connection limit: accept() fails (EMFILE) and is retried."""
    server = FdServer(tmp_path, headroom=4)
    try:
        server.open_idle(60)
        deadline = time.monotonic() + 15
        while "accept() failed" not in server.log():
            assert time.monotonic() < deadline, f"accept() never failed: {server.log()[-2000:]}"
            time.sleep(0.05)
        time.sleep(3)  # observe three accept retry periods: each used to log a traceback per pending connection
        assert server.stop() == 0
    finally:
        server.kill()
    log_text = server.log()
    assert log_text.count("accept() failed") == 1, log_text[-3000:]
    assert "Too many open files" in log_text
    assert len(log_text.splitlines()) < 20, log_text[-3000:]


# ---- 2. generations move forward by a bounded step ---------------------------------------------------------


async def test_a_generation_too_far_ahead_is_refused_over_http_and_does_not_lock_the_controller_out() -> None:
    lifecycle = running_lifecycle()
    srv = HttpServer("127.0.0.1", 0, name="test")
    add_lifecycle_routes(srv, lifecycle)
    await srv.start()
    try:
        jump = await call(srv, "POST", f"/lifecycle/resume?generation={MAX_GENERATION}")
        assert jump.status == 409
        assert str(MAX_GENERATION) in jump.body["error"]
        assert "control_max_generation_step" in jump.body["error"]
        assert " 0" in jump.body["error"], "the message names the current generation"
        assert jump.body["generation"] == 0
        real = await call(srv, "POST", "/lifecycle/pause?generation=1&wait=5")
        assert (real.status, real.body["generation"]) == (200, 1), "the real controller is not locked out"
    finally:
        await srv.close()


async def test_the_python_api_applies_the_same_generation_step() -> None:
    lifecycle = running_lifecycle(control_max_generation_step=3)
    lifecycle.generation = 10
    with pytest.raises(ValueError, match=r"14.*control_max_generation_step=3.*10"):
        lifecycle.request_pause(generation=14)
    with pytest.raises(ValueError, match="control_max_generation_step"):
        await lifecycle.resume(timeout_s=1, generation=MAX_GENERATION)
    assert lifecycle.generation == 10
    assert lifecycle.state is LifecycleState.ACTIVE, "a refused command does nothing"
    assert await lifecycle.pause(timeout_s=5, generation=13), "exactly the step is allowed"
    assert lifecycle.generation == 13
    with pytest.raises(ValueError, match="older"):
        lifecycle.request_resume(generation=12)


def test_control_max_generation_step_is_a_config_field(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ConsumerConfig(**BASE).control_max_generation_step == 16
    for bad in (0, 1_000_001):
        with pytest.raises(ConfigError, match="control_max_generation_step"):
            ConsumerConfig(**BASE, control_max_generation_step=bad)
    monkeypatch.setenv("PYRALLEL_CONTROL_MAX_GENERATION_STEP", "1000000")
    assert ConsumerConfig(**BASE).control_max_generation_step == 1_000_000


# ---- 3. no unauthenticated control server beyond loopback --------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com", "127.0.0.1.example.com"])
def test_binding_beyond_loopback_without_a_token_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match=r"control_host.*control_token.*control_insecure"):
        ConsumerConfig(**BASE, control_port=0, control_host=host)
    assert ConsumerConfig(**BASE, control_host=host).control_port is None, "no server, nothing to refuse"
    assert ConsumerConfig(**BASE, control_port=0, control_host=host, control_token=TOKEN).control_token


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.8.7", "::1", "localhost", "LocalHost"])
def test_loopback_needs_no_token(host: str) -> None:
    assert ConsumerConfig(**BASE, control_port=0, control_host=host).control_host == host


async def test_the_insecure_opt_out_binds_and_warns(caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRALLEL_CONTROL_INSECURE", "true")
    config = ConsumerConfig(**BASE, control_port=0, control_host="0.0.0.0")
    assert config.control_insecure is True
    srv = create_control_server(config, running_lifecycle())
    caplog.set_level(logging.INFO)
    await srv.start()
    try:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == server_module.log.name]
        assert warnings, "serving without a token beyond loopback is logged as a WARNING"
        assert "0.0.0.0" in warnings[0].getMessage()
        assert "token" in warnings[0].getMessage()
    finally:
        await srv.close()


# ---- 4. strict parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [" ", "   ", "\t\n", " padded", "padded\n", "t\u00f6ken", "tab\there"])
def test_a_token_that_could_never_match_is_refused_at_construction(token: str) -> None:
    with pytest.raises(ConfigError, match="control_token") as caught:
        ConsumerConfig(**BASE, control_token=token)
    assert token.strip() == "" or token.strip() not in str(caught.value), "the token is not echoed"
    with pytest.raises(ValueError, match="token"):
        HttpServer("127.0.0.1", 0, token=token)


@pytest.fixture
async def lifecycle_server() -> AsyncIterator[tuple[HttpServer, Lifecycle]]:
    lifecycle = running_lifecycle()
    srv = HttpServer("127.0.0.1", 0, name="test")
    add_lifecycle_routes(srv, lifecycle)
    await srv.start()
    yield srv, lifecycle
    await srv.close()


@pytest.mark.parametrize("query", [
    "generation=1_0", "generation=%201", "generation=1%20", "generation=%2B1", "generation=%D9%A1",
    "generation=0x1", "generation=", "wait=1_0", "wait=inf", "wait=%201", "wait=%2B1", "wait=1e1", "wait=.5",
    "wait=",
])
async def test_numbers_in_the_query_are_plain_decimal_digits(lifecycle_server: tuple[HttpServer, Lifecycle],
                                                             query: str) -> None:
    srv, lifecycle = lifecycle_server
    reply = await call(srv, "POST", f"/lifecycle/pause?{query}")
    assert reply.status == 400, reply.body
    assert lifecycle.generation == 0
    assert lifecycle.state is LifecycleState.ACTIVE


async def test_plain_numbers_still_work(lifecycle_server: tuple[HttpServer, Lifecycle]) -> None:
    srv, _ = lifecycle_server
    reply = await call(srv, "POST", "/lifecycle/pause?generation=0010&wait=2.50")
    assert (reply.status, reply.body["generation"]) == (200, 10)


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "JSON"), (b"\xff\xfe", "JSON"), (b'{"generation": 9}', "query"), (b"[]", "query"),
    (b'"pause"', "query"),
])
async def test_lifecycle_commands_refuse_a_body_with_content(lifecycle_server: tuple[HttpServer, Lifecycle],
                                                             body: bytes, fragment: str) -> None:
    srv, lifecycle = lifecycle_server
    reply = await call(srv, "POST", "/lifecycle/pause", body)
    assert reply.status == 400
    assert fragment in reply.body["error"]
    assert lifecycle.state is LifecycleState.ACTIVE, "a refused command does nothing"


@pytest.mark.parametrize("body", [b"", b"  \r\n", b"{}", b"null", b" { } "])
async def test_lifecycle_commands_accept_no_body_or_an_empty_one(lifecycle_server: tuple[HttpServer, Lifecycle],
                                                                 body: bytes) -> None:
    srv, _ = lifecycle_server
    assert (await call(srv, "POST", "/lifecycle/pause", body)).status == 202


@pytest.mark.parametrize("length", ["1_0", "+1", "0x1", "\u0661", "1 2"])
async def test_content_length_is_plain_decimal_digits(lifecycle_server: tuple[HttpServer, Lifecycle],
                                                      length: str) -> None:
    srv, _ = lifecycle_server
    raw = f"POST /lifecycle/pause HTTP/1.1\r\nContent-Length: {length}\r\n\r\n{{}}".encode()
    from tests.unit.test_control_server import send_raw

    reply = await send_raw(srv, raw)
    assert reply.status == 400


async def test_the_whole_flood_is_logged_once_not_per_connection(caplog: pytest.LogCaptureFixture) -> None:
    srv = HttpServer("127.0.0.1", 0, name="test", max_connections=1, head_timeout_s=60)
    await srv.start()
    caplog.set_level(logging.DEBUG, logger="pyrallel_consumer")
    held: list[asyncio.StreamWriter] = []
    try:
        first = await asyncio.open_connection("127.0.0.1", srv.port)
        held.append(first[1])
        await wait_for(lambda: srv.open_connections == 1, timeout_s=10, what="the first connection held")
        refused = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(30)]
        held.extend(writer for _, writer in refused)
        for reader, _ in refused:
            await asyncio.wait_for(_closed_by_server(reader), 10)
        over = [r for r in caplog.records if r.name == server_module.log.name and "limit" in r.getMessage()]
        assert 1 <= len(over) <= 2, [r.getMessage() for r in over]
        assert over[0].levelno == logging.WARNING
    finally:
        for writer in held:
            writer.close()
        await srv.close()


def test_loopback_detection_is_not_fooled_by_names() -> None:
    from pyrallel_consumer.config import is_loopback_host

    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("localhost.evil.example")
    assert not is_loopback_host("0.0.0.0")


# ---- positions handed over while PAUSED (blue/green strategy B) ----------------------------------------------

POSITIONS = b'{"positions": [{"topic": "t", "partition": 0, "offset": 42, "metadata": "map"}, ' \
            b'{"topic": "t", "partition": 1, "offset": 7}]}'


@pytest.fixture
async def holding_server() -> AsyncIterator[tuple[HttpServer, Lifecycle]]:
    """A real Lifecycle of a consumer that holds its partitions while paused, PAUSED, behind a server."""
    lifecycle = running_lifecycle(pause_mode="hold")
    srv = HttpServer("127.0.0.1", 0, name="test")
    add_lifecycle_routes(srv, lifecycle)
    await srv.start()
    assert (await call(srv, "POST", "/lifecycle/pause?wait=5")).status == 200
    yield srv, lifecycle
    await srv.close()


def taken(lifecycle: Lifecycle) -> list[list[Position]]:
    return cast(FakeCoordinator, lifecycle._target).taken


async def test_a_paused_consumer_takes_positions_and_stays_paused(holding_server: tuple[HttpServer, Lifecycle]
                                                                  ) -> None:
    srv, lifecycle = holding_server
    reply = await call(srv, "POST", "/lifecycle/positions?generation=1", POSITIONS)
    assert (reply.status, reply.body["state"], reply.body["positions"]) == (200, "PAUSED", 2), reply.body
    assert taken(lifecycle) == [[Position("t", 0, 42, "map"), Position("t", 1, 7, None)]]
    assert lifecycle.state is LifecycleState.PAUSED and lifecycle.generation == 1
    assert (await call(srv, "POST", "/lifecycle/resume?wait=5&generation=1")).status == 200


async def test_positions_are_refused_by_an_active_consumer(lifecycle_server: tuple[HttpServer, Lifecycle]) -> None:
    srv, lifecycle = lifecycle_server
    reply = await call(srv, "POST", "/lifecycle/positions?generation=3", POSITIONS)
    assert reply.status == 409
    assert "PAUSED" in reply.body["error"]
    assert lifecycle.generation == 0, "a refused command does nothing"


async def test_positions_are_refused_by_a_consumer_that_released_its_partitions(
        lifecycle_server: tuple[HttpServer, Lifecycle]) -> None:
    srv, lifecycle = lifecycle_server
    assert (await call(srv, "POST", "/lifecycle/pause?wait=5")).status == 200
    reply = await call(srv, "POST", "/lifecycle/positions", POSITIONS)
    assert reply.status == 409
    assert "hold" in reply.body["error"]
    assert taken(lifecycle) == []


async def test_positions_of_another_topic_are_refused(holding_server: tuple[HttpServer, Lifecycle]) -> None:
    srv, lifecycle = holding_server
    body = b'{"positions": [{"topic": "elsewhere", "partition": 0, "offset": 1}]}'
    reply = await call(srv, "POST", "/lifecycle/positions", body)
    assert reply.status == 409
    assert "elsewhere" in reply.body["error"]
    assert taken(lifecycle) == []


@pytest.mark.parametrize(("body", "fragment"), [
    (b'{"positions": [{"topic": "t", "partition": -1, "offset": 1}]}', "partition"),
    (b'{"positions": [{"topic": "t", "partition": 0, "offset": "1"}]}', "offset"),
    (b'{"positions": [{"partition": 0, "offset": 1}]}', "topic"),
    (b'{"positions": [{"topic": "t", "partition": 0, "offset": 1, "epoch": 3}]}', "epoch"),
    (b'{"positions": [{"topic": "t", "partition": 0, "offset": 1}, {"topic": "t", "partition": 0, "offset": 2}]}',
     "two positions"),
    (b'{"positions": {"t": 1}}', "list"),
    (b'{"positions": [], "generation": 4}', "body must be"),
    (b"", "body must be"),
])
async def test_bad_positions_are_400_and_do_nothing(holding_server: tuple[HttpServer, Lifecycle], body: bytes,
                                                    fragment: str) -> None:
    srv, lifecycle = holding_server
    reply = await call(srv, "POST", "/lifecycle/positions", body)
    assert reply.status == 400
    assert fragment in reply.body["error"]
    assert taken(lifecycle) == []


async def test_a_resume_takes_no_positions(holding_server: tuple[HttpServer, Lifecycle]) -> None:
    srv, lifecycle = holding_server
    reply = await call(srv, "POST", "/lifecycle/resume", POSITIONS)
    assert reply.status == 400
    assert lifecycle.state is LifecycleState.PAUSED


async def test_positions_that_cannot_be_taken_leave_it_paused_and_say_why(
        holding_server: tuple[HttpServer, Lifecycle]) -> None:
    srv, lifecycle = holding_server
    cast(FakeCoordinator, lifecycle._target).fail_with = KeyError("commit refused")
    reply = await call(srv, "POST", "/lifecycle/positions", POSITIONS)
    assert reply.status == 500
    assert "commit refused" in reply.body["error"]
    assert lifecycle.state is LifecycleState.PAUSED


async def test_a_pause_crossing_a_resume_is_answered_once_the_resume_is_over() -> None:
    """The answer PAUSED must mean paused: not while the resume it crossed may still turn the consumer ACTIVE."""
    gate = asyncio.Event()

    class SlowCoordinator(FakeCoordinator):
        async def activate(self) -> None:
            await gate.wait()

    lifecycle = Lifecycle(cast(Any, SlowCoordinator()), ConsumerConfig(**BASE, start_paused=True),
                          cast(Any, FakeObserver()))
    lifecycle.started()
    lifecycle.request_resume()
    await asyncio.sleep(0)  # the resume's activation is under way (blocked on the gate)
    lifecycle.request_pause()
    waiting = asyncio.ensure_future(lifecycle.wait_for(LifecycleState.PAUSED, 5))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "answered PAUSED while the resume was still being applied"
    gate.set()
    assert await waiting
    assert lifecycle.state is LifecycleState.PAUSED
