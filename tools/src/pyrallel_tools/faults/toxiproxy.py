"""Toxiproxy, a real TCP fault proxy, built from the Go module proxy and driven over its HTTP API.

The fault tests put a Toxiproxy proxy between a client and the local broker (or any TCP server) and then cut,
slow down or reset the connections through it: faults that only a real socket shows (half-read responses,
refused reconnects, stalls), which a mocked client cannot.

Three parts, each usable alone:

* ``ensure_toxiproxy()`` builds ``toxiproxy-server`` once with ``go install`` into the per-user cache
  (``make toxiproxy`` calls it, and so does ``Toxiproxy.start``); a marker file makes later calls a no-op.
* ``Toxiproxy`` starts and stops one server process owned by the calling test (or fixture).
* ``ToxiproxyClient`` needs only the server's URL, so a child process of a test (a consumer application, a
  scenario driver) can inject faults into a server that its parent started.

No new dependency: the HTTP calls use ``urllib.request``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from pyrallel_tools.gobuild import GoBuild, ensure_go_tools, tool_dir
from pyrallel_tools.localkafka import processes
from pyrallel_tools.localkafka.errors import LocalKafkaError

log = logging.getLogger(__name__)

# v2.12.0 (March 2025) is the newest release. The module proxy's version list still stops at v2.5.0, so
# `go list -m ...@latest` says v2.5.0, but v2.12.0 resolves when asked for by name; its go.mod needs go 1.23.0.
TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2"
TOXIPROXY_BINARY = "toxiproxy-server"
"""The server's file name: also how ``/proc/<pid>/cmdline`` tells our process from a recycled PID."""
BUILD_TIMEOUT_S = 1200.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def toxiproxy_dir() -> Path:
    """``<cache>/toxiproxy-<version>``: one folder per version, so that a version bump builds anew."""
    return tool_dir(f"toxiproxy-{TOXIPROXY_VERSION}")


def toxiproxy_binary() -> Path:
    """Where ``ensure_toxiproxy`` puts the server: ``<cache>/toxiproxy-<version>/bin/toxiproxy-server``."""
    return toxiproxy_dir() / "bin" / TOXIPROXY_BINARY


def ensure_toxiproxy() -> Path:
    """Return the path of ``toxiproxy-server``, building it with ``go install`` only the first time.

    Called by ``make toxiproxy`` (a prerequisite of ``make test``) and by ``Toxiproxy.start``. ``go install`` names
    the binary ``server`` after its package folder; it is renamed ``toxiproxy-server`` so that ``ps`` shows a
    recognisable name.
    """
    build = GoBuild(TOXIPROXY_BINARY, ["go", "install", f"{TOXIPROXY_MODULE}/cmd/server@{TOXIPROXY_VERSION}"],
                    output="server", timeout_s=BUILD_TIMEOUT_S)
    return ensure_go_tools(toxiproxy_dir().name, [build], f"Toxiproxy {TOXIPROXY_VERSION}") / TOXIPROXY_BINARY


class ToxiproxyClient:
    """The HTTP API of one Toxiproxy server, given only its URL (``http://127.0.0.1:PORT``).

    Used by the fault tests and by any process they start. Every call that the server refuses raises
    ``LocalKafkaError`` with the HTTP status and Toxiproxy's own message (for example ``proxy not found``).

    Cheat sheet of the faults the tests need:

    * full partition: ``set_enabled(name, False)`` closes the listener and every established connection through
      the proxy; new connections are refused until ``set_enabled(name, True)`` or ``reset()``;
    * slow network: ``latency``, ``bandwidth``;
    * connection reset: ``reset_peer`` (RST on the next data, for connections opened after it was added),
      ``limit_data`` (close after N bytes, mid-response).
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise LocalKafkaError(f"Not a Toxiproxy URL: {url!r} (expected http://HOST:PORT)")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            f"{self.url}{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310 - see above
                raw: bytes = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            with contextlib.suppress(ValueError, AttributeError):
                detail = str(json.loads(detail)["error"])
            raise LocalKafkaError(f"Toxiproxy {method} {path} failed: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise LocalKafkaError(f"Toxiproxy at {self.url} did not answer {method} {path}: {exc}") from exc
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise LocalKafkaError(f"Toxiproxy {method} {path} answered non-JSON: {raw[:200]!r}") from exc

    def version(self) -> str:
        """The server's version string; it answering at all is what ``Toxiproxy.start`` waits for."""
        answer = self._request("GET", "/version")
        if isinstance(answer, dict):
            return str(answer.get("version", ""))
        return str(answer)

    def proxies(self) -> dict[str, dict[str, Any]]:
        """Every proxy by name, each with ``listen``, ``upstream``, ``enabled`` and its ``toxics``."""
        answer = self._request("GET", "/proxies")
        return dict(answer) if isinstance(answer, dict) else {}

    def create_proxy(self, name: str, listen: str, upstream: str) -> dict[str, Any]:
        """Listen on ``listen`` (``127.0.0.1:PORT``) and forward every connection to ``upstream`` (``HOST:PORT``).

        Returns the proxy as Toxiproxy describes it; ``listen`` there is the address really bound, so
        ``127.0.0.1:0`` picks a free port.
        """
        answer = self._request("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream})
        return dict(answer) if isinstance(answer, dict) else {}

    def delete_proxy(self, name: str) -> None:
        """Remove the proxy, closing its listener and every connection through it."""
        self._request("DELETE", f"/proxies/{urllib.parse.quote(name, safe='')}")

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Disable for a full partition, enable to heal it.

        Disabled: the listener is closed (connects are refused) and every established connection through the proxy
        is closed at once, on both sides, with a clean close (the client reads EOF, not a reset); the toxics stay.
        Enabled again: the proxy listens on the same address.
        """
        self._request("POST", f"/proxies/{urllib.parse.quote(name, safe='')}", {"enabled": enabled})

    def add_toxic(
        self,
        proxy: str,
        name: str,
        type: str,
        attributes: dict[str, Any],
        stream: str = "downstream",
        toxicity: float = 1.0,
    ) -> dict[str, Any]:
        """Add one toxic to ``proxy`` (``stream``: ``downstream`` = server to client, ``upstream`` = client to server).

        ``toxicity`` is the share of connections it applies to (1.0 = every one). Names are unique per proxy.
        """
        body = {"name": name, "type": type, "stream": stream, "toxicity": toxicity, "attributes": attributes}
        answer = self._request("POST", f"/proxies/{urllib.parse.quote(proxy, safe='')}/toxics", body)
        return dict(answer) if isinstance(answer, dict) else {}

    def remove_toxic(self, proxy: str, name: str) -> None:
        """Remove one toxic; the connections go on without it."""
        quoted = urllib.parse.quote(proxy, safe="")
        self._request("DELETE", f"/proxies/{quoted}/toxics/{urllib.parse.quote(name, safe='')}")

    def reset(self) -> None:
        """Heal everything: enable every proxy and remove every toxic (the proxies themselves stay)."""
        self._request("POST", "/reset")

    def latency(self, proxy: str, ms: int, jitter_ms: int = 0) -> list[str]:
        """Delay the server's answers by ``ms`` (+/- ``jitter_ms``): downstream only.

        One direction is enough to make every request/response round trip ``ms`` slower; adding it upstream too would
        make it ``2 * ms`` and the number would lie. Returns the names of the toxics added (for ``remove_toxic``);
        a second call without removing them first fails with HTTP 409 rather than silently stacking two delays.
        """
        name = "latency_downstream"
        self.add_toxic(proxy, name, "latency", {"latency": ms, "jitter": jitter_ms}, stream="downstream")
        return [name]

    def bandwidth(self, proxy: str, kb_per_s: int) -> list[str]:
        """Cap the throughput at ``kb_per_s`` KB/s in both directions (produce is upstream, fetch downstream)."""
        names = []
        for stream in ("upstream", "downstream"):
            name = f"bandwidth_{stream}"
            self.add_toxic(proxy, name, "bandwidth", {"rate": kb_per_s}, stream=stream)
            names.append(name)
        return names

    def reset_peer(self, proxy: str, timeout_ms: int = 0, stream: str = "upstream") -> list[str]:
        """Reset each connection ``timeout_ms`` after its next data in ``stream`` (default: upstream only).

        The data that triggers it is dropped, not forwarded. Upstream only because Kafka clients always speak first
        (the broker only answers), and because with both directions a ``timeout_ms`` > 0 fires twice in a row (the
        upstream toxic closes the server side, the downstream one then waits again): measured, the client saw its
        reset after 2 x ``timeout_ms``.
        Toxiproxy acts only on data: an idle connection is untouched until its client next sends.
        A real RST ("connection reset by peer") only hits connections opened *after* the toxic was added: Toxiproxy
        sets SO_LINGER 0 when a connection starts, so one already open is closed cleanly (EOF) instead. To reset a
        client's long-lived connections, add the toxic and let the first EOF make it reconnect, or add it first.
        """
        name = f"reset_peer_{stream}"
        self.add_toxic(proxy, name, "reset_peer", {"timeout": timeout_ms}, stream=stream)
        return [name]

    def limit_data(self, proxy: str, bytes: int, stream: str = "downstream") -> list[str]:
        """Close each connection after ``bytes`` bytes in ``stream`` (default downstream only).

        Downstream counts the server's answers, so a fetch response is cut part way: "connection reset mid-fetch".
        One direction only, as the counters are per direction and two limits would blur which one fired.
        """
        name = f"limit_data_{stream}"
        self.add_toxic(proxy, name, "limit_data", {"bytes": bytes}, stream=stream)
        return [name]


def _port_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Toxiproxy:
    """One ``toxiproxy-server`` process on 127.0.0.1, owned by the test or fixture that started it.

    It lives in its own session (a Ctrl-C of the test run does not hit it first) and logs to
    ``run_dir/toxiproxy.log``. ``stop()`` ends it; its proxies go with it.
    """

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
        self._proc = proc
        self.port = port
        self.log_file = log_file

    @classmethod
    def start(cls, run_dir: Path, port: int) -> Toxiproxy:
        """Build if needed, start the server with its API on ``127.0.0.1:port``, and wait until it answers.

        Raises ``LocalKafkaError`` with the end of its log if the port is taken, or the server exits or does not
        answer within 30 s.
        """
        binary = ensure_toxiproxy()
        if _port_answers(port):
            raise LocalKafkaError(f"Port {port} on 127.0.0.1 is already in use; Toxiproxy needs a free one.")
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = cls.log_file_in(run_dir)
        proc = processes.spawn([str(binary), "-host", "127.0.0.1", "-port", str(port)], run_dir, log_file)
        server = cls(proc, port, log_file)
        log.info("Started Toxiproxy (pid %d) on %s, log %s", proc.pid, server.url, log_file)
        try:
            server._wait_ready(START_TIMEOUT_S)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout_s: float) -> None:
        probe = ToxiproxyClient(self.url, timeout_s=1.0)

        def ready() -> bool:
            # The server does not exit when its API cannot listen; it only logs it.
            if "Server finished with error" in self.log_file.read_text(errors="replace"):
                raise LocalKafkaError(
                    f"Toxiproxy could not listen on {self.url}. Last lines of {self.log_file}:\n"
                    f"{processes.tail(self.log_file)}"
                )
            try:
                probe.version()
            except LocalKafkaError:
                return False
            return True

        processes.wait_until(ready, self._proc, "Toxiproxy server", self.log_file, TOXIPROXY_BINARY, timeout_s)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def url(self) -> str:
        """The API's URL, to hand to a ``ToxiproxyClient`` in this or another process."""
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def log_file_in(run_dir: Path) -> Path:
        return run_dir / "toxiproxy.log"

    def stop(self) -> None:
        """SIGTERM (the server closes its proxies), then SIGKILL if it has not exited in time. Idempotent."""
        processes.terminate(self.pid, TOXIPROXY_BINARY, STOP_TIMEOUT_S)
        # The process may still be exiting when its command line is already gone: wait for it (our child), so no
        # zombie is left behind.
        self._proc.wait(timeout=STOP_TIMEOUT_S)
