"""A step's transcript as a person reads it: the controller's timestamped streams, the error
that ended the step, then the host's own transcript."""

from __future__ import annotations

import time

from ..contract import StepResult
from .report import iso


def render_transcript(result: StepResult | None, *, host_transcript: str | None, error: str | None) -> str:
    """The controller's timestamped streams, then the error that ended the step, then the host's own transcript."""
    lines: list[str] = []
    if result is not None:
        for record in result.streams:
            stamp = iso(record.time)
            lines.extend(f"{stamp} [{record.stream}] {line}" for line in record.text.splitlines() or [""])
        if result.truncated_bytes:
            lines.append(f"{iso(time.time())} [controller] {result.truncated_bytes} bytes of output dropped "
                         "past the controller's output cap")
    if error:
        lines.append(f"{iso(time.time())} [controller] error: {error}")
    if host_transcript is not None:
        lines.append("----- the host's transcript -----")
        lines.append(host_transcript.rstrip("\n"))
    return "\n".join(lines) + "\n"
