"""The one small protocol both transports speak, and the records they return.

A transport runs one wuremote step script on one host and gives back a ``StepResult``;
it never decides what the result means (that is the runner's and the plan's job).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..scripts import StepScript

# Output kept per step on the controller; the rest is counted and dropped so a host that
# prints 100 MB cannot exhaust the controller.
OUTPUT_CAP_BYTES = 4 * 1024 * 1024


class TransportError(RuntimeError):
    """The step could not be run or its answer could not be read.

    ``kind`` says what went wrong so the runner can decide to retry, fail fast or wait:
    ``auth`` (wrong password, expired account: never retried), ``tls`` (certificate not
    trusted), ``unreachable`` (refused, DNS, no route), ``timeout`` (the step's own deadline),
    ``lost`` (connection reset, shell or pool gone, host rebooting), ``fault`` (a WS-Man
    SOAP fault; ``code`` holds its WSManFault code), ``protocol`` (an answer that breaks
    the script contract), ``config`` (settings refused before any request, such as Basic over
    plain HTTP without ``allow_unencrypted_basic``: never retried).  Messages never hold a password.
    """

    def __init__(self, kind: str, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code

    @property
    def transient(self) -> bool:
        return self.kind in ("unreachable", "lost") or (self.kind == "fault" and self.code in TRANSIENT_FAULTS)


# WSManFault codes worth a retry: operation timeout, shell/command not found (lost), quota.
TRANSIENT_FAULTS = frozenset({2150858793, 2150858843, 2150859173})


@dataclass(frozen=True)
class StreamRecord:
    """One thing the host said, stamped when the controller received it."""

    time: float  # time.time()
    stream: str  # output | error | warning | verbose | debug | information | progress | stdout | stderr
    text: str


@dataclass
class StepResult:
    """What one script run gave back (Fabric's Result, for a wuremote step)."""

    host: str
    step: str
    exit_code: int
    result: dict[str, Any] | None  # the script's structured result, or None if it broke the contract
    streams: list[StreamRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # error-stream records, rendered
    started: float = 0.0
    duration: float = 0.0
    truncated_bytes: int = 0  # output dropped past OUTPUT_CAP_BYTES

    @property
    def status(self) -> str:
        if self.result is not None and isinstance(self.result.get("status"), str):
            return str(self.result["status"])
        return "ok" if self.exit_code in (0, 3010) else "failed"

    @property
    def facts(self) -> dict[str, Any]:
        facts = (self.result or {}).get("facts")
        return facts if isinstance(facts, dict) else {}

    @property
    def messages(self) -> list[str]:
        messages = (self.result or {}).get("messages")
        return [str(m) for m in messages] if isinstance(messages, list) else []

    @property
    def changes(self) -> list[Any]:
        changes = (self.result or {}).get("changes")
        return list(changes) if isinstance(changes, list) else []

    @property
    def reboot_required(self) -> bool:
        return self.exit_code == 3010 or bool((self.result or {}).get("reboot_required"))


# Called for every stream record as it arrives (the live view's progress bar, the transcript).
StreamCallback = Callable[[StreamRecord], None]


class Transport(Protocol):
    """One connection to one host, reused across steps."""

    host: str

    def run_step(self, script: StepScript, params: dict[str, Any], *, timeout: float,
                 on_stream: StreamCallback | None = None) -> StepResult:
        """Run a step script with its parameters bound as values; raise TransportError when it cannot."""
        ...

    def run_command(self, command: str, *, timeout: float) -> tuple[int, str]:
        """A plain command (readiness probe after a reboot): exit code and stdout text."""
        ...

    @property
    def session_id(self) -> str | None:
        """The open pool's/shell's id on the host (recorded so a resumed run can delete it), or None."""
        ...

    def close_orphan(self, session_id: str) -> bool:
        """Delete a pool/shell a stopped controller left open; False when the host no longer has it."""
        ...

    def reset(self) -> None:
        """Drop the pool/shell (it is broken or the host rebooted); the next call opens a fresh one."""
        ...

    def close(self) -> None:
        """Release the pool/shell on the host; safe to call twice and after a failure."""
        ...


def now() -> float:
    return time.time()
