"""The one event stream: the journal, the live view, the report and API subscribers all read it.

One frozen dataclass per event kind, with typed fields (pyinfra's state callbacks are the
model): a consumer matches on the class and reads attributes, never a dict with ``.get()``.
The journal stores each event as its kind plus its payload fields as JSON and reads it back
into the same class (``Event.from_record``), so a report rebuilt from the journal sees the very
events the live view saw.  None of the consumers reads another's state (docs/design.md, §1).
"""

from __future__ import annotations

import dataclasses
import time as _time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .contract import Outcome

_BASE_FIELDS = ("run_id", "host", "step", "time")


@dataclass(frozen=True)
class Event:
    """What every event carries; the subclasses add their payload as keyword-only fields."""

    kind: ClassVar[str] = ""
    journalled: ClassVar[bool] = True  # False: told to the subscribers only (StepStream says why)
    run_id: str
    host: str | None = None
    step: str | None = None
    time: float = field(default_factory=_time.time, kw_only=True)

    @property
    def data(self) -> dict[str, Any]:
        """The payload fields as a dict: what the journal stores and ``--json`` prints."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _BASE_FIELDS}

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` line's shape: kind, run_id, host, step, data, time."""
        return {"kind": self.kind, "run_id": self.run_id, "host": self.host, "step": self.step,
                "data": self.data, "time": self.time}

    @staticmethod
    def from_record(kind: str, run_id: str, host: str | None, step: str | None, data: Mapping[str, Any],
                    time: float) -> Event:
        """The typed event a journal row holds (unknown payload keys are dropped, missing ones defaulted).

        Journals written before session and plan events had kinds of their own carried them as
        host messages; those rows are read as the typed events they were.
        """
        if kind == "host-message":
            if "plan" in data:
                kind, data = HostPlanned.kind, {"plan": data["plan"], "text": data.get("text", "")}
            elif data.get("session"):
                kind, data = SessionOpened.kind, {"session": data["session"]}
            elif data.get("session_closed"):
                kind, data = SessionClosed.kind, {"session": data["session_closed"],
                                                  "orphan": data.get("level") != "debug"}
        cls = KINDS.get(kind)
        if cls is None:
            raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
        names = {f.name: f for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS}
        values = {name: data[name] for name in names if name in data}
        for name, spec in names.items():
            if name not in values and spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                values[name] = _EMPTY.get(name)
        return cls(run_id, host, step, time=time, **values)


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run-started"
    command: str
    hosts: list[str] = field(default_factory=list)
    inventory: list[dict[str, Any]] = field(default_factory=list)  # host settings without passwords: resume reconnects
    options: dict[str, Any] = field(default_factory=dict)  # RunOptions.snapshot(): resume runs the same way
    version: str = ""


@dataclass(frozen=True, kw_only=True)
class HostStarted(Event):
    kind: ClassVar[str] = "host-started"
    address: str | None = None
    transport: str | None = None
    groups: list[str] = field(default_factory=list)
    resumed: bool = False
    worker: str | None = None  # the Dask worker that runs the host


@dataclass(frozen=True, kw_only=True)
class HostPlanned(Event):
    """What will run on the host, and why (plan.HostPlan.as_dict), decided from diagnose's facts."""

    kind: ClassVar[str] = "host-planned"
    plan: dict[str, Any]
    text: str


@dataclass(frozen=True, kw_only=True)
class SessionOpened(Event):
    """A pool (PSRP) or shell (WinRS) the host gave us: journalled so a resumed run can delete it."""

    kind: ClassVar[str] = "session-opened"
    session: str


@dataclass(frozen=True, kw_only=True)
class SessionClosed(Event):
    kind: ClassVar[str] = "session-closed"
    session: str
    orphan: bool = False  # left open by a stopped controller, closed by this run
    existed: bool = True  # False: the host no longer had it

    @property
    def summary(self) -> str:
        if not self.orphan:
            return f"session {self.session} closed"
        return (f"deleted session {self.session} left open by the stopped run" if self.existed
                else f"session {self.session} of the stopped run was already gone")


@dataclass(frozen=True, kw_only=True)
class StepStarted(Event):
    kind: ClassVar[str] = "step-started"
    attempt: int = 1
    reason: str = ""
    idempotent: bool = False
    detached: bool = False


@dataclass(frozen=True, kw_only=True)
class StepProgress(Event):
    """Percent of a long step (DISM), as the host reports it."""

    kind: ClassVar[str] = "step-progress"
    percent: int
    message: str = ""
    bytes_held: int | None = None  # a push: bytes of the file the host holds (journalled after every run of chunks)


@dataclass(frozen=True, kw_only=True)
class StepStream(Event):
    """A record a step's script wrote (verbose, warning, information, error, output...), as it reached
    the controller: what ``-v`` shows while the step still runs.  ``stream`` is the record's stream
    (StreamRecord.stream, or "host-transcript" for a detached step's transcript read at each poll);
    ``text`` is the host's, unescaped (every view passes it through ``printable``), cut at MAX_CHARS
    (saying how much more the transcript has).

    Not journalled: the step's transcript file keeps every record whole, and nothing reads them back
    (resume folds decisions, the report reads results).  A DISM or sfc run writes hundreds of lines
    and a host up to the 4 MB output cap; one journal row each (a synchronous SQLite commit) would
    multiply the journal of a 1,000-host run for no reader.  And made only when a subscriber asks
    for streams (``wants_streams``, the -v views): a run without -v pays nothing for them, and on
    Dask no line crosses the queue.
    """

    kind: ClassVar[str] = "step-stream"
    journalled: ClassVar[bool] = False
    MAX_CHARS: ClassVar[int] = 2000  # of one record; the transcript has it whole
    stream: str
    text: str


@dataclass(frozen=True, kw_only=True)
class StepFinished(Event):
    kind: ClassVar[str] = "step-finished"
    exit_code: int | None  # None: the transport failed before the script answered
    status: str
    duration: float = 0.0
    hresults: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    changes: list[Any] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    reboot_required: bool = False
    error_kind: str | None = None  # a TransportError kind, "interrupted", "failed" or "internal"
    transcript: str | None = None  # relative to the run dir


@dataclass(frozen=True, kw_only=True)
class RebootStarted(Event):
    """Journalled before the restart is asked for: resume compares the host's boot time with ``boot_before``."""

    kind: ClassVar[str] = "reboot-started"
    reason: str
    boot_before: str | None = None
    rung: str | None = None  # "restart" when the restart is a rung of the plan (the pending-reboot gate)


@dataclass(frozen=True, kw_only=True)
class RebootRequested(Event):
    """The restart was sent to the host (it answered, or dropped the connection after the request went out)."""

    kind: ClassVar[str] = "reboot-requested"


@dataclass(frozen=True, kw_only=True)
class RebootFinished(Event):
    kind: ClassVar[str] = "reboot-finished"
    ok: bool
    duration: float = 0.0
    boot_after: str | None = None
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class HostMessage(Event):
    kind: ClassVar[str] = "host-message"
    level: str  # info | warning
    text: str


@dataclass(frozen=True, kw_only=True)
class HostFinished(Event):
    kind: ClassVar[str] = "host-finished"
    outcome: Outcome
    cause: str = ""
    steps_run: int = 0
    reboots: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", Outcome(self.outcome))  # a journal row holds the plain string


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run-finished"
    exit_code: int
    counts: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False


# Every kind, in the order a host's life produces them.
KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in (
    RunStarted, HostStarted, HostPlanned, SessionOpened, StepStarted, StepProgress, StepStream, StepFinished,
    RebootStarted, RebootRequested, RebootFinished, HostMessage, SessionClosed, HostFinished, RunFinished)}

# What a journal row of an older version may lack for a field the class requires.
_EMPTY: dict[str, Any] = {"command": "", "plan": {}, "text": "", "session": "", "percent": 0, "exit_code": None,
                          "status": "", "reason": "", "ok": False, "level": "info", "outcome": Outcome.FAILED}

Subscriber = Callable[[Event], None]
