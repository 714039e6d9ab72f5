"""What a command running on an emulated host produces, independent of the shell that carries it.

A :class:`Run` collects PowerShell-style records (output, error, warning, verbose, debug,
information, progress, host calls) or raw console bytes, and ends with an exit code or a
terminating error.  WinRS renders the records as console text; PSRP sends them as PSRP
messages.  Readers wait on it with a timeout, which is how long polls end.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorInfo:
    message: str
    category: str = "NotSpecified"  # a System.Management.Automation.ErrorCategory name
    fqid: str = "Microsoft.PowerShell.Commands.WriteErrorException"
    exception_type: str = "Microsoft.PowerShell.Commands.WriteErrorException"
    command: str = "Write-Error"
    target: str = ""


@dataclass(frozen=True)
class PSObject:
    """An object with properties, as a cmdlet writes it (rendered as a table in a console)."""

    type_names: tuple[str, ...]
    properties: dict[str, Any]
    to_string: str


@dataclass(frozen=True)
class Record:
    kind: str  # output | error | warning | verbose | debug | information | progress | host | stdout | stderr
    value: Any


@dataclass
class Run:
    records: list[Record] = field(default_factory=list)
    exit_code: int | None = None
    failure: ErrorInfo | None = None  # a terminating error
    stopped: bool = False
    # The encoding of its console text when the program chose one ([Console]::OutputEncoding), else None:
    # the shell's code page.
    console_encoding: str | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _read: int = 0

    def emit(self, kind: str, value: Any) -> None:
        self.records.append(Record(kind, value))
        self._changed.set()

    def finish(self, exit_code: int, failure: ErrorInfo | None = None) -> None:
        if self.exit_code is None:
            self.exit_code = exit_code
            self.failure = failure
        self._changed.set()

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    async def wait(self, timeout: float) -> None:
        """Return when there is something unread or the run is done, or after `timeout` seconds."""
        if self._read < len(self.records) or self.done:
            return
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def take(self, limit: int | None = None) -> list[Record]:
        end = len(self.records) if limit is None else min(len(self.records), self._read + limit)
        taken = self.records[self._read : end]
        self._read = end
        return taken

    def push_back(self, record: Record) -> None:
        """Return the unsent part of a record taken but too large for one answer."""
        self._read -= 1
        self.records[self._read] = record

    @property
    def drained(self) -> bool:
        return self.done and self._read >= len(self.records)


class Stop(Exception):
    """Raised inside an interpreter to end a run (exit N or a terminating error)."""

    def __init__(self, exit_code: int, failure: ErrorInfo | None = None) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code
        self.failure = failure
