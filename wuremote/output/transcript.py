"""A step's transcript as a person reads it: plain text, one line per record (time, stream, text), the
error that ended the step, the host's own transcript, then the step's result in a few words.

The scripts' result objects (JSON lines on the output stream) are not repeated here: each such line
is named in one line, and the result itself is in report.json."""

from __future__ import annotations

import json
import time
from typing import Any

from ..contract import StepResult
from .report import iso
from .terminal import printable

RESULT_KEY = "wuremote_result"  # marks a script's result object (Complete-WuStep in ps_scripts/_prelude.ps1)


def render_transcript(result: StepResult | None, *, host_transcript: str | None, error: str | None) -> str:
    """The controller's timestamped streams, the error that ended the step, the host's own transcript,
    then what the step came to."""
    lines: list[str] = []
    if result is not None:
        for record in result.streams:
            stamp = iso(record.time)
            lines.extend(f"{stamp} [{record.stream}] {_plain(line)}" for line in record.text.splitlines() or [""])
        if result.truncated_bytes:
            lines.append(f"{iso(time.time())} [controller] {result.truncated_bytes} bytes of output dropped "
                         "past the controller's output cap")
    if error:
        lines.append(f"{iso(time.time())} [controller] error: {error}")
    if host_transcript is not None:
        lines.append("----- the host's transcript -----")
        lines.append(host_transcript.rstrip("\n"))
    lines += _summary(result, error)
    return "\n".join(lines) + "\n"


def _result_object(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not (text.startswith("{") and RESULT_KEY in text):
        return None
    try:
        found = json.loads(text)
    except (ValueError, RecursionError):  # a host may send anything, nested past Python's limit too
        return None
    return found if isinstance(found, dict) and RESULT_KEY in found else None


def _plain(line: str) -> str:
    """A result object becomes one readable line; everything else is kept as the host sent it."""
    found = _result_object(line)
    if found is None:
        return line
    return printable(f"result of {found.get('step', 'the step')}: {found.get('status', '?')} "
                     f"(exit {found.get('exit_code', '?')}); in full in report.json")


def _summary(result: StepResult | None, error: str | None) -> list[str]:
    lines = ["----- result -----"]
    if result is None:
        lines.append(f"no result: {error or 'the step did not finish'}")
        return lines
    lines.append(f"{result.step}: {result.status}, exit code {result.exit_code}, {result.duration:.1f} s"
                 + ("; a restart is needed" if result.reboot_required else ""))
    lines += [printable(f"message: {message}") for message in result.messages]
    if result.changes:
        lines.append(f"changes: {len(result.changes)} (listed in report.json)")
    return lines
