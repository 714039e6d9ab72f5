"""What the PSRP and WinRS transports share: settings, the deadline budget, the output cap,
the refusal of unsafe configurations and the mapping of HTTP-level failures to TransportError.

Deadline budget (why no step outlives its timeout by more than one read timeout):
- a step's deadline is fixed when it starts (``Deadline(timeout)``);
- every long poll (Receive) asks the host to answer within
  ``min(operation_timeout, time left)`` seconds, so the host ends the poll itself before
  the deadline (with output, or with the OperationTimeout fault, which is polled again quietly);
- every HTTP read is bounded by ``read_timeout`` (> operation_timeout), every connect by
  ``connect_timeout``; the clients' own retries of a Receive are switched off;
- when the deadline has passed the step is stopped (best effort, bounded by the same
  timeouts) and TransportError(kind="timeout") is raised.
So the worst case is the step's timeout plus one read timeout plus one stop request (plus,
when the pool/shell must be opened first, ``open_retries`` bounded attempts with backoff).
"""

from __future__ import annotations

import json
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
import tenacity
import urllib3.exceptions

from ..inventory import HostConfig
from ..contract import StepResult, StreamRecord
from .base import OUTPUT_CAP_BYTES, StreamCallback, TransportError, now

T = TypeVar("T")

# WSManFault codes with a meaning of their own.
OPERATION_TIMEOUT_FAULT = 2150858793  # a long poll ended with nothing to say: poll again
SHELL_NOT_FOUND_FAULT = 2150858843  # the shell/pool is gone (reboot, idle timeout): lost
# MaxConcurrentOperationsPerUser: Windows frees a WinRS shell's operations only when the shell is
# deleted (not on Terminate), so a shell reused for many commands meets it; the host refuses the
# Command before anything runs, and a fresh shell/pool takes the command, once.
OPERATION_QUOTA_FAULT = 2150859174
MAX_ERRORS = 1000  # error texts kept in StepResult.errors; the transcript has them all (up to the cap)


@dataclass(frozen=True)
class TransportSettings:
    """Timeouts and retry policy for one transport (seconds).

    ``operation_timeout`` is the long-poll length: the host answers a Receive within it, with
    output or the OperationTimeout fault.  ``read_timeout`` must exceed it (an HTTP read waits
    for the long poll); ``connect_timeout`` bounds the TCP/TLS connect.  ``open_retries`` and
    ``backoff`` govern reopening the pool/shell only: a step is never re-sent here.
    """

    connect_timeout: float = 10.0
    operation_timeout: int = 20
    read_timeout: int = 30
    open_retries: int = 3
    backoff: float = 1.0  # first wait between open attempts; doubles, with jitter, up to 8x
    output_cap: int = OUTPUT_CAP_BYTES

    def __post_init__(self) -> None:
        if self.operation_timeout < 1:
            raise ValueError("TransportSettings.operation_timeout must be at least 1 second")
        if self.read_timeout <= self.operation_timeout:
            raise ValueError("TransportSettings.read_timeout must exceed operation_timeout (a read waits for the long poll)")
        if self.connect_timeout <= 0 or self.open_retries < 0 or self.backoff < 0 or self.output_cap < 0:
            raise ValueError("TransportSettings: connect_timeout must be > 0; open_retries, backoff and output_cap >= 0")

    @classmethod
    def fast(cls, **overrides: Any) -> "TransportSettings":
        """Short timeouts for tests against the lab on loopback."""
        values: dict[str, Any] = {"connect_timeout": 2.0, "operation_timeout": 1, "read_timeout": 4,
                                  "open_retries": 1, "backoff": 0.01}
        values.update(overrides)
        return cls(**values)


class Deadline:
    """The step's time budget, fixed when the step starts."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._end = time.monotonic() + timeout

    @property
    def remaining(self) -> float:
        return self._end - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.remaining <= 0

    def poll_seconds(self, operation_timeout: int) -> int:
        """How long the next long poll may last: whole seconds, at least 1, never past the deadline by more than 1 s."""
        return max(1, min(operation_timeout, math.ceil(self.remaining)))


def check_config(host: HostConfig) -> None:
    """Refuse, before any request, what would send a password in the clear or cannot work."""
    if host.scheme not in ("http", "https"):
        raise TransportError("config", f"{host.name}: scheme must be http or https, got {host.scheme!r}")
    if host.auth == "basic" and host.scheme == "http" and not host.allow_unencrypted_basic:
        raise TransportError(
            "config",
            f"{host.name}: Basic authentication over plain HTTP would send the password readable; "
            "use scheme = \"https\", or set allow_unencrypted_basic = true for this host to accept that",
        )
    if host.auth == "certificate":
        if host.scheme != "https" or not host.cert_pem or not host.cert_key_pem:
            raise TransportError("config", f"{host.name}: certificate auth needs scheme = \"https\", cert_pem and cert_key_pem")
    elif not host.username or not host.password:
        raise TransportError("config", f"{host.name}: auth {host.auth} needs username and password (or password_env)")
    if host.auth == "basic" and host.password is not None:
        try:
            host.username.encode("latin-1")  # type: ignore[union-attr]
            host.password.reveal().encode("latin-1")
        except UnicodeEncodeError:
            raise TransportError("config", f"{host.name}: Basic authentication carries only Latin-1 user names and "
                                           "passwords; use auth = \"ntlm\" or \"negotiate\" for this account") from None


# The result fields every script's Complete-WuStep writes, with their JSON types.
RESULT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "step": str, "status": str, "exit_code": int, "reboot_required": bool,
    "changes": list, "facts": dict, "messages": list,
}


def contract_problem(result: dict[str, Any]) -> str | None:
    """Why a result object breaks the script contract (a field missing or of the wrong type), or None."""
    for name, kind in RESULT_FIELDS.items():
        if name not in result:
            return f"its result has no {name!r}"
        value = result[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"its result's {name!r} is a {type(value).__name__}, not a {getattr(kind, '__name__', kind)}"
    return None


class HostConnection:
    """What both transports start from: the host's checked settings, its name, the timeouts.

    The settings are refused here, before any request, when they would send a password in
    the clear or cannot work (check_config); the repr never shows a credential.
    """

    def __init__(self, host: HostConfig, settings: TransportSettings | None = None) -> None:
        check_config(host)
        self.config = host
        self.host = host.name
        self.settings = settings or TransportSettings()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self.host!r}, address={self.config.address!r}, port={self.config.effective_port})"


class Unreadable(Exception):
    """An answer that is well-formed HTTP but not what WS-Management sends (missing state, bad base64...)."""


def auth_failed(host: HostConfig) -> TransportError:
    return TransportError("auth", f"{host.name}: authentication failed for user {host.username} "
                                  "(wrong password or expired account)")


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


def network_error(host: HostConfig, exc: BaseException, what: str) -> TransportError | None:
    """A requests/socket failure as a TransportError, or None when ``exc`` is not one."""
    where = f"{host.name} ({host.address}:{host.effective_port})"
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


def open_with_retries(settings: TransportSettings, attempt: Callable[[], T]) -> T:
    """Open a pool/shell, retrying transient failures with bounded exponential backoff and jitter."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(settings.open_retries + 1),
        wait=tenacity.wait_exponential_jitter(multiplier=settings.backoff, max=settings.backoff * 8,
                                              jitter=settings.backoff),
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, TransportError) and e.transient),
        reraise=True,
    )
    return retrying(attempt)


@dataclass
class Collector:
    """Streams of one step kept as the controller-side transcript, up to a byte cap."""

    host: str
    step: str
    cap: int
    on_stream: StreamCallback | None = None
    started: float = field(default_factory=now)
    streams: list[StreamRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stored: int = 0
    dropped: int = 0

    def add(self, stream: str, text: str) -> None:
        """Keep one record (while under the cap) and tell the live view.

        Past the cap, progress still reaches the live view (DISM's percent after a chatty
        start), but nothing more is kept."""
        data = text.encode("utf-8", errors="replace")
        room = self.cap - self.stored
        if len(data) > room:
            self.dropped += len(data) - max(room, 0)
            if room <= 0:
                if stream == "progress" and self.on_stream is not None:
                    self.on_stream(StreamRecord(now(), stream, text))
                return
            text = data[:room].decode("utf-8", errors="ignore")  # the head that fits, cut on a character
            data = text.encode("utf-8")
        self.stored += len(data)
        record = StreamRecord(now(), stream, text)
        self.streams.append(record)
        if self.on_stream is not None:
            self.on_stream(record)

    def error(self, text: str, stream: str = "error") -> None:
        """An error the host reported: kept in ``errors`` (for the report) and in the transcript."""
        if len(self.errors) < MAX_ERRORS:  # the transcript holds the rest
            self.errors.append(text)
        self.add(stream, text)

    def result(self, exit_code: int, result: dict[str, Any] | None) -> StepResult:
        return StepResult(
            host=self.host,
            step=self.step,
            exit_code=exit_code,
            result=result,
            streams=self.streams,
            errors=self.errors,
            started=self.started,
            duration=now() - self.started,
            truncated_bytes=self.dropped,
        )


def one_line(text: Any) -> str:
    """A server's wording squeezed onto one short line for a message."""
    return " ".join(str(text or "").split())[:300]


def to_json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
