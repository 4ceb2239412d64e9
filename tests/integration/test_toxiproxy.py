"""Toxiproxy is real: a go-built server proxies a TCP echo server, and its faults act on real sockets.

No Kafka: the upstream is a tiny echo server in a thread. Marked integration because it runs a built binary and real
sockets (the first run builds Toxiproxy with `go install`, which `make test` does beforehand via `make toxiproxy`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrallel_tools.faults.toxiproxy import Toxiproxy, ToxiproxyClient
from pyrallel_tools.localkafka.cluster import free_port
from pyrallel_tools.localkafka.errors import LocalKafkaError

pytestmark = pytest.mark.integration


class EchoServer:
    """Echoes every byte back, one thread per connection; stop() closes the listener and every connection."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, name="echo-accept", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), name="echo-conn", daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toxiproxy]:
    server = Toxiproxy.start(tmp_path_factory.mktemp("toxiproxy"), free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxied(toxiproxy: Toxiproxy, echo: EchoServer) -> Iterator[tuple[ToxiproxyClient, str, int]]:
    """A fresh proxy to the echo server, driven by a client that knows only the URL (as another process would)."""
    client = ToxiproxyClient(toxiproxy.url)
    name = f"echo-{uuid.uuid4().hex[:8]}"
    created = client.create_proxy(name, f"127.0.0.1:{free_port()}", f"127.0.0.1:{echo.port}")
    port = int(str(created["listen"]).rsplit(":", 1)[1])
    try:
        yield client, name, port
    finally:
        client.reset()
        client.delete_proxy(name)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _read_until_closed(sock: socket.socket) -> tuple[bytes, str]:
    """Everything until the peer closes; how it closed: 'eof' (FIN) or 'reset' (RST)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received, "reset"
        if not chunk:
            return received, "eof"
        received += chunk


def test_bytes_pass_through(proxied: tuple[ToxiproxyClient, str, int]) -> None:
    client, name, port = proxied
    with _connect(port) as sock:
        assert _round_trip(sock, b"hello through toxiproxy") == b"hello through toxiproxy"
    assert client.proxies()[name]["enabled"] is True


def test_disabled_proxy_is_a_full_partition_and_enabling_heals_it(
    proxied: tuple[ToxiproxyClient, str, int],
) -> None:
    client, name, port = proxied
    with _connect(port) as established:
        assert _round_trip(established, b"before") == b"before"
        client.set_enabled(name, False)
        # The established connection is closed by the proxy (cleanly: EOF, not RST), not just stalled.
        assert _read_until_closed(established) == (b"", "eof")
    with pytest.raises(ConnectionRefusedError):
        _connect(port).close()
    assert client.proxies()[name]["enabled"] is False

    client.set_enabled(name, True)
    with _connect(port) as sock:
        assert _round_trip(sock, b"after") == b"after"


def test_latency_slows_each_round_trip(proxied: tuple[ToxiproxyClient, str, int]) -> None:
    client, name, port = proxied
    names = client.latency(name, 300)
    with _connect(port) as sock:
        started = time.monotonic()
        assert _round_trip(sock, b"ping") == b"ping"
        assert time.monotonic() - started >= 0.3
    for toxic in names:
        client.remove_toxic(name, toxic)
    assert client.proxies()[name]["toxics"] == []


def test_limit_data_closes_the_connection_after_the_limit(proxied: tuple[ToxiproxyClient, str, int]) -> None:
    client, name, port = proxied
    client.limit_data(name, 10)
    with _connect(port) as sock:
        sock.sendall(b"x" * 100)
        received, _ = _read_until_closed(sock)
    assert received == b"x" * 10


def test_reset_peer_resets_new_connections_on_the_next_data(proxied: tuple[ToxiproxyClient, str, int]) -> None:
    client, name, port = proxied
    client.reset_peer(name)
    with _connect(port) as sock:
        sock.sendall(b"boom")
        assert _read_until_closed(sock) == (b"", "reset")


def test_reset_peer_only_closes_a_connection_opened_before_it(proxied: tuple[ToxiproxyClient, str, int]) -> None:
    """Toxiproxy sets SO_LINGER 0 when a connection starts: one already open gets EOF, not RST (see the docstring)."""
    client, name, port = proxied
    with _connect(port) as sock:
        assert _round_trip(sock, b"open") == b"open"
        client.reset_peer(name)
        sock.sendall(b"boom")
        assert _read_until_closed(sock) == (b"", "eof")


def test_reset_removes_toxics_and_enables(proxied: tuple[ToxiproxyClient, str, int]) -> None:
    client, name, port = proxied
    client.bandwidth(name, 1)
    client.set_enabled(name, False)
    client.reset()
    proxy = client.proxies()[name]
    assert proxy["enabled"] is True
    assert proxy["toxics"] == []
    with _connect(port) as sock:
        assert _round_trip(sock, b"healed") == b"healed"


def test_api_errors_are_clear(toxiproxy: Toxiproxy, proxied: tuple[ToxiproxyClient, str, int]) -> None:
    client, name, _ = proxied
    with pytest.raises(LocalKafkaError, match=r"HTTP 404: proxy not found"):
        client.set_enabled("no-such-proxy", False)
    with pytest.raises(LocalKafkaError, match=r"HTTP 404: proxy not found"):
        client.latency("no-such-proxy", 10)
    with pytest.raises(LocalKafkaError, match=r"HTTP 400: invalid toxic type"):
        client.add_toxic(name, "bad", "no_such_toxic", {})
    with pytest.raises(LocalKafkaError, match=r"HTTP 404: toxic not found"):
        client.remove_toxic(name, "never-added")
    with pytest.raises(LocalKafkaError, match="Not a Toxiproxy URL"):
        ToxiproxyClient("127.0.0.1:8474")
    with pytest.raises(LocalKafkaError, match="did not answer"):
        ToxiproxyClient(f"http://127.0.0.1:{free_port()}", timeout_s=2).proxies()


def test_start_refuses_a_taken_port(toxiproxy: Toxiproxy, tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match="already in use"):
        Toxiproxy.start(tmp_path, toxiproxy.port)


def test_stop_ends_the_process(tmp_path: Path) -> None:
    server = Toxiproxy.start(tmp_path, free_port())
    try:
        assert ToxiproxyClient(server.url).version()
    finally:
        server.stop()
    assert not Path(f"/proc/{server.pid}").exists()
    server.stop()  # idempotent
