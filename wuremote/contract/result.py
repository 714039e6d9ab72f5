"""What one script run gives back (Fabric's Result, for a wuremote step).

Both transports build it; the engine, the journal and the report read it.  It belongs to the
contract because its meaning is the script contract's: the result JSON's keys and the exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .exitcode import ExitCode


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
    def ok(self) -> bool:
        """The step did what it was asked (exit 0, or 3010 with a restart to follow)."""
        return ExitCode.is_ok(self.exit_code)

    @property
    def status(self) -> str:
        if self.result is not None and isinstance(self.result.get("status"), str):
            return str(self.result["status"])
        return "ok" if self.ok else "failed"

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
        return self.exit_code == ExitCode.REBOOT_NEEDED or bool((self.result or {}).get("reboot_required"))
