"""What a person (or a pipe) sees while a run goes: a rich live view, plain lines, or JSON lines.

Each view is an event subscriber; none keeps state another needs.  The live view stays
usable at 1,000 hosts because it shows counts for everyone and rows only for hosts that
are active or failed (newest first, capped to the terminal's height).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .. import events as ev
from ..contract import Outcome
from .terminal import printable

STYLE = {Outcome.HEALTHY: "green", Outcome.REPAIRED: "green", Outcome.PATCHED: "green", Outcome.PLANNED: "cyan", Outcome.CHECKED: "cyan",
         Outcome.FAILED: "red", Outcome.UNREACHABLE: "red", Outcome.NEEDS_OPERATOR: "yellow",
         Outcome.INTERRUPTED: "magenta", Outcome.SKIPPED: "dim", "running": "blue", "waiting": "dim", "rebooting": "yellow"}


def describe(event: ev.Event) -> str:
    """One plain line for an event (the --plain view, logs, and the live view's last message).

    Hosts send some of this text (messages, causes): control characters and line breaks are
    shown escaped, so a host can neither forge a line of the view nor drive the terminal.
    """
    return printable(_describe(event))


_COUNTED = re.compile(r"^\d+/\d+ ")  # install-updates' "3/7 KB5034441": which update of how many


def progress_text(event: ev.StepProgress) -> str:
    """What a step says it does now; an update count reads "3/7 KB5034441 45%"."""
    if _COUNTED.match(event.message):
        return f"{event.message} {event.percent}%"
    return event.message


def _describe(event: ev.Event) -> str:
    if isinstance(event, ev.RunStarted):
        return f"run {event.run_id}: {event.command} on {len(event.hosts)} host(s)"
    if isinstance(event, ev.HostStarted):
        return f"started ({event.transport} to {event.address})"
    if isinstance(event, ev.HostPlanned):
        return f"info: {event.text}"
    if isinstance(event, ev.StepStarted):
        return f"{event.step} started (attempt {event.attempt}): {event.reason}"
    if isinstance(event, ev.StepProgress):
        if _COUNTED.match(event.message):
            return f"{event.step} {progress_text(event)}"
        return f"{event.step} {event.percent}% {event.message}".rstrip()
    if isinstance(event, ev.StepFinished):
        extra = f" {', '.join(event.hresults)}" if event.hresults else ""
        first = (event.messages or [""])[0]
        if event.exit_code is None:  # the script never answered: say why, not "exit None, 0.0s"
            head = f"{event.step} ended without a result ({event.error_kind or event.status})"
        else:
            head = f"{event.step} {event.status} (exit {event.exit_code}, {event.duration:.1f}s){extra}"
        return head + (f": {first}" if first else "")
    if isinstance(event, ev.RebootStarted):
        return f"restarting: {event.reason}"
    if isinstance(event, ev.RebootRequested):
        return "restart sent; waiting for the host to go down and come back"
    if isinstance(event, ev.RebootFinished):
        return f"restart {'done' if event.ok else 'FAILED'}: {event.message}"
    if isinstance(event, ev.HostMessage):
        return f"{event.level}: {event.text}"
    if isinstance(event, ev.SessionClosed) and event.orphan:
        return f"info: {event.summary}"
    if isinstance(event, ev.HostFinished):
        return f"{event.outcome.value.upper()}: {event.cause}"
    if isinstance(event, ev.RunFinished):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(event.counts.items()))
        return f"run {event.run_id} finished: {counts} (exit {event.exit_code})"
    return event.kind


def _news(event: ev.Event) -> bool:
    """Session bookkeeping is for the journal (resume deletes what a dead run left), not for a person;
    a step's stream lines are for the -v view only."""
    if isinstance(event, ev.StepStream):
        return False
    return not isinstance(event, (ev.SessionOpened, ev.SessionClosed)) or (
        isinstance(event, ev.SessionClosed) and event.orphan)


def middle(name: str, width: int) -> str:
    """A name cut in the middle (web-paris-0017 -> web-pa…0017): fleet names differ at their ends."""
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return name[:width - 1 - tail] + "…" + name[len(name) - tail:]


class PlainView:
    """One line per event: for pipes, CI logs, and --plain."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._plans: dict[str, str] = {}  # host -> the plan line already printed

    def __call__(self, event: ev.Event) -> None:
        if not _news(event):
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
        who = printable(event.host or "-")
        text = describe(event)
        if isinstance(event, ev.HostPlanned) and event.host:
            self._plans[event.host] = event.text
        elif isinstance(event, ev.HostFinished) and event.host and self._plans.get(event.host) == event.cause:
            text = f"{event.outcome.value.upper()} (the plan above)"  # `plan` ends on its plan: printed once
        with self._lock:
            self.stream.write(f"{stamp} {who} {text}\n")
            self.stream.flush()


# The line Start-Transcript writes above and below its start and end blocks (Windows PowerShell 5.1:
# "**********************" then "Windows PowerShell transcript start", Start time, Username, ...).
# https://learn.microsoft.com/powershell/module/microsoft.powershell.host/start-transcript
TRANSCRIPT_BANNER = "*" * 22
# What a transcript puts before a verbose, warning or debug record: shown as that stream, as over PSRP.
TRANSCRIPT_STREAMS = {"VERBOSE: ": "verbose", "WARNING: ": "warning", "DEBUG: ": "debug"}


def _transcript_line(line: str) -> tuple[str, str]:
    """A line of a detached step's transcript as (stream, text): "VERBOSE: x" is ("verbose", "x")."""
    for prefix, stream in TRANSCRIPT_STREAMS.items():
        if line.startswith(prefix) or line.rstrip() == prefix.rstrip():  # "VERBOSE:" alone: an empty record
            return stream, line[len(prefix):]
    return "transcript", line


class VerboseView(PlainView):
    """-v: the plain lines, and each record a step writes (verbose, warning, information, error, output; a
    detached step's transcript at each poll) as it reaches the controller, under its host, step and stream.

    Several hosts' lines interleave, so each names its host and step; they are indented under the
    event lines.  The script's result object is not shown (report.json has it), nor the start and end
    blocks Start-Transcript writes around a detached step's transcript (who, where, when: boilerplate).
    """

    wants_streams = True  # the runner makes StepStream events only for a view that shows them
    MAX_LINES = 200  # per step attempt; the transcript keeps them all

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._lines: dict[tuple[str | None, str | None], int] = {}  # (host, step) -> lines of this attempt
        self._in_banner: set[tuple[str | None, str | None]] = set()  # inside a transcript's start/end block

    def __call__(self, event: ev.Event) -> None:
        key = (event.host, event.step)
        if isinstance(event, ev.StepStream):
            self._stream(event, key)
            return
        if isinstance(event, ev.StepStarted):
            self._lines[key] = 0
            self._in_banner.discard(key)
        super().__call__(event)
        if isinstance(event, ev.StepFinished):
            more = self._lines.pop(key, 0) - self.MAX_LINES
            if more > 0:
                self._write([f"    ... {more} more lines in {event.transcript}"])

    def _stream(self, event: ev.StepStream, key: tuple[str | None, str | None]) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
        where = f"{stamp} {printable(event.host or '-')}   {printable(event.step or '-')}"
        shown: list[str] = []
        with self._lock:
            for line in event.text.splitlines():
                stream = event.stream
                if stream == "host-transcript":
                    if line.strip() == TRANSCRIPT_BANNER:
                        self._in_banner ^= {key}
                        continue
                    stream, line = _transcript_line(line)
                if not line.strip() or key in self._in_banner:
                    continue
                seen = self._lines[key] = self._lines.get(key, 0) + 1
                if seen <= self.MAX_LINES:
                    shown.append(f"{where} [{printable(stream)}] {printable(line.rstrip())}")
        self._write(shown)

    def _write(self, lines: list[str]) -> None:
        with self._lock:
            self.stream.write("".join(line + "\n" for line in lines))
            self.stream.flush()


class JsonView:
    """--json: one JSON object per event on stdout, for scripts; with -v also each step's stream
    records ("step-stream" objects, which the journal does not keep)."""

    def __init__(self, stream: IO[str], *, streams: bool = False) -> None:
        self.stream = stream
        self.wants_streams = streams
        self._lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.StepStream) and not self.wants_streams:
            return
        line = json.dumps(event.as_dict(), default=str, separators=(",", ":"))
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


@dataclass
class HostRow:
    name: str
    state: str = "waiting"
    step: str = ""
    started: float = 0.0
    reboots: int = 0
    percent: int | None = None
    message: str = ""
    updated: float = field(default_factory=time.time)


class LiveView:
    """The rich live table: fleet counts, then active and failed hosts."""

    def __init__(self, console: Console, hosts: list[str], title: str = "wuremote") -> None:
        self.console = console
        self.title = title
        self.rows = {name: HostRow(name) for name in hosts}
        self._lock = threading.Lock()
        # transient: the live table is erased when the run ends or is interrupted, so no stale header or
        # half-drawn table stays above what follows (the per-host summary, the artifacts, the resume hint).
        self._live = Live(self._render(), console=console, refresh_per_second=4, transient=True,
                          get_renderable=self._render)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._live.__exit__(*exc)

    def __call__(self, event: ev.Event) -> None:
        if event.host is None or not _news(event):
            return
        with self._lock:
            row = self.rows.setdefault(event.host, HostRow(event.host))
            row.updated = event.time
            if isinstance(event, ev.HostStarted):
                row.state, row.started = "running", event.time
            elif isinstance(event, ev.StepStarted):
                row.step, row.percent = event.step or "", None
            elif isinstance(event, ev.StepProgress):
                row.percent = event.percent
            elif isinstance(event, ev.RebootStarted):
                row.state = "rebooting"
            elif isinstance(event, ev.RebootFinished):
                row.state = "running"
                row.reboots += 1
            elif isinstance(event, ev.HostFinished):
                row.state, row.step, row.percent = event.outcome.value, "", None
            # a finished host's state column already says its outcome: the last event is its cause
            # (and a step's name and progress are in the step column: the last event is why it runs and
            # what it says it does)
            if isinstance(event, ev.HostFinished):
                row.message = printable(event.cause)
            elif isinstance(event, ev.StepProgress):
                if event.message:  # a bare percent is in the step column: the last event stays what it was
                    row.message = printable(progress_text(event))
            elif isinstance(event, ev.StepStarted):  # the step column names it: the narrow last event says why
                again = f"attempt {event.attempt}: " if event.attempt > 1 else ""
                row.message = printable(again + event.reason)
            else:
                row.message = describe(event)

    def _render(self) -> Group:
        with self._lock:
            rows = list(self.rows.values())
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.state] = counts.get(row.state, 0) + 1
        summary = Text(f"{self.title}  ")
        for state in sorted(counts, key=lambda s: list(STYLE).index(s) if s in STYLE else 99):
            summary.append(f"{state} {counts[state]}  ", style=STYLE.get(state, ""))
        # one column short of the terminal: a full-width last line leaves the cursor in the pending-wrap
        # column, where the ^C a terminal echoes wraps to a new line, and erasing the view on exit would
        # then leave its first line (the header) behind
        width = self.console.width - 1
        names = max((len(r.name) for r in rows), default=4)
        host_width = max(4, min(names, 24 if width >= 100 else 16))
        wide = width >= 110  # the progress bar and the reboot count get columns of their own
        columns = [("host", host_width), ("state", 14), ("step", 24 if wide else 18), ("time", 5)]
        if wide:
            columns += [("boots", 5), ("progress", 12)]
        # collapse_padding: one space between columns, so the widths below add up to the terminal's
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold", collapse_padding=True)
        for column, size in columns:
            table.add_column(column, width=size, no_wrap=True, overflow="ellipsis")
        last = max(10, width - sum(size for _, size in columns) - len(columns) - 1)
        table.add_column("last event", width=last, no_wrap=True, overflow="ellipsis")
        shown = [r for r in rows if r.state in ("running", "rebooting") or r.state in
                 ("failed", "unreachable", "needs-operator", "interrupted")]
        shown.sort(key=lambda r: (r.state not in ("running", "rebooting"), -r.updated))
        limit = max(5, self.console.size.height - 6)
        now = time.time()
        for row in shown[:limit]:
            elapsed = f"{now - row.started:4.0f}s" if row.started and row.state in ("running", "rebooting") else ""
            step = row.step
            if not wide and row.percent is not None:
                step = f"{row.step} {row.percent}%"
            if not wide and row.reboots:
                step = f"{step} [{row.reboots} boot]" if step else f"[{row.reboots} boot]"
            cells: list[Any] = [middle(printable(row.name), host_width), Text(row.state, style=STYLE.get(row.state, "")), step,
                                elapsed]
            if wide:
                bar: Any = ProgressBar(total=100, completed=row.percent, width=12) if row.percent is not None else ""
                cells += [str(row.reboots or ""), bar]
            table.add_row(*cells, row.message)
        if len(shown) > limit:
            table.add_row(f"... {len(shown) - limit} more", *[""] * len(columns))
        return Group(summary, table)
