"""What a PSRP pipeline runs on the lab: wuremote's step scripts, pypsrp's helpers, the vocabulary.

A pipeline is a list of commands (scripts or cmdlets with parameters) grouped into
statements.  Recognised, in this order: a wuremote step payload (models), pypsrp's
`copy` and `fetch` scripts (applied to the host's files), `Client.execute_ps`'s
`Invoke-Expression -Command X | Out-String -Stream`, and otherwise each statement
rebuilt as text and run by the PowerShell vocabulary.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from . import models
from .console import format_value
from .engine import ErrorInfo, Run, Stop
from .host import Host
from .models.registry import InputSource
from .pwsh import Session, lab_failure, run_statement, split_statements

COPY_SIGNATURE = ("$bytes = [System.Convert]::FromBase64String($input)", "$MyInvocation.UnboundArguments[0]")
FETCH_SIGNATURE = ("Write-Output -InputObject ([System.Convert]::ToBase64String($bytes))",)


@dataclass
class PipelineCommand:
    text: str
    is_script: bool
    parameters: list[tuple[str | None, Any]]
    end_of_statement: bool


class PipelineSource(InputSource, Protocol):
    """A pipeline's input as it arrives, and the runspace it runs in."""

    preludes: set[str]  # the pool's runspace: prelude hashes defined in it (models.PreludeDefinition)


def _named(command: PipelineCommand) -> dict[str, Any]:
    return {name: value for name, value in command.parameters if name is not None}


def _positional(command: PipelineCommand) -> list[Any]:
    return [value for name, value in command.parameters if name is None]


def _quote(value: Any) -> str:
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _statements(commands: list[PipelineCommand]) -> list[list[PipelineCommand]]:
    statements: list[list[PipelineCommand]] = [[]]
    for command in commands:
        statements[-1].append(command)
        if command.end_of_statement:
            statements.append([])
    return [s for s in statements if s]


async def run_pipeline(host: Host, user: str, run: Run, commands: list[PipelineCommand], source: PipelineSource) -> None:
    try:
        for statement in _statements(commands):
            await _run_statement(host, user, run, statement, source)
    except Stop as stop:
        run.finish(1 if stop.failure is not None else stop.exit_code, stop.failure)
        return
    except Exception as exc:  # noqa: BLE001 - the lab's own limit: a failed pipeline, never one that never ends
        run.finish(1, lab_failure(exc))
        return
    run.finish(0)


async def _run_statement(host: Host, user: str, run: Run, statement: list[PipelineCommand], source: PipelineSource) -> None:
    first = statement[0]
    sinks = [c.text.lower() for c in statement[1:]]
    if first.is_script:
        known = models.recognize_psrp(first.text, _named(first), source.preludes)
        if known is not None:
            child = _Forwarding(run)
            await known.run(host, user, child, source)
            if child.failure is not None:
                raise Stop(1, child.failure)
            if child.exit_code:
                raise Stop(child.exit_code)
            return
        if all(sig in first.text for sig in COPY_SIGNATURE):
            await _copy(host, run, _positional(first), source)
            return
        if all(sig in first.text for sig in FETCH_SIGNATURE):
            _fetch(host, run, _positional(first))
            return
        await _run_text(host, user, run, first.text, sinks)
        return
    name = first.text.lower()
    if name == "invoke-expression":
        await _run_text(host, user, run, str(_named(first).get("Command", "")), sinks)
        return
    if name == "new-item" and str(_named(first).get("Path", "")).lower() == "env:":
        return  # pypsrp's environment preamble; the lab keeps no per-pipeline environment
    parts = [first.text]
    for param, value in first.parameters:
        if param is None:
            parts.append(_quote(value))
        elif value is True:
            parts.append(f"-{param}")
        else:
            parts.extend([f"-{param}", _quote(value)])
    await _run_text(host, user, run, " ".join(parts), sinks)


async def _run_text(host: Host, user: str, run: Run, text: str, sinks: list[str]) -> None:
    """Run text through the vocabulary, applying `| Out-String -Stream` or `| Out-Null` as records arrive."""
    session = Session(host, user, _Forwarding(run, sinks), not_found_terminates=True)
    for statement in split_statements(text):
        await run_statement(session, statement)


class _Forwarding(Run):
    """A child run whose records reach the pipeline's run at once (streamed, not held to the end),
    through the statement's sinks; its own exit code and failure stay its own."""

    def __init__(self, parent: Run, sinks: list[str] | None = None) -> None:
        super().__init__()
        self.parent = parent
        self.sinks = sinks or []

    def emit(self, kind: str, value: Any) -> None:
        if kind == "output":
            if "out-null" in self.sinks:
                return
            if "out-string" in self.sinks:
                for line in format_value(value).split("\r\n"):
                    self.parent.emit("output", line)
                return
        self.parent.emit(kind, value)


async def _copy(host: Host, run: Run, args: list[Any], source: PipelineSource) -> None:
    await source.input_done.wait()
    chunks = [item if isinstance(item, str) else str(item) for item in source.inputs]
    if not chunks:
        raise Stop(1, ErrorInfo("Transport failure, no data received", category="InvalidData", fqid="RuntimeException",
                                exception_type="System.Management.Automation.RuntimeException", command=""))
    expected = base64.b64decode(chunks[-1]).decode("utf-8", errors="replace")
    data = b"".join(base64.b64decode(c) for c in chunks[:-1])
    actual = hashlib.sha1(data).hexdigest()
    if actual != expected:
        raise Stop(1, ErrorInfo(f"Transport failure, hash mismatch\r\nActual: {actual}\r\nExpected: {expected}",
                                category="NotSpecified", fqid="RuntimeException",
                                exception_type="System.Management.Automation.RuntimeException", command=""))
    path = _absolute(str(args[0]) if args else "")
    host.state.files[path.lower()] = data
    run.emit("output", path)


def _fetch(host: Host, run: Run, args: list[Any]) -> None:
    path = _absolute(str(args[0]) if args else "")
    data = host.state.files.get(path.lower())
    if data is None:
        raise Stop(1, ErrorInfo(f"The path at '{path}' does not exist", category="OperationStopped",
                                fqid="The path at '{path}' does not exist",
                                exception_type="System.Management.Automation.RuntimeException", command=""))
    run.emit("output", base64.b64encode(data).decode("ascii"))
    run.emit("output", hashlib.sha1(data).hexdigest())


def _absolute(path: str) -> str:
    if len(path) >= 2 and path[1] == ":":
        return path
    return "C:\\Users\\Administrator\\Documents\\" + path.lstrip(".\\")
