"""The lab's HTTP(S) listener: one per emulated host, on loopback, all on one asyncio loop.

Only what WinRM clients use: POST /wsman with a Content-Length body, keep-alive, Basic
auth (and refusal of Basic over plain HTTP unless the host allows unencrypted traffic, as
Windows does).  A listener can be closed and reopened on the same port, which is how a
host's reboot looks from outside: refused connections, then a fresh service.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[HttpRequest, str], Awaitable[HttpResponse]]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Request Entity Too Large", 500: "Internal Server Error"}


@dataclass
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # lab data, but no reason to print it around
        return f"Credentials(username={self.username!r}, password='***')"


class Listener:
    """Accepts connections for one host; `handler(request, user)` answers authenticated requests."""

    def __init__(
        self,
        port: int,
        handler: Handler,
        credentials: Credentials,
        tls: ssl.SSLContext | None,
        allow_unencrypted: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.credentials = credentials
        self.tls = tls
        self.allow_unencrypted = allow_unencrypted
        self.requests_served = 0
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.tls, reuse_address=True, backlog=128
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every open connection (the host went away)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()
        for task in list(self._tasks):
            task.cancel()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._connections.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                response = await self._answer(request)
                writer.write(_render(response))
                await writer.drain()
                if request.headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, _BadRequest):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.transport.abort()

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        self.requests_served += 1
        if request.method != "POST":
            return HttpResponse(405)
        if request.path.split("?")[0].rstrip("/").lower() != "/wsman":
            return HttpResponse(404)
        user = self._authenticate(request.headers.get("authorization", ""))
        if user is None:
            return self._unauthorized()
        return await self.handler(request, user)

    def _authenticate(self, header: str) -> str | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        if self.tls is None and not self.allow_unencrypted:
            return None  # WinRM refuses Basic over HTTP unless AllowUnencrypted is set
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if user.lower() != self.credentials.username.lower() or password != self.credentials.password:
            return None
        return user

    def _unauthorized(self) -> HttpResponse:
        offers = [("WWW-Authenticate", "Negotiate")]
        if self.tls is not None or self.allow_unencrypted:
            offers.insert(0, ("WWW-Authenticate", 'Basic realm="WSMAN"'))
        return HttpResponse(401, b"", tuple(offers))


class _BadRequest(Exception):
    pass


async def _read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("truncated request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise _BadRequest("request head too large") from None
    if len(head) > MAX_HEADER_BYTES:
        raise _BadRequest("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _BadRequest("bad request line")
    method, path, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY_BYTES:
            raise _BadRequest("body too large")
        body = await reader.readexactly(length) if length else b""
    return HttpRequest(method, path, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(chunks)
        total += size
        if total > MAX_BODY_BYTES:
            raise _BadRequest("body too large")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _render(response: HttpResponse) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}", "Server: Microsoft-HTTPAPI/2.0"]
    if response.body:
        lines.append(f"Content-Type: {SOAP_CONTENT_TYPE}")
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    lines.append(f"Content-Length: {len(response.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
