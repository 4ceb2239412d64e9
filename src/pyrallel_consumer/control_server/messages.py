"""The wire format of the control server: parsing a request's head and body, encoding a JSON answer.

Pure functions and value types used by ``control_server.server`` on the event loop. Parsing is strict and bounded:
lines, headers and bodies have size limits, and numbers (Content-Length, query integers) are plain ASCII digits,
because ``int()`` alone also takes ``1_0``, ``+1`` and non-ASCII digits.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_LINE_BYTES = 8192
MAX_HEADERS = 64
MAX_BODY_BYTES = 1_048_576
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


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


class ConnectionClosedError(Exception):
    """The client closed the connection before sending a request: nothing to answer."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    headers: dict[str, str]


async def read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # the line exceeded the stream limit
        raise HttpError(431, f"a request line or header is longer than {MAX_LINE_BYTES} bytes") from None


async def read_head(reader: asyncio.StreamReader) -> RequestHead:
    """The request line and headers; the caller bounds the time (``head_timeout_s``)."""
    line = await read_line(reader)
    if not line:
        raise ConnectionClosedError
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, target, _version = parts
    headers: dict[str, str] = {}
    while True:
        raw = await read_line(reader)
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
    return RequestHead(method, target, headers)


async def read_body(reader: asyncio.StreamReader, head: RequestHead) -> Request:
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


def encode_response(response: Response) -> bytes:
    body = json.dumps(response.body).encode()
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    head = [f"HTTP/1.1 {response.status} {reason}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close"]
    head.extend(f"{name}: {value}" for name, value in response.headers.items())
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
