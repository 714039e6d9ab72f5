"""The lab's HTTP(S) listener: one per emulated host, on loopback, all on one asyncio loop.

Only what WinRM clients use: POST /wsman with a Content-Length body, keep-alive, and the
two logons a client may pick per request, as Windows offers them: Basic (refused over plain
HTTP unless the host allows unencrypted traffic) and Negotiate carrying NTLM, whose logon
holds for the connection and, over plain HTTP, seals every body (see ntlm.py).  A listener
can be closed and reopened on the same port, which is how a host's reboot looks from
outside: refused connections, then a fresh service.  The host's fault plan (faults.py)
is applied here, after the logon and before the WS-Man service sees the request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import email.utils
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import wsman
from .faults import Faults, Reset
from .ntlm import Acceptor, NtlmError, encrypted
from .ntlm import content_type as sealed_type

MAX_HEADER_BYTES = 64 * 1024
MAX_KERBEROS_SKEW = 300.0  # seconds: Kerberos' default maximum clock skew
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


@dataclass
class InFlight:
    """Requests being answered at once across the lab's hosts (read from its loop), and the most seen:
    what one controller had in flight at its busiest (bench/ and the request-slot tests read it)."""

    now: int = 0
    peak: int = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


@dataclass
class _Connection:
    """One client connection's logon: NTLM logs the connection on, not each request."""

    acceptor: Acceptor | None = None
    user: str | None = None


class _Drop(Exception):
    """Close the connection without answering."""


class Listener:
    """Accepts connections for one host; `handler(request, user)` answers authenticated requests.

    ``ntlm_store`` (ntlm.write_store) enables Negotiate/NTLM; ``faults`` applies a fault plan.
    The counters say what happened on the wire: ``sealed_requests`` were decrypted,
    ``plain_requests`` were WS-Man bodies that came in the clear, ``auth_failures`` were 401s
    answered to a logon attempt.
    """

    def __init__(
        self,
        port: int,
        handler: Handler,
        credentials: Credentials,
        tls: ssl.SSLContext | None,
        allow_unencrypted: bool = False,
        host: str = "127.0.0.1",
        *,
        ntlm_store: Path | None = None,
        faults: Faults | None = None,
        max_envelope_bytes: int = 500 * 1024,
        idle_connection_seconds: float = 120.0,
        clock: Callable[[], dt.datetime] | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.credentials = credentials
        self.tls = tls
        self.allow_unencrypted = allow_unencrypted
        self.ntlm_store = ntlm_store
        self.faults = faults
        self.max_envelope_bytes = max_envelope_bytes
        self.idle_connection_seconds = idle_connection_seconds
        # The host's own clock: every answer carries it in Date (as HTTP.sys writes one), and
        # Kerberos refuses a logon when it is more than MAX_KERBEROS_SKEW off the client's.
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.in_flight = in_flight or InFlight()
        self.skew_refusals = 0  # Kerberos logons refused for clock skew (KRB_AP_ERR_SKEW)
        self.requests_served = 0
        self.bytes_received = 0  # request bodies as they came on the wire (sealed or not): what a client sends
        self.idle_closed = 0  # connections closed for idling, as HTTP.sys closes them
        self.refused_seals = 0  # sealed bodies on a connection with no logon: HTTP 400
        self.kerberos_logons = 0  # logons that used Kerberos (the Kerberos scheme, or Negotiate with a ticket)
        self.sealed_requests = 0
        self.plain_requests = 0
        self.auth_failures = 0
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._idle: set[asyncio.StreamWriter] = set()  # connections waiting for their next request
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.tls, reuse_address=True, backlog=128
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.faults is not None and self.faults.plan.refuse:
            await self.stop()  # the port is known, and refuses: a host that is down

    async def stop(self) -> None:
        """Stop listening and drop every open connection (the host went away)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:  # let each finish its cancellation (a connection waiting for its next request has a timer task)
            await asyncio.wait(tasks, timeout=1.0)
        if server is not None:
            await server.wait_closed()

    def close_idle_connections(self) -> int:
        """Close every connection waiting for its next request, as HTTP.sys does once it idled
        IdleConnectionTimeout; what the client sends next arrives on a new socket.  Returns how many."""
        idle = list(self._idle)
        for writer in idle:
            self.idle_closed += 1
            writer.close()
        return len(idle)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._connections.add(writer)
        connection = _Connection()
        try:
            while True:
                # HTTP.sys closes a connection that sends nothing for IdleConnectionTimeout (120 s by
                # default: Microsoft's "HTTP.sys timeouts", the "Server timeouts" settings).
                self._idle.add(writer)
                try:
                    request = await asyncio.wait_for(_read_request(reader), self.idle_connection_seconds or None)
                except asyncio.TimeoutError:
                    self.idle_closed += 1
                    break
                finally:
                    self._idle.discard(writer)
                if request is None:
                    break
                self.in_flight.enter()  # from the whole request read to its answer written
                try:
                    response = await self._answer(request, connection)
                    writer.write(_render(response, self.clock()))
                    await writer.drain()
                finally:
                    self.in_flight.leave()
                if request.headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, _BadRequest, _Drop):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _answer(self, request: HttpRequest, connection: _Connection) -> HttpResponse:
        self.requests_served += 1
        self.bytes_received += len(request.body)
        if request.method != "POST":
            return HttpResponse(405)
        if request.path.split("?")[0].rstrip("/").lower() != "/wsman":
            return HttpResponse(404)
        header = request.headers.get("authorization", "")
        final_token: bytes | None = None
        if header:
            connection.user = None  # a new logon on this connection replaces the old one
            scheme, _, token = header.partition(" ")
            if scheme.lower() in ("negotiate", "kerberos") and self.ntlm_store is not None:
                answer = self._negotiate(connection, token, scheme)
                if isinstance(answer, HttpResponse):
                    return answer
                final_token = answer
                user = connection.user
            else:
                user = self._basic(scheme, token)
        else:
            user = connection.user
        if user is None:
            if header:
                self.auth_failures += 1
            elif request.body and encrypted(request.headers.get("content-type", "")):
                # A sealed body on a connection with no logon (the old one was closed while idle):
                # nothing can unseal it, and Windows answers 400 before the service sees it (noted in
                # ansible-core's winrm plugin: a new connection needs a fresh NTLM handshake).
                self.refused_seals += 1
                return HttpResponse(400)
            return self._unauthorized()
        sealed = connection.acceptor is not None and encrypted(request.headers.get("content-type", ""))
        if sealed:
            assert connection.acceptor is not None
            try:
                request = replace(request, body=connection.acceptor.unseal(request.body))
            except NtlmError:
                return HttpResponse(400)
            self.sealed_requests += 1
        elif request.body:
            if self.tls is None and not self.allow_unencrypted:
                return self._unauthorized()  # AllowUnencrypted=false: a clear body is refused
            self.plain_requests += 1
        if len(request.body) > self.max_envelope_bytes:
            # MaxEnvelopeSizekb (500 by default, 150 on 2008 R2 as pypsrp's update_envelope_size_* recordings
            # show): a larger request is refused with HTTP 413 (ansible.windows#391 and #620).
            return HttpResponse(413)
        offer = connection.acceptor.scheme.capitalize() if connection.acceptor is not None else "Negotiate"
        headers = (("WWW-Authenticate", f"{offer} " + base64.b64encode(final_token).decode("ascii")),) if final_token else ()
        if not request.body and connection.acceptor is not None:
            return HttpResponse(200, b"", headers)  # the logon request a client sends before sealed traffic
        response = await self._faulted(request, user)
        if sealed:
            assert connection.acceptor is not None
            body = connection.acceptor.seal(response.body)
            response = replace(response, body=body,
                               headers=response.headers + (("Content-Type", sealed_type(connection.acceptor.protocol)),))
        return replace(response, headers=response.headers + headers)

    async def _faulted(self, request: HttpRequest, user: str) -> HttpResponse:
        """The service's answer, unless the host's fault plan answers (or drops the connection) first."""
        faults = self.faults
        if faults is None:
            return await self.handler(request, user)
        try:
            parsed = wsman.parse_request(request.body)
        except wsman.WSManFault:
            return await self.handler(request, user)  # the service words the fault
        try:
            await faults.enter(parsed, user)
            response = await self.handler(request, user)
            if response.status == 200:
                faults.answered(parsed)
            await faults.late(parsed, response.status)
            return response
        except wsman.WSManFault as fault:
            await faults.late(parsed, fault.http_status)
            return HttpResponse(fault.http_status, wsman.fault_envelope(parsed, fault, faults.host.name))
        except Reset:
            raise _Drop() from None
        finally:
            faults.leave(user)

    def _negotiate(self, connection: _Connection, token: str, scheme: str = "negotiate") -> HttpResponse | bytes | None:
        """Step the NTLM or Kerberos logon: a 401 to send (challenge or refusal), or the final token (None for raw NTLM)."""
        assert self.ntlm_store is not None
        try:
            data = base64.b64decode(token.strip(), validate=True)
        except binascii.Error:
            data = b""
        if connection.acceptor is None or connection.acceptor.complete:
            connection.acceptor = Acceptor(self.ntlm_store, scheme)
        acceptor = connection.acceptor
        try:
            if not data:
                raise NtlmError("no token")
            out = acceptor.step(data)
        except NtlmError:
            connection.acceptor = None
            self.auth_failures += 1
            return self._unauthorized()
        if not acceptor.complete:
            challenge = base64.b64encode(out or b"").decode("ascii")
            return HttpResponse(401, b"", (("WWW-Authenticate", f"{acceptor.scheme.capitalize()} {challenge}"),))
        expired = self.faults is not None and self.faults.auth_refused
        if expired or acceptor.user.lower() != self.credentials.username.lower():
            connection.acceptor = None
            self.auth_failures += 1
            return self._unauthorized()
        if acceptor.negotiated == "kerberos":
            skew = abs((self.clock() - dt.datetime.now(dt.timezone.utc)).total_seconds())
            if skew > MAX_KERBEROS_SKEW:
                # KRB_AP_ERR_SKEW: the host takes no authenticator more than 5 minutes off its own clock
                # (MIT/Windows default clockskew 300 s).  Windows puts a KRB-ERROR token in the 401's
                # WWW-Authenticate; the lab answers a bare 401 (its Date header still shows the host's clock).
                connection.acceptor = None
                self.auth_failures += 1
                self.skew_refusals += 1
                return self._unauthorized()
            self.kerberos_logons += 1
        connection.user = acceptor.user
        return out

    def _basic(self, scheme: str, token: str) -> str | None:
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
        if self.faults is not None and self.faults.auth_refused:
            return None
        return user

    def _unauthorized(self) -> HttpResponse:
        offers = [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "Kerberos")] if self.ntlm_store is not None else []
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
    chunks: list[bytes] = []
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


def _render(response: HttpResponse, now: dt.datetime) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}", "Server: Microsoft-HTTPAPI/2.0",
             f"Date: {email.utils.format_datetime(now.astimezone(dt.timezone.utc), usegmt=True)}"]
    if response.body and not any(name.lower() == "content-type" for name, _ in response.headers):
        lines.append(f"Content-Type: {SOAP_CONTENT_TYPE}")
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    lines.append(f"Content-Length: {len(response.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
