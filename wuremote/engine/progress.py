"""Where each host of a run stands, folded from the run's journalled events: what ``resume`` continues from.

The runner journals an event *before* it does what the event announces (``step-started`` is
written before the script is sent), so after a crash or a ``kill -9`` the events say exactly
where each host was.  Owed restores are folded by the same Ledger the walk uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import events as ev
from ..contract import ExitCode, Outcome
from .ledger import Ledger


@dataclass(frozen=True)
class StepOutcome:
    """One finished step run, as resume needs it."""

    name: str
    attempt: int
    exit_code: int | None  # None: the transport failed before the script answered
    status: str

    @property
    def ok(self) -> bool:
        return ExitCode.is_ok(self.exit_code)


@dataclass(frozen=True)
class InterruptedStep:
    """A step recorded as started with no finish after it: the controller died (or stopped) there."""

    name: str
    attempt: int
    idempotent: bool  # safe to run again from the start
    detached: bool  # may still be running on the host: re-attach, never start it twice
    started: float


@dataclass
class HostProgress:
    """Where one host stands in a run."""

    host: str
    finished: list[StepOutcome] = field(default_factory=list)  # every finished step, in order
    interrupted: InterruptedStep | None = None
    ledger: Ledger = field(default_factory=Ledger)
    # Detached steps started and not collected (a result read back), by label: each resume
    # re-attaches to them, however many times the controller was stopped in between.
    detached_open: dict[str, InterruptedStep] = field(default_factory=dict)
    reboots: int = 0  # reboots that completed
    reboot_in_flight: ev.RebootStarted | None = None  # journalled, with no reboot-finished yet
    reboot_requested: bool = False  # ... and the restart was sent (a reboot-requested after it)
    outcome: Outcome | None = None  # None while the host has not finished
    cause: str = ""

    @property
    def owed(self) -> list[str]:
        """Restores owed, e.g. ["av-resume"], in pause order."""
        return self.ledger.owed

    @property
    def ok_steps(self) -> list[str]:
        """Names of the steps that finished ok (exit 0 or 3010), in order."""
        return [step.name for step in self.finished if step.ok]

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.HostStarted):
            self.outcome, self.cause = None, ""
        elif isinstance(event, ev.StepStarted) and event.step:
            self.interrupted = InterruptedStep(event.step, event.attempt, event.idempotent, event.detached, event.time)
            self.ledger.started(event.step)
            if event.detached:
                self.detached_open[event.step] = self.interrupted
        elif isinstance(event, ev.StepFinished) and event.step:
            # A host runs one step at a time: this finish closes the open start of the same step.
            started = self.interrupted if self.interrupted and self.interrupted.name == event.step else None
            self.finished.append(StepOutcome(event.step, started.attempt if started else 1, event.exit_code,
                                             event.status))
            if started:
                self.interrupted = None
            self.ledger.finished(event.step, event.exit_code)
            if event.exit_code is not None:  # a result came back: nothing left running on the host
                self.detached_open.pop(event.step, None)
        elif isinstance(event, ev.RebootStarted):
            self.reboot_in_flight, self.reboot_requested = event, False
        elif isinstance(event, ev.RebootRequested):
            self.reboot_requested = True
        elif isinstance(event, ev.RebootFinished):
            flight, self.reboot_in_flight, self.reboot_requested = self.reboot_in_flight, None, False
            if event.ok:
                self.reboots += 1
                if flight is not None and flight.rung:  # a restart rung counts as a step that ran ok
                    self.finished.append(StepOutcome(flight.rung, 1, 0, "ok"))
        elif isinstance(event, ev.HostFinished):
            self.outcome, self.cause = event.outcome, event.cause


def progress_of(events: list[ev.Event]) -> dict[str, HostProgress]:
    """Per host, in plan order: what finished, where a kill interrupted it, what is owed."""
    hosts: dict[str, HostProgress] = {}
    for event in events:
        if isinstance(event, ev.RunStarted):
            for name in event.hosts:
                hosts.setdefault(str(name), HostProgress(str(name)))
        if event.host is not None:
            hosts.setdefault(event.host, HostProgress(event.host)).apply(event)
    for progress in hosts.values():
        progress.ledger.stopped()
    return hosts
