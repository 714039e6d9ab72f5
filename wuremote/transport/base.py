"""The one small protocol both transports speak, and the records they return.

A transport runs one wuremote step script on one host and gives back a ``StepResult``;
it never decides what the result means (that is the runner's and the plan's job).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

from ..contract.result import StepResult, StreamRecord
from ..contract.scripts import StepScript

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


# WSManFault codes with a meaning of their own.
OPERATION_TIMEOUT_FAULT = 2150858793  # a long poll ended with nothing to say: poll again
SHELL_NOT_FOUND_FAULT = 2150858843  # the shell/pool is gone (reboot, idle timeout): lost
# MaxConcurrentOperationsPerUser: Windows frees a WinRS shell's operations only when the shell is
# deleted (not on Terminate), so a shell reused for many commands meets it; the host refuses the
# Command before anything runs, and a fresh shell/pool takes the command, once.
OPERATION_QUOTA_FAULT = 2150859174

# E_ACCESSDENIED on opening a shell/pool: the account is not an administrator on the host.
ACCESS_DENIED_FAULTS = frozenset({5, 2147942405})
# The PowerShell endpoint's MaxShellsPerUser (ERROR_WSMAN_QUOTA_MAX_SHELLS_PPQ), not WinRS' 2150859173.
PSRP_SHELL_QUOTA_FAULT = 2150859236
# MaxConcurrentCommandsPerShell of the PowerShell endpoint (ERROR_WSMAN_QUOTA_MAX_COMMANDS_PER_SHELL_PPQ,
# pypsrp#148): like the operations quota, refused before anything ran, so a fresh pool takes it.
COMMANDS_PER_SHELL_FAULT = 2150859241
QUOTA_FAULTS = frozenset({OPERATION_QUOTA_FAULT, COMMANDS_PER_SHELL_FAULT})

# WSManFault codes worth a retry: operation timeout, shell/command not found (lost), quota.
TRANSIENT_FAULTS = frozenset({OPERATION_TIMEOUT_FAULT, SHELL_NOT_FOUND_FAULT, 2150859173, PSRP_SHELL_QUOTA_FAULT})


# Called for every stream record as it arrives (the live view's progress bar, the transcript).
StreamCallback = Callable[[StreamRecord], None]


# Told each pool/shell id as soon as the host has answered its Create: the journal records it
# before anything runs in it, so a controller killed at any moment leaves nothing resume cannot delete.
SessionCallback = Callable[[str], None]


class Transport(Protocol):
    """One connection to one host, reused across steps."""

    host: str
    on_opened: SessionCallback | None
    # The id of a pool about to be created, told before its Create goes out (where the client chooses
    # it: PSRP), and told again through on_not_opened when the Create failed before the host had it.
    on_opening: SessionCallback | None
    on_not_opened: SessionCallback | None
    # Input for a script that takes it ($InputObject, ValueFromPipeline): the most one run_step
    # carries, which is what the transport can take in one operation.
    input_run_bytes: int
    # The session keeps the prelude's text once a step has run (PSRP: the pool's runspace), so
    # detached-start can compose a scheduled task's payload from a step's body alone.
    prelude_in_session: ClassVar[bool]

    @property
    def input_item_bytes(self) -> int:
        """Bytes of one input item: what one request carries best on the open pool/shell."""
        ...

    def run_step(self, script: StepScript, params: dict[str, Any], *, timeout: float,
                 on_stream: StreamCallback | None = None, input: Iterable[str] | None = None) -> StepResult:
        """Run a step script with its parameters bound as values; raise TransportError when it cannot.

        ``input`` (text items) reaches the script's ValueFromPipeline parameter $InputObject: as pipeline
        input where the transport has a pipeline (PSRP), else bound by name (WinRS, on the command's stdin).
        It is iterated once per attempt (an operation refused for a quota is sent again on a fresh
        pool/shell), so it must start afresh each time: a list, or an object whose __iter__ does."""
        ...

    def run_command(self, command: str, *, timeout: float) -> tuple[int, str]:
        """A plain command (readiness probe after a reboot): exit code and stdout text."""
        ...

    def probe(self) -> AbstractContextManager[None]:
        """Within this block the pool/shell is opened with one attempt and no backoff.

        For a caller that paces its own tries (waiting for a host to come back from a reboot):
        a host that is back is seen at its next try, not after the transport's retry sleeps."""
        ...

    def waiting(self) -> AbstractContextManager[None]:
        """Within this block a step's long polls are a wait on the host (detached-poll's wait) and hold
        no request slot while the host waits: a thousand hosts in DISM hold sockets, not the slots
        the hosts with work to send need (TransportSettings.max_requests)."""
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
