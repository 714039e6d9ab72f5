"""The session both transports run: one pool/shell per host, opened on demand, reused, dropped
when it breaks.  Everything here is written once for PSRP and WinRS:

- opening the pool/shell, transient failures retried (OPEN_RETRY; one attempt in probe mode);
- running one operation (a PSRP pipeline, a WinRS command) to its deadline: begin it, long-poll
  it, stop it when the deadline passes, close it; a host that refuses it for its operations
  quota gets it again, once, on a fresh pool/shell (QUOTA_RETRY);
- translating what the client libraries raise (WS-Man faults, HTTP errors, requests/socket
  failures, unreadable answers) into TransportError, from each library's ``Faults``;
- reset, close, dropping a broken pool/shell without a request, and close_orphan (deleting
  a pool/shell a stopped run left on the host);
- run_step (the result object checked against the script contract) and run_command.

As in pypsrp, where shell.py and powershell.py sit on one WSMan, a transport module says only
what differs: its client (pypsrp's WSMan, pywinrm's Protocol) and how to open and delete a
pool/shell on it, its library's exceptions, and how a step or a command becomes an Operation.
The settings are refused before any request when Connection.problem() says so.
"""

from __future__ import annotations

import datetime
import email.utils
import os
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import certifi
import requests
import requests.adapters
import tenacity
import urllib3.exceptions

from ..contract import StepResult
from ..contract.scripts import StepScript
from .base import (
    ACCESS_DENIED_FAULTS,
    OPERATION_TIMEOUT_FAULT,
    QUOTA_FAULTS,
    SHELL_NOT_FOUND_FAULT,
    SessionCallback,
    StreamCallback,
    TransportError,
)
from .common import Collector, Deadline, TransportSettings, one_line, request_slots
from .connection import Connection

C = TypeVar("C")  # a client of the WinRM service: pypsrp's WSMan, pywinrm's Protocol
H = TypeVar("H")  # a pool/shell open on one

MAX_ABANDONED = 25  # the PowerShell endpoint's MaxShellsPerUser: more could not be open at once anyway

# Errors after which the pool/shell is dropped without another request: it is gone or not trusted.
FORGET_KINDS = ("lost", "unreachable", "protocol")
NOT_CREATED_KINDS = ("unreachable", "auth", "tls", "config")  # a Create failing so never made a pool/shell


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TransportError) and exc.transient


# Opening a pool/shell: transient failures are tried again, anything else and the last failure
# are raised as themselves; how often and how long between comes from the settings (open_policy).
OPEN_RETRY = tenacity.Retrying(retry=tenacity.retry_if_exception(_transient), reraise=True)
# Probe mode: one attempt, no sleep; the caller's own wait paces the tries.
PROBE_OPEN = OPEN_RETRY.copy(stop=tenacity.stop_after_attempt(1))
# An operation the host refused for its operations quota ran nowhere: a fresh pool/shell takes it,
# once and at once (what counts as that fault is the transport's, see Session._begin).
QUOTA_RETRY = tenacity.Retrying(stop=tenacity.stop_after_attempt(2), reraise=True)
# A sealed request answered 400 before the service read it (an idle connection closed by HTTP.sys,
# the body sent on a new socket without a logon): log on afresh and send it again, once, at once.
# Which exceptions count is the transport's (its client library's 400 on a sealed request).
REAUTH_RETRY = tenacity.Retrying(stop=tenacity.stop_after_attempt(2), reraise=True)


def open_policy(settings: TransportSettings) -> tenacity.Retrying:
    """OPEN_RETRY with the settings' attempts and exponential backoff with jitter (up to 8x ``backoff``)."""
    return OPEN_RETRY.copy(
        stop=tenacity.stop_after_attempt(settings.open_retries + 1),
        wait=tenacity.wait_exponential_jitter(multiplier=settings.backoff, max=settings.backoff * 8,
                                              jitter=settings.backoff),
    )


class Unreadable(Exception):
    """An answer that is well-formed HTTP but not what WS-Management sends (missing state, bad base64...)."""


@dataclass(frozen=True)
class Faults:
    """How one client library says what went wrong, read by the one translation into TransportError."""

    auth: type[BaseException]  # the credentials were refused
    fault: type[BaseException]  # a WS-Man SOAP fault; its code is in the first set attribute named in fault_code
    fault_code: tuple[str, ...]
    http: type[BaseException]  # an HTTP status the library did not expect; ``.code`` holds it
    poll_timeout: tuple[type[BaseException], ...] = ()  # the OperationTimeout fault, raised as its own type
    broken: tuple[type[BaseException], ...] = ()  # the library's own state machine refusing: the pool is lost
    quoted: tuple[type[BaseException], ...] = ()  # unreadable answers whose text says what was wrong
    unreadable: tuple[type[BaseException], ...] = ()  # unreadable answers, named by their type only

    def code(self, exc: BaseException) -> int | None:
        """The WSManFault code of a fault (or the MSFT_WmiError code Windows sends instead for some), or None."""
        for name in self.fault_code:
            try:
                return int(getattr(exc, name))
            except (AttributeError, TypeError, ValueError):
                continue
        return None


class Operation(Protocol):
    """One PSRP pipeline or WinRS command on an open pool/shell, built without a request."""

    @property
    def done(self) -> bool:
        """The host says it has ended."""
        ...

    def begin(self) -> None:
        """Send it to the host (the request the operations quota can refuse)."""
        ...

    def poll(self, seconds: int) -> None:
        """One long poll of at most ``seconds``; what arrived goes to the collector."""
        ...

    def finish(self) -> int:
        """After the last poll: what is left goes to the collector; the exit code.  Sends nothing (so it
        holds no request slot)."""
        ...

    def stop(self) -> None:
        """The deadline passed: ask the host to stop it (closing it follows)."""
        ...

    def close(self) -> None:
        """Free it on the host."""
        ...

    def result(self) -> tuple[dict[str, Any] | None, str | None]:
        """A step's result object, or None and why that breaks the script contract."""
        ...


# Builds the operation for a step or a command on a given pool/shell.
Start = Callable[[H], Operation]


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps in args/reason, and its causes: requests nests urllib3's errors."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 20:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [a for a in current.args if isinstance(a, BaseException)]
        for attr in ("reason", "__cause__", "__context__"):
            value = getattr(current, attr, None)
            if isinstance(value, BaseException):
                todo.append(value)
    return seen


def network_error(connection: Connection, exc: BaseException, what: str) -> TransportError | None:
    """A requests/socket failure as a TransportError, or None when ``exc`` is not one."""
    where = f"{connection.name} ({connection.address}:{connection.effective_port})"
    causes = _causes(exc)
    if any(isinstance(c, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(c) for c in causes):
        return TransportError("tls", f"{where}: the server's TLS certificate is not trusted while {what}; "
                                     "set ca_file to the CA that signed it, or cert_validation = false to skip the check")
    if isinstance(exc, requests.exceptions.ConnectTimeout) or any(
        isinstance(c, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)) for c in causes
    ):
        return TransportError("unreachable", f"{where}: cannot connect while {what} (refused, no route or unknown name)")
    # Any other TLS failure (EOF in the handshake, a reset) is a connection dropping: a host going down.
    if isinstance(exc, (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError, ConnectionError,
                        ssl.SSLError)) or any(isinstance(c, ssl.SSLError) for c in causes):
        return TransportError("lost", f"{where}: connection lost while {what} ({type(exc).__name__})")
    return None


@lru_cache(maxsize=64)
def tls_context(ca_file: str | None, cert_pem: str | None = None, cert_key_pem: str | None = None) -> ssl.SSLContext:
    """One verifying SSLContext per CA file (requests' own bundle when None), loaded once for every
    host that names it.  A client certificate gets a context of its own: urllib3 loads the chain
    into the context it is given, which must not then present it to other hosts."""
    where = ca_file or certifi.where()  # requests' own bundle, as verify=True uses
    if os.path.isdir(where):
        return ssl.create_default_context(capath=where)
    return ssl.create_default_context(cafile=where)


class PreloadedTLS(requests.adapters.HTTPAdapter):
    """An HTTPS adapter that verifies with a preloaded SSLContext.

    requests checks that the CA path exists on every request (``cert_verify``) and urllib3 loads
    the file into a new context for every new connection; a fleet pays that per request per host.
    Here the context is loaded once (``tls_context``) and the pool only says CERT_REQUIRED."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self.context = context
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(self, request: requests.PreparedRequest, verify: Any,
                                             cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, False, cert)
        if verify is not False:
            pool_kwargs.update(cert_reqs="CERT_REQUIRED", ssl_context=self.context)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, False, cert)  # the client certificate, no CA path to look up
        if verify is not False and url.lower().startswith("https"):
            conn.cert_reqs = "CERT_REQUIRED"


def tune_session(session: requests.Session, connection: Connection) -> None:
    """Per-request costs a client library's requests.Session would pay, taken off once it is built.

    - ``trust_env`` off unless the inventory sets a proxy: requests otherwise reads the proxy
      environment on every request (the README promises environment proxies are ignored, and
      pypsrp would also take REQUESTS_CA_BUNDLE for a host without ca_file; pywinrm is told never to);
    - certificates verified with one SSLContext per CA file (PreloadedTLS)."""
    if connection.proxy is None:
        session.trust_env = False
    if connection.scheme != "https" or not connection.cert_validation:
        return
    try:
        context = tls_context(connection.ca_file, connection.cert_pem, connection.cert_key_pem)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError("config", f"{connection.name}: cannot load ca_file {connection.ca_file!r}: "
                                       f"{one_line(exc)}") from None
    session.verify = True
    previous = session.adapters.get("https://")
    session.mount("https://", PreloadedTLS(context, max_retries=getattr(previous, "max_retries", 0)))


KERBEROS_AUTHS = ("kerberos", "negotiate")
KERBEROS_MAX_SKEW = 300.0  # seconds: Kerberos' default clockskew (KRB_AP_ERR_SKEW beyond it)


def host_clock_skew(connection: Connection, settings: TransportSettings) -> float | None:
    """The host's clock minus ours, read from the Date header of one unauthenticated request (every
    Windows answer, a 401 included, carries HTTP.sys' Date), or None when it cannot be read."""
    address = f"[{connection.address}]" if ":" in connection.address else connection.address
    url = f"{connection.scheme}://{address}:{connection.effective_port}/wsman"
    verify: bool | str = False
    if connection.scheme == "https" and connection.cert_validation:
        verify = connection.ca_file or True
    with requests.Session() as session:
        session.trust_env = False  # environment proxies ignored, as the transports do
        proxies = {"http": connection.proxy, "https": connection.proxy} if connection.proxy else {}
        try:
            answer = session.post(url, data=b"", verify=verify, proxies=proxies,
                                  timeout=(settings.connect_timeout, settings.read_timeout))
            stamp = email.utils.parsedate_to_datetime(answer.headers.get("Date", ""))
        except (requests.RequestException, TypeError, ValueError):
            return None
    if stamp.tzinfo is None:
        return None
    return (stamp - datetime.datetime.now(datetime.timezone.utc)).total_seconds()


class Session(Generic[C, H]):
    """One host's pool/shell and the shared run loop; the transports fill in the hooks below.

    Used by one thread at a time (many sessions run side by side); the repr never shows a credential.
    """

    faults: ClassVar[Faults]
    noun: ClassVar[str]  # what is opened on the host: "runspace pool", "shell"
    label: ClassVar[str]  # for messages: "PSRP", "WinRS"
    output_stream: ClassVar[str]  # the stream a command's answer is read from
    # Operations run on one pool/shell before it is replaced by a fresh one, below the host's
    # per-shell limit (each transport says which limit and why); settings.commands_per_session overrides.
    commands_per_session: ClassVar[int]
    prelude_in_session: ClassVar[bool] = False  # see base.Transport

    def __init__(self, connection: Connection, settings: TransportSettings | None = None) -> None:
        problem = connection.problem()
        if problem is not None:
            raise TransportError("config", f"{connection.name}: {problem}")
        self.connection = connection
        self.host = connection.name
        self.settings = settings or TransportSettings()
        self._handle: H | None = None
        self._probing = False
        self._waiting = False  # within waiting(): the next step's long polls are a host-side wait
        self.slots = request_slots(self.settings.max_requests)  # shared by every transport of this controller
        self._used = 0  # operations begun on the open pool/shell
        # Pools/shells dropped without a Delete (the connection was lost, an answer came too late):
        # deleted as soon as the host answers again, so they do not hold its per-user quota for hours.
        self._abandoned: list[str] = []
        self.on_opened: SessionCallback | None = None
        self.on_opening: SessionCallback | None = None
        self.on_not_opened: SessionCallback | None = None
        self._opening_id: str | None = None  # told to on_opening; its Create has not been answered yet

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(host={self.host!r}, address={self.connection.address!r}, "
                f"port={self.connection.effective_port})")

    # --- hooks: what each transport says for itself -------------------------------------------
    def _client(self) -> C:
        """A new client for this host; sends nothing."""
        raise NotImplementedError

    def _release(self, client: C) -> None:
        """Close the client's HTTP session here; sends nothing."""
        raise NotImplementedError

    def _open_on(self, client: C) -> H:
        """Open a pool/shell on the host."""
        raise NotImplementedError

    def _client_of(self, handle: H) -> C:
        raise NotImplementedError

    def _id_of(self, handle: H) -> str | None:
        raise NotImplementedError

    def _delete(self, handle: H) -> None:
        """Delete the open pool/shell on the host."""
        raise NotImplementedError

    def _delete_by_id(self, client: C, session_id: str) -> None:
        """Delete a pool/shell this client did not open, by its id."""
        raise NotImplementedError

    def _step(self, handle: H, script: StepScript, params: dict[str, Any], collector: Collector,
              input: Iterable[str] | None) -> Operation:
        raise NotImplementedError

    def _command(self, handle: H, command: str, collector: Collector) -> Operation:
        raise NotImplementedError

    # --- the protocol -----------------------------------------------------------------------
    def run_step(self, script: StepScript, params: dict[str, Any], *, timeout: float,
                 on_stream: StreamCallback | None = None, input: Iterable[str] | None = None) -> StepResult:
        deadline = Deadline(timeout)
        step = script.meta.name
        collector = Collector(self.host, step, self.settings.output_cap, on_stream)
        exit_code, operation = self._run(lambda handle: self._step(handle, script, params, collector, input), deadline,
                                         f"running step {step}")
        result, problem = operation.result()
        if problem is not None:
            collector.errors.append(f"{self.host}: step {step} broke the script contract: {problem}")
        return collector.result(exit_code, result)

    def run_command(self, command: str, *, timeout: float) -> tuple[int, str]:
        deadline = Deadline(timeout)
        collector = Collector(self.host, "command", self.settings.output_cap)
        exit_code, _ = self._run(lambda handle: self._command(handle, command, collector), deadline,
                                 "running a command")
        return exit_code, collector.text(self.output_stream)

    @contextmanager
    def probe(self) -> Iterator[None]:
        outer, self._probing = self._probing, True
        try:
            yield
        finally:
            self._probing = outer

    @contextmanager
    def waiting(self) -> Iterator[None]:
        outer, self._waiting = self._waiting, True
        try:
            yield
        finally:
            self._waiting = outer

    def _request(self, call: Callable[[], Any]) -> Any:
        """One request (or a few in a row) to the host, holding one of the controller's request slots."""
        with self.slots.held():
            return call()

    @property
    def session_id(self) -> str | None:
        return self._id_of(self._handle) if self._handle is not None else None

    def close_orphan(self, session_id: str) -> bool:
        client = self._client()
        try:
            self._request(lambda: self._delete_by_id(client, session_id))
        except Exception as exc:  # noqa: BLE001 - the host answers "not found" for one already gone
            error = self._translate(exc, f"deleting a {self.noun} left by a stopped run")
            if error.code is not None:
                return False
            raise error from None
        finally:
            self._release(client)
        return True

    def reset(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            self._request(lambda: self._delete(handle))  # bounded by connect/read timeouts; refused at once if down
        except Exception:  # noqa: BLE001, S110 - deleting is a courtesy to the host's quota; a dead one is forgotten
            pass
        finally:
            self._release(self._client_of(handle))

    def close(self) -> None:
        self.reset()

    # --- the pool/shell ---------------------------------------------------------------------
    def _ensure(self) -> H:
        budget = self.settings.commands_per_session or self.commands_per_session
        if self._handle is not None and self._used >= budget:
            self.reset()  # recycled before the host's per-shell limit refuses an operation
        if self._handle is None:
            policy = PROBE_OPEN if self._probing else open_policy(self.settings)
            self._handle = policy(self._open)
            self._used = 0
            self._delete_abandoned(self._client_of(self._handle))
            session = self._id_of(self._handle)
            if session and self.on_opened is not None:
                self.on_opened(session)
        return self._handle

    def _delete_abandoned(self, client: C) -> None:
        """The host answers again: delete what was dropped without a Delete (gone already is fine)."""
        while self._abandoned:
            session_id = self._abandoned.pop()
            try:
                self._request(lambda: self._delete_by_id(client, session_id))  # noqa: B023 - called at once
            except Exception:  # noqa: BLE001, S110 - "not found" (a reboot took it) or a failure: nothing more to do
                pass

    def _opening(self, session_id: str) -> None:
        """Called by _open_on with the id the client chose, before the Create goes out: a controller
        killed while the host creates the pool has already journalled what resume must delete."""
        self._opening_id = session_id
        if self.on_opening is not None:
            self.on_opening(session_id)

    def _open(self) -> H:
        client = self._client()
        self._opening_id = None
        try:
            with self.slots.held():
                return self._open_on(client)
        except Exception as exc:  # noqa: BLE001 - every failure is translated (or re-raised by _translate)
            self._release(client)
            error = self._translate(exc, f"opening a {self.noun}")
            announced, self._opening_id = self._opening_id, None
            # Refused, unknown name, rejected credentials or certificate: no pool was made.  A Create
            # that timed out or lost its answer may have made one: it stays journalled for resume.
            if announced is not None and error.kind in NOT_CREATED_KINDS and self.on_not_opened is not None:
                self.on_not_opened(announced)
            raise error from None

    def _forget(self) -> None:
        """Drop the pool/shell without talking to the host (it is gone or unreachable)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            session_id = self._id_of(handle)
            if session_id is not None and len(self._abandoned) < MAX_ABANDONED:
                self._abandoned.append(session_id)
            self._release(self._client_of(handle))

    def _quietly(self, call: Callable[[], None]) -> None:
        """A request whose failure means a pool/shell in trouble: start afresh next time."""
        try:
            call()
        except Exception:  # noqa: BLE001 - any failure: the pool/shell is not to be trusted
            self._forget()

    # --- one operation ----------------------------------------------------------------------
    def _run(self, start: Start[H], deadline: Deadline, what: str) -> tuple[int, Operation]:
        handle: H | None = None
        operation: Operation | None = None
        try:
            retrying = QUOTA_RETRY.copy(
                stop=tenacity.stop_after_attempt(2 if self._handle is not None else 1),  # a fresh one is not retried
                retry=tenacity.retry_if_exception(self._is_quota),
                before_sleep=lambda _: self.reset(),
            )
            for attempt in retrying:
                with attempt:
                    handle = self._ensure()
                    operation = start(handle)
                    self._used += 1
                    self._request(operation.begin)
            assert operation is not None  # the loop ran at least once, or raised
            deadline.start()  # the host has the step now: its time starts here
            begun = operation
            # A host-side wait (waiting()) holds no slot while the host waits: it only holds a socket.
            poll = begun.poll if self._waiting else lambda seconds: self._request(lambda: begun.poll(seconds))
            while not operation.done:
                if deadline.confirmed:
                    self._quietly(lambda: self._request(begun.stop))
                    raise TransportError("timeout", f"{self.host}: {what} did not finish within "
                                                    f"{deadline.timeout:g} s; it was stopped")
                deadline.polling()
                poll(deadline.poll_seconds(self.settings.operation_timeout))
            return operation.finish(), operation  # local: drains what the polls brought, sends nothing
        except TransportError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is translated (or re-raised by _translate)
            error = self._translate(exc, what)
            if error.kind in FORGET_KINDS:
                self._forget()
            raise error from None
        finally:
            if operation is not None and handle is not None and self._handle is handle:
                closing = operation
                self._quietly(lambda: self._request(closing.close))

    def _is_quota(self, exc: BaseException) -> bool:
        return isinstance(exc, self.faults.fault) and self.faults.code(exc) in QUOTA_FAULTS

    def _translate(self, exc: BaseException, what: str) -> TransportError:
        """What a client library raised, as a TransportError; anything unknown is raised as itself."""
        faults = self.faults
        if isinstance(exc, TransportError):
            return exc
        if isinstance(exc, faults.auth):
            skew = host_clock_skew(self.connection, self.settings) if self.connection.auth in KERBEROS_AUTHS else None
            if skew is not None and abs(skew) > KERBEROS_MAX_SKEW:
                return TransportError("auth", f"{self.host}: Kerberos refused the logon: the host's clock is {abs(skew):.0f} s "
                                              f"{'ahead of' if skew > 0 else 'behind'} this controller's, more than Kerberos' "
                                              "5 minutes (KRB_AP_ERR_SKEW), so no step can sync it; use auth = \"ntlm\" "
                                              "(or Basic over HTTPS) for this host, or fix its clock out of band")
            return TransportError("auth", f"{self.host}: authentication failed for user {self.connection.username} "
                                          "(wrong password or expired account)")
        if isinstance(exc, faults.fault):
            code = faults.code(exc)
            if code in ACCESS_DENIED_FAULTS:
                return TransportError("auth", f"{self.host}: access denied to {self.connection.username} while {what}: the "
                                              "account is not an administrator there; use an account in the host's "
                                              "Administrators group", code=code)
            if code == SHELL_NOT_FOUND_FAULT:
                return TransportError("lost", f"{self.host}: the {self.noun} is gone (host restarted or "
                                              f"{self.noun.split()[-1]} timed out) while {what}", code=code)
            return TransportError("fault", f"{self.host}: WS-Management fault {code} while {what}: "
                                           f"{one_line(getattr(exc, 'reason', ''))}", code=code)
        if isinstance(exc, faults.poll_timeout):
            return TransportError("fault", f"{self.host}: the WinRM service timed out while {what}",
                                  code=OPERATION_TIMEOUT_FAULT)
        if isinstance(exc, faults.http):
            return TransportError("fault", f"{self.host}: HTTP {getattr(exc, 'code', '?')} from the WinRM service "
                                           f"while {what}")
        if isinstance(exc, faults.broken):
            return TransportError("lost", f"{self.host}: the {self.noun} broke while {what}")
        network = network_error(self.connection, exc, what)
        if network is not None:
            return network
        if isinstance(exc, faults.quoted):
            return TransportError("protocol", f"{self.host}: unreadable {self.label} answer while {what}: "
                                              f"{one_line(str(exc))}")
        if isinstance(exc, faults.unreadable):
            return TransportError("protocol", f"{self.host}: unreadable {self.label} answer while {what}: "
                                              f"{type(exc).__name__}")
        raise exc
