"""Text for a terminal: the run's summary, and the one escape every host-sent string goes through.

Hosts send names, messages and causes: no control character, escape sequence or bidirectional
override from a host reaches the operator's terminal unescaped.
"""

from __future__ import annotations

import re
from typing import Any

# Bidirectional controls (Unicode's "Trojan Source" set: ALM, LRM, RLM, LRE..RLO, LRI..PDI):
# a host name with U+202E shows reversed and can pass for another host's.
BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNPRINTABLE = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff{BIDI}]")
_BIDI = re.compile(f"[{BIDI}]")


def printable(text: str) -> str:
    """No terminal escape sequence, control or bidirectional character from a host reaches the operator's terminal."""
    return _UNPRINTABLE.sub(escape_char, text)


def without_bidi(text: str) -> str:
    """Bidirectional controls shown as \\uNNNN (for outputs that escape the rest themselves: XML, HTML)."""
    return _BIDI.sub(escape_char, text)


def escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def render_text(report: dict[str, Any], width: int | None = None) -> str:
    """A short summary for the terminal: the run, then one line per host (outcome, steps, cause).

    With a ``width`` (a terminal's), a host's line that is longer is folded between words with an
    indent, so a step name is never cut in two and the next host still starts at the margin; without
    one (a pipe, a file) each host keeps one whole line, for grep."""
    run = report["run"]
    if run["finished"] is None:
        state = "did not finish (killed, or still running)"
    else:
        state = f"{'interrupted' if run['interrupted'] else 'finished'}, exit {run['exit_code']}"
    counts = ", ".join(f"{n} {outcome}" for outcome, n in run["counts"].items()) or "no hosts"
    lines = [printable(f"run {run['id']} ({run['command']}) {state}: {counts}")]
    names = max((len(printable(name)) for name in report["hosts"]), default=0)
    for name, host in report["hosts"].items():
        steps = ", ".join(_step_label(step) for step in host["steps"]) or "no steps"
        reboots = f"; {host['reboots']} reboot{'s' if host['reboots'] != 1 else ''}" if host["reboots"] else ""
        line = f"  {printable(name):<{names}}  {host['outcome']:<14}  {steps}{reboots}"
        if host["cause"]:
            line += f"  -- {host['cause']}"
        lines.append(printable(line))
    if width is not None:
        lines = [_fold(line, width) for line in lines]
    return "\n".join(lines) + "\n"


def _fold(line: str, width: int) -> str:
    """One summary line folded between words at ``width``, the rest indented under it."""
    if len(line) <= width:
        return line
    import textwrap

    return "\n".join(textwrap.wrap(line, width, subsequent_indent=" " * 6, break_long_words=False,
                                   break_on_hyphens=False))


def _step_label(step: dict[str, Any]) -> str:
    label = step["name"] if step["attempt"] == 1 else f"{step['name']}#{step['attempt']}"
    if step["status"] == "interrupted":
        return f"{label}(interrupted)"
    if step["exit_code"] is None:
        return f"{label}({step['error_kind'] or step['status']})"
    return label if step["exit_code"] == 0 else f"{label}({step['exit_code']})"


def runs_table(runs: list[tuple[Any, list[Any]]]) -> str:
    """`wuremote runs`: one line per run of a state dir, newest first: id, command, started (local time),
    status, outcome counts, and whether `wuremote resume` has anything to continue.

    ``runs`` holds (store.journal.RunRecord, its events)."""
    import time

    from .. import events as ev

    header = ("run id", "command", "started", "status", "outcomes", "resumable")
    rows: list[tuple[str, ...]] = []
    for run, events in runs:
        finished = next((e for e in reversed(events) if isinstance(e, ev.RunFinished)), None)
        counts: dict[str, int] = {}
        for event in events:
            if isinstance(event, ev.HostFinished):
                counts[event.outcome.value] = counts.get(event.outcome.value, 0) + 1
        if finished is not None:
            counts = {str(k): int(v) for k, v in finished.counts.items()}
        status = run.status if run.status != "running" or finished else "running or killed"
        shown = ", ".join(f"{outcome} {n}" for outcome, n in sorted(counts.items())) or "-"
        resumable = "no" if run.status == "finished" else "yes"
        rows.append((run.run_id, run.command, time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created)),
                     status, shown, resumable))
    if not rows:
        return "no runs in this state dir"
    widths = [max(len(printable(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(printable(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])
