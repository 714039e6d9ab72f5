"""Running one step on one host: events and transcript around it, and survival of a lost connection.

The walk decides *which* step runs; this module runs it.  Every step run is journalled as
started before the script is sent and as finished (with its transcript) after, whatever
happens in between.  A connection lost under an idempotent step is survived: on a fresh
connection the step runs again in place (a detached one is re-attached to); if the host
restarted under it, the attempt is reported interrupted and the step runs once more after
the host is back.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .. import events as ev
from ..contract import Outcome, StepResult, StreamRecord
from ..contract.scripts import StepScript, get_script
from ..contract.steps import RESTORES
from ..inventory import HostConfig
from ..output.transcript import RESULT_KEY, render_transcript
from ..store.rundir import transcript_name
from ..transport import open_transport
from ..transport.base import Transport, TransportError
from .context import Cancelled, HostContext, HostFailed
from .detached import DetachedStep
from .findings import hresults_of, small_facts
from .ledger import Ledger
from .reboot import RebootError, read_boot, wait_until_back
from .retry import retrying

STEP_RETRIES = 4  # fresh connections an idempotent step gets after losing its own (a flaky network loses several)
_NO_BOOT = "(unknown)"  # a boot time no host reports: wait_until_back returns the first one it reads
_PROGRESS = re.compile(r"\s*(\d{1,3})%\s*(.*)")
# Steps that still run after Ctrl-C: the restores, and what taking and releasing the host needs.
_AFTER_CANCEL = frozenset(RESTORES.values()) | {"lock", "boot-info", "restart"}
# A step made of several script runs: (script, parameters, label) -> the last run's result.
Body = Callable[[StepScript, dict[str, Any], str], StepResult]


@dataclass(frozen=True)
class FollowUp:
    """An idempotent step sent in the same pipeline as the one before it (PSRP's chain), run only when that
    one exits 0 and asks for no restart: a rung and the diagnose after it cost one request sequence, the
    last pending-reboot check and the lock's release another.
    Its events, transcript and journal records are those of a step of its own, written once it ran."""

    name: str
    params: dict[str, Any]
    reason: str
    quiet: bool = False  # no events, transcript or journal records (boot-info, which has none on its own)
    # What its result must be, raising HostFailed when it is not (a lead step's: the step after it
    # did not run); None: any result is the caller's to read from ``followed``.
    check: Callable[[StepResult], object] | None = field(default=None, compare=False)


class StepRunner:
    """One host's connection and step runs, on one worker thread."""

    def __init__(self, ctx: HostContext, host: HostConfig, ledger: Ledger, reattach: set[str]) -> None:
        self.ctx = ctx
        self.host = host
        self.name = host.name
        self.options = ctx.options
        self.ledger = ledger
        self.reattach = reattach  # detached steps a stopped controller left running: re-attach, never restart
        self.transport: Transport | None = None
        self.attempts: dict[str, int] = {}
        # Bytes of each detached script's host transcript already read: a later attempt in the same run
        # appends to the same file (the prelude's Start-Transcript -Append), so it is read on from there.
        self.transcript_read: dict[str, int] = {}
        self.boot_seen: str | None = None  # the host's boot time as last read: a change means it restarted
        self.deadline = time.monotonic() + self.options.host_timeout
        self._session: str | None = None
        self._announced: str | None = None  # a pool id journalled before its Create was answered
        self._orphans_closed = False
        self.followed: dict[str, StepResult] = {}  # the FollowUps' results, by step, that the last step's chain ran

    # --- the connection -----------------------------------------------------------------
    def open(self) -> Transport:
        self.transport = open_transport(self.host, self.options.transport)
        self.transport.on_opened = self._opened
        self.transport.on_opening = self._opening
        self.transport.on_not_opened = self._not_opened
        return self.transport

    def close(self) -> None:
        if self.transport is None:
            return
        session = self.transport.session_id
        self.transport.close()
        if session:
            self.emit(ev.SessionClosed(self.ctx.run_id, self.name, session=session))

    @property
    def connected(self) -> Transport:
        if self.transport is None:
            raise HostFailed(Outcome.FAILED, "no connection")
        return self.transport

    # --- events -------------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        self.ctx.emit(event)

    def message(self, level: str, text: str) -> None:
        self.emit(ev.HostMessage(self.ctx.run_id, self.name, level=level, text=text))

    @property
    def steps_run(self) -> int:
        return sum(self.attempts.values())

    # --- one step -----------------------------------------------------------------------
    def step(self, name: str, params: dict[str, Any], *, reason: str, label: str | None = None,
             body: Body | None = None, then: tuple[FollowUp, ...] = (), lead: tuple[FollowUp, ...] = ()) -> StepResult:
        """Run one script (detached when its header says so), with its events and transcript.

        ``body`` replaces the one script run for a step made of several (a push: runs of chunks);
        it is run again, whole, on a fresh connection after a lost one.
        ``then``: read-only steps to send in the same pipeline where the transport can chain (PSRP);
        their results are left in ``followed`` (by step; one that did not run is missing: the caller
        runs it on its own).
        ``lead``: idempotent steps that must succeed first (the lease's renewal before a rung), each
        checked by its ``check``: in the same pipeline where the step is chained, else each on its own
        before it."""
        self.check_time(name)
        script = get_script(name)
        chained = bool(then or lead) and body is None and not script.meta.detached and hasattr(self.connected, "run_chain")
        if lead and not chained:
            for first in lead:
                done = self.step(first.name, first.params, reason=first.reason)
                if first.check is not None:
                    first.check(done)
            lead = ()
        self.followed = {}
        followed: list[StepResult] = []
        led: list[StepResult] = []
        label = label or name
        params = {**params, "RunId": self.ctx.run_id}  # the run id is wuremote's, never an option's
        attempt = self._start(label, script, reason)
        reported = False  # the step's finish is already journalled (a recovery that gave up)
        restarted_under = False

        def lost(error: BaseException) -> None:
            nonlocal attempt, reported, restarted_under
            assert isinstance(error, TransportError)
            try:
                rebooted = self._recover(label, error)
            except (TransportError, RebootError) as gone:
                self._finished(label, attempt, None, error=f"{error}; then {gone}", error_kind=error.kind)
                reported = True
                raise HostFailed(Outcome.UNREACHABLE if isinstance(gone, TransportError) else Outcome.FAILED,
                                 str(gone)) from None
            if rebooted:
                self._finished(label, attempt, None, error=f"the host restarted during {label}", error_kind="interrupted")
                if restarted_under:
                    reported = True
                    raise HostFailed(Outcome.FAILED, f"{label}: the host restarted under it twice; not tried again")
                restarted_under = True
                attempt = self._start(label, script, f"{reason} (again: the host restarted under it)")

        def survivable(error: BaseException) -> bool:
            return isinstance(error, TransportError) and error.transient and script.meta.idempotent

        try:
            for tries in retrying(tries=STEP_RETRIES + 1, when=survivable, between=lost):
                with tries:
                    if body is not None:
                        result = body(script, params, label)
                    elif script.meta.detached:
                        again = label in self.reattach or tries.retry_state.attempt_number > 1
                        result = DetachedStep(self, script, params, label).run(reattach=again)
                        self.reattach.discard(label)
                    elif chained:
                        result, followed, led = self._run_chain(script, params, label, lead, then)
                    else:
                        result = self.run_script(script, params, label)
        except TransportError as exc:
            self._finished(label, attempt, None, error=str(exc), error_kind=exc.kind)
            raise
        except Cancelled:
            self._finished(label, attempt, None, error="interrupted by the operator; a detached step keeps running",
                           error_kind="interrupted")
            raise
        except HostFailed as exc:
            if not reported:
                self._finished(label, attempt, None, error=exc.cause, error_kind="failed")
            raise
        except Exception as exc:
            self._finished(label, attempt, None, error=f"internal error: {type(exc).__name__}: {exc}",
                           error_kind="internal")
            raise
        self._finished(label, attempt, result)
        self._led(lead, led, label)
        self._followed(then, followed)
        return result

    def _followed(self, then: tuple[FollowUp, ...], followed: list[StepResult]) -> None:
        """Each follow-up that ran: its events, transcript and journal records, then ``followed``."""
        for follow, done in zip(then, followed):
            if not follow.quiet:
                follow_attempt = self._start(follow.name, get_script(follow.name), follow.reason)
                self._finished(follow.name, follow_attempt, done)
            self.followed[follow.name] = done

    def _led(self, lead: tuple[FollowUp, ...], led: list[StepResult], label: str) -> None:
        """Lead steps that ran in a step's pipeline: their events after the step's own, like its follow-ups'
        (the journal has one step open at a time), saying where they ran; then their checks."""
        self._followed(tuple(replace(first, reason=f"{first.reason} (sent first in {label}'s pipeline)")
                             for first in lead), led)
        for first, done in zip(lead, led):
            if first.check is not None:
                first.check(done)

    def _run_chain(self, script: StepScript, params: dict[str, Any], label: str, lead: tuple[FollowUp, ...],
                   then: tuple[FollowUp, ...]) -> tuple[StepResult, list[StepResult], list[StepResult]]:
        """The lead steps, the step and its follow-ups in one pipeline: the step's result, the follow-ups'
        as far as the chain reached, and the lead steps'.  A chain that stopped in a lead step never ran
        the step: that lead step's events are written and its check raises HostFailed."""
        around = lead + then
        follows = [get_script(follow.name) for follow in around]
        budget = script.meta.timeout + sum(follow.meta.timeout for follow in follows)
        timeout = max(5.0, min(budget * self.options.time_scale, self.time_left))
        calls = [(follow_script, {**follow.params, "RunId": self.ctx.run_id})
                 for follow_script, follow in zip(follows, around)]
        calls.insert(len(lead), (script, params))
        try:
            results = self.connected.run_chain(calls, timeout=timeout,  # type: ignore[attr-defined]
                                               on_stream=self._on_stream(label))
        finally:
            self._note_session()
        led, rest = results[:len(lead)], results[len(lead):]
        if not rest:
            self._led(lead, led, label)  # the one that did not succeed raises here
            raise HostFailed(Outcome.FAILED, f"{label} did not run: {lead[-1].name} before it did not succeed")
        return rest[0], rest[1:], led

    @property
    def time_left(self) -> float:
        """Seconds until --host-timeout (negative once it has passed)."""
        return self.deadline - time.monotonic()

    def host_timeout_cause(self, during: str) -> str:
        return f"host timeout ({self.options.host_timeout:.0f} s) reached during {during}"

    def run_script(self, script: StepScript, params: dict[str, Any], label: str | None,
                   input: Iterable[str] | None = None) -> StepResult:
        """One script run over the transport: the building block of a step.

        Its progress and (for a -v view) its stream lines are told as the step ``label``'s as they
        arrive; with no label (a detached step's polls) they are only kept in the result.
        Its own timeout, cut to what is left of the host's: --host-timeout holds during a step too.
        """
        timeout = max(5.0, min(script.meta.timeout * self.options.time_scale, self.time_left))
        on_stream = self._on_stream(label) if label is not None else None
        try:
            return self.connected.run_step(script, params, timeout=timeout, on_stream=on_stream, input=input)
        finally:
            self._note_session()

    def _start(self, label: str, script: StepScript, reason: str) -> int:
        attempt = self.attempts[label] = self.attempts.get(label, 0) + 1
        self.ledger.started(label)
        self.emit(ev.StepStarted(self.ctx.run_id, self.name, label, attempt=attempt, reason=reason,
                                 idempotent=script.meta.idempotent, detached=script.meta.detached))
        return attempt

    def _finished(self, label: str, attempt: int, result: StepResult | None, *, error: str | None = None,
                  error_kind: str | None = None) -> None:
        relative = transcript_name(self.name, label, attempt)
        self.ctx.write_artifact(relative, render_transcript(result, host_transcript=None, error=error))
        self.ledger.finished(label, result.exit_code if result else None)
        if result is None:
            self.emit(ev.StepFinished(self.ctx.run_id, self.name, label, exit_code=None, status="error",
                                      messages=[error or ""], error_kind=error_kind, transcript=relative))
            return
        facts = result.facts if label == "diagnose" else small_facts(result.facts, label)
        self.emit(ev.StepFinished(self.ctx.run_id, self.name, label, exit_code=result.exit_code, status=result.status,
                                  duration=round(result.duration, 3), hresults=hresults_of(result),
                                  messages=result.messages[:20], changes=result.changes[:50], facts=facts,
                                  reboot_required=result.reboot_required, transcript=relative))

    def _on_stream(self, label: str) -> Callable[[StreamRecord], None]:
        """Progress as StepProgress; every other record as a StepStream when a view shows them (-v),
        except the script's result object (report.json has it; the transcript names it)."""
        streams = self.ctx.wants_streams

        def on_stream(record: StreamRecord) -> None:
            if record.stream == "progress":
                match = _PROGRESS.match(record.text)
                if match:
                    self.emit(ev.StepProgress(self.ctx.run_id, self.name, label, percent=int(match.group(1)),
                                              message=match.group(2)[:120]))
            elif streams and not (record.stream in ("output", "stdout") and RESULT_KEY in record.text):
                self.stream_line(label, record.stream, record.text)
        return on_stream

    def stream_line(self, label: str, stream: str, text: str) -> None:
        """Tell a -v view one record of the step as it arrives (never journalled: events.StepStream)."""
        if self.ctx.wants_streams:
            cut = len(text) - ev.StepStream.MAX_CHARS
            if cut > 0:
                text = text[:ev.StepStream.MAX_CHARS] + f" ... ({cut} more characters in the transcript)"
            self.emit(ev.StepStream(self.ctx.run_id, self.name, label, stream=stream, text=text))

    def check_time(self, step: str) -> None:
        if time.monotonic() > self.deadline:
            raise HostFailed(Outcome.FAILED, f"host timeout ({self.options.host_timeout:.0f} s) reached before {step}")
        if self.ctx.cancelled and step not in _AFTER_CANCEL:
            raise Cancelled()

    # --- sessions: journalled so a resumed run can delete what a dead one left ----------
    def _opening(self, session: str) -> None:
        """The transport's callback: a pool's id, before its Create goes out (PSRP: the client chooses it).
        Journalled at once: a controller killed while the host creates the pool leaves resume its id
        (resume deletes it; "not found" if the Create never arrived)."""
        self._announced = session
        self.emit(ev.SessionOpened(self.ctx.run_id, self.name, session=session))

    def _not_opened(self, session: str) -> None:
        """The Create never reached the host (refused, rejected): nothing for resume to delete."""
        self._announced = None
        self.emit(ev.SessionClosed(self.ctx.run_id, self.name, session=session))

    def _opened(self, session: str) -> None:
        """The transport's callback: the host has just answered the pool's/shell's Create (WinRS: the host
        chose the id, journalled now)."""
        self._session = session
        if session != self._announced:
            self.emit(ev.SessionOpened(self.ctx.run_id, self.name, session=session))
        self._announced = None

    def _note_session(self) -> None:
        """After a script run on a fresh session: delete what a stopped controller left (each once)."""
        if self._session is not None and not self._orphans_closed:
            self._orphans_closed = True
            self._close_orphans()

    def _close_orphans(self) -> None:
        for session in self.ctx.take_orphans(self.name):
            try:
                existed = self.connected.close_orphan(session)
            except TransportError as exc:
                self.message("warning", f"could not delete session {session} left by the stopped run: {exc}")
                continue
            self.emit(ev.SessionClosed(self.ctx.run_id, self.name, session=session, orphan=True, existed=existed))

    # --- boot time and recovery ---------------------------------------------------------
    def read_boot(self) -> tuple[str, list[str]]:
        """boot-info (read-only), sent again on a fresh connection while the tries last."""
        transport = self.connected

        def reset_if_lost(error: BaseException) -> None:
            if isinstance(error, TransportError) and error.kind in ("lost", "unreachable"):
                transport.reset()  # a transient fault leaves the pool/shell usable

        for tries in retrying(tries=STEP_RETRIES + 1, when=lambda e: isinstance(e, TransportError) and e.transient,
                              between=reset_if_lost):
            with tries:
                return read_boot(transport, self.ctx.run_id, self.options.reboot.probe_timeout)
        raise AssertionError("unreachable")  # the loop returns or raises

    def read_boot_then(self, then: tuple[FollowUp, ...]) -> tuple[str, list[str]]:
        """read_boot, with ``then`` in boot-info's pipeline where the transport can chain (PSRP): boot-info
        asks for a restart when one is pending (RebootRequiredIfPending), which stops the chain there, so
        the follow-ups run only on a host with no restart pending.  Their results are left in ``followed``
        as a step's are (one that did not run is missing: the caller runs it on its own).

        Every follow-up is idempotent: on a lost connection the whole chain is sent again."""
        self.followed = {}
        transport = self.connected
        if not then or not hasattr(transport, "run_chain"):
            return self.read_boot()
        calls = [(get_script("boot-info"), {"RunId": self.ctx.run_id, "RebootRequiredIfPending": True})]
        calls += [(get_script(follow.name), {**follow.params, "RunId": self.ctx.run_id}) for follow in then]
        budget = self.options.reboot.probe_timeout + sum(script.meta.timeout * self.options.time_scale
                                                         for script, _ in calls[1:])
        timeout = max(5.0, min(budget, self.time_left))

        def reset_if_lost(error: BaseException) -> None:
            if isinstance(error, TransportError) and error.kind in ("lost", "unreachable"):
                transport.reset()

        for tries in retrying(tries=STEP_RETRIES + 1, when=lambda e: isinstance(e, TransportError) and e.transient,
                              between=reset_if_lost):
            with tries:
                try:
                    results = transport.run_chain(calls, timeout=timeout)
                finally:
                    self._note_session()
        boot = results[0].facts.get("last_boot_utc")
        if results[0].exit_code != 0 or not isinstance(boot, str):
            raise TransportError("protocol", f"{self.name}: boot-info gave no boot time (exit {results[0].exit_code})")
        pending = results[0].facts.get("pending_reboot") or []
        self._followed(then, results[1:])
        return boot, [str(p) for p in pending] if isinstance(pending, list) else []

    def _recover(self, label: str, lost: TransportError) -> bool:
        """After a lost connection: a fresh one, once the host answers again; True if it restarted meanwhile."""
        transport = self.connected
        if lost.kind == "fault":  # the host said "busy" (a quota, an operation timeout): same connection, a moment later
            self.message("warning", f"{label}: {lost}; trying again")
            time.sleep(min(self.options.reboot.poll_interval, 1.0))
            return False
        transport.reset()
        self.message("warning", f"{label}: {lost.kind} ({lost}); trying again on a fresh connection")
        try:
            boot = self.read_boot()[0]
        except TransportError as probe:
            if probe.kind in ("auth", "tls", "config") or self.boot_seen is None:
                raise  # never reached in this run: it is down, not restarting
            transport.reset()
            silent_since = time.strftime("%H:%M:%S")
            self.message("warning", f"no answer since {silent_since}; waiting up to "
                         f"{self.options.no_answer_timeout:.0f} s for {label}'s host")
            try:
                boot = wait_until_back(transport, run_id=self.ctx.run_id, boot_before=_NO_BOOT,
                                       settings=self.options.reboot.within(self.options.no_answer_timeout))
            except RebootError:
                # Not a restart we know of: a host that stopped answering (said as such, not as a restart).
                raise TransportError("unreachable", f"{self.name}: no answer since {silent_since} "
                                     f"({self.options.no_answer_timeout:.0f} s) during {label}") from None
        rebooted = self.boot_seen is not None and boot != self.boot_seen
        if rebooted:
            self.message("warning", f"the host restarted during {label} (boot {self.boot_seen} -> {boot})")
        self.boot_seen = boot
        return rebooted


def iso_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
