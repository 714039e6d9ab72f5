"""One host's walk through its plan: diagnose, gates, verify, the ladder, reboots and restores.

A HostJob talks to its host through one transport and to the rest of the run only through
a ``HostContext``: events out, artifacts out, cancellation and reboot slots in.  That is
what lets the same walk run on a controller thread or on a Dask worker in another site.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from . import events as ev
from .inventory import HostConfig
from .journal import HostProgress
from .options import RunOptions
from .plan import RESTORES, HostPlan, PlannedStep, is_done, plan_host, rung_params
from .reboot import RebootError, read_boot, reboot, wait_until_back
from .report import render_transcript, safe_name, transcript_name
from .contract.scripts import StepScript, get_script, sha256_text
from .transport import open_transport
from .contract import StepResult, StreamRecord
from .transport.base import Transport, TransportError
from .window import in_window

# Outcomes a host ends with (report.json, the live view, the exit code).
HEALTHY, REPAIRED = "healthy", "repaired"
ROLE_FACTS = {"domain_controller": "domain-controller", "cluster_node": "cluster-node", "hyperv_host": "hyperv-host"}
_HEX = re.compile(r"0x[0-9A-Fa-f]{8}")
STEP_RETRIES = 4  # fresh connections an idempotent step gets after losing its own (a flaky network loses several)
_NO_BOOT = "(unknown)"  # a boot time no host reports: wait_until_back returns the first one it reads


class HostContext(Protocol):
    """What a HostJob needs from the run it belongs to."""

    run_id: str
    options: RunOptions

    def emit(self, kind: str, host: str | None = None, step: str | None = None, **data: Any) -> None: ...

    def write_artifact(self, relative: str, text: str) -> None:
        """A file under the run dir (a transcript, a log tail), wherever the controller keeps it."""
        ...

    @property
    def cancelled(self) -> bool: ...

    def take_orphans(self, host: str) -> list[str]:
        """Pools/shells a stopped controller left open on this host (each handed out once)."""
        ...

    def reboot_slots(self, host: HostConfig) -> AbstractContextManager[None]:
        """Held while the host restarts: at most reboot_group_cap hosts of a group at once."""
        ...


class Cancelled(Exception):
    """The run was interrupted: stop starting work, run owed restores, leave detached steps running."""


class HostFailed(Exception):
    def __init__(self, outcome: str, cause: str) -> None:
        super().__init__(cause)
        self.outcome = outcome
        self.cause = cause


class HostJob:
    """One host's walk through its plan, on one worker thread."""

    def __init__(self, ctx: HostContext, host: HostConfig, progress: HostProgress | None) -> None:
        self.ctx = ctx
        self.host = host
        self.name = host.name
        self.options = ctx.options
        self.progress = progress
        self.transport: Transport | None = None
        self.attempts: dict[str, int] = {}
        self.ran_ok: set[str] = set()
        self.ran_order: list[str] = []  # repair rungs that succeeded, in the order they ran
        self.reboots = progress.reboots if progress else 0
        self.owed: list[str] = list(progress.owed) if progress else []
        self.roles: set[str] = set()
        self._session: str | None = None
        self.boot_seen: str | None = None  # the host's boot time as last read: a change means it restarted
        self.deadline = time.monotonic() + self.options.host_timeout
        self.reattach = {progress.interrupted_step} if progress and progress.interrupted_step else set()
        # Rungs that succeeded before the controller stopped are not run again on resume, except
        # the pausing ones: their owed restore runs first and undoes them.
        self.done_before = {s for s in progress.ok_steps if s not in RESTORES} if progress else set()

    def emit(self, kind: str, step: str | None = None, **data: Any) -> None:
        self.ctx.emit(kind, self.name, step, **data)

    def message(self, level: str, text: str) -> None:
        self.emit(ev.HOST_MESSAGE, level=level, text=text)

    # --- life of a host -----------------------------------------------------------------
    def run(self) -> tuple[str, str]:
        self.emit(ev.HOST_STARTED, address=self.host.address, transport=self.host.transport, groups=list(self.host.groups),
                  resumed=self.progress is not None)
        outcome, cause = "failed", "unknown"
        locked = False
        try:
            self.transport = open_transport(self.host, self.options.transport)
            if self.options.command == "plan":
                outcome, cause = self._plan_only()
            elif self.options.command == "check":
                outcome, cause = self._check()
            else:
                self._settle_interrupted_reboot()
                locked = self._lock("take")
                self._pay_owed_now()  # on resume: restores owed by the stopped controller run first
                outcome, cause = self._repair()
        except HostFailed as failure:
            outcome, cause = failure.outcome, failure.cause
        except Cancelled:
            outcome, cause = "interrupted", "interrupted by the operator"
        except TransportError as exc:
            outcome = "unreachable" if exc.kind in ("unreachable", "auth", "tls") else "failed"
            cause = str(exc)
        except RebootError as exc:
            outcome, cause = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - one host's bug must not stop the others
            outcome, cause = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            outcome, cause = self._pay_owed(outcome, cause)
            if outcome in ("failed", "needs-operator") and self.transport is not None and self.options.command == "repair":
                self._collect_logs()
            if locked:
                try:
                    self._lock("release")
                except (TransportError, HostFailed, Cancelled):
                    self.message("warning", "could not release the host lock; it expires on its own")
            if self.transport is not None:
                session = self.transport.session_id
                self.transport.close()
                if session:
                    self.emit(ev.HOST_MESSAGE, level="debug", text=f"session {session} closed", session_closed=session)
        self.emit(ev.HOST_FINISHED, outcome=outcome, cause=cause, steps_run=sum(self.attempts.values()),
                  reboots=self.reboots)
        return outcome, cause

    def _collect_logs(self) -> None:
        """Bounded tails of CBS.log, dism.log and the update client's log, kept for a host that did not end well."""
        try:
            result = self.step("collect-logs", {}, reason="keep the host's logs for the report")
        except (TransportError, HostFailed, Cancelled):
            return  # the host is gone or the run is stopping: the report already says why
        logs = result.facts.get("logs")
        if not isinstance(logs, dict):
            return
        for name, log in logs.items():
            if isinstance(log, dict) and isinstance(log.get("text"), str):
                self.ctx.write_artifact(f"logs/{safe_name(self.name)}/{safe_name(str(name))}", log["text"])

    def _settle_interrupted_reboot(self) -> None:
        """The stopped controller had asked for a restart: wait for that boot before anything else."""
        flight = self.progress.reboot_in_flight if self.progress else None
        if not flight or not flight.get("boot_before"):
            return
        assert self.transport is not None
        try:
            boot = wait_until_back(self.transport, run_id=self.ctx.run_id, boot_before=str(flight["boot_before"]),
                                   settings=self.options.reboot)
        except RebootError as exc:
            self.emit(ev.REBOOT_FINISHED, ok=False, duration=0.0, boot_after=None, message=str(exc))
            raise HostFailed("failed", str(exc)) from None
        self.reboots += 1
        self.emit(ev.REBOOT_FINISHED, ok=True, duration=0.0, boot_after=boot, message="back (restart begun before resume)")

    def _lock(self, action: str) -> bool:
        result = self.step("lock", {"Action": action}, reason=f"{action} the per-host lock")
        if action == "take" and result.exit_code == 4:
            raise HostFailed("failed", f"another run holds the host lock: {'; '.join(result.messages)[:200]}")
        if result.exit_code not in (0,):
            raise HostFailed("failed", f"lock {action} failed (exit {result.exit_code})")
        return True

    def _plan_only(self) -> tuple[str, str]:
        facts = self.diagnose("what the plan is based on").facts
        plan = plan_host(self.host, facts)
        self.emit(ev.HOST_MESSAGE, level="info", text=_plan_text(plan), plan=plan.as_dict())
        return "planned", _plan_text(plan)

    def _check(self) -> tuple[str, str]:
        facts = self.diagnose("prevention report").facts
        findings = prevention_findings(facts)
        for finding in findings:
            self.message("warning", finding)
        return ("checked", "; ".join(findings) or "nothing to report")

    def _repair(self) -> tuple[str, str]:
        self.boot_seen = self._read_boot()[0]
        facts = self.diagnose("baseline").facts
        self.roles = {role for key, role in ROLE_FACTS.items() if (facts.get("roles") or {}).get(key)}
        plan = plan_host(self.host, facts)
        self.emit(ev.HOST_MESSAGE, level="info", text=_plan_text(plan), plan=plan.as_dict())
        for gate in plan.gates:
            if gate.rung in self.done_before:
                self.ran_ok.add(gate.rung)
                self.ran_order.append(gate.rung)
                continue
            self.rung(gate)
        verify = self.verify("baseline")
        if verify.exit_code == 7:
            return "needs-operator", _network_cause(verify, plan)
        verify_ok = verify.exit_code == 0
        stop_reason = ""
        for rung in plan.ladder:
            if verify_ok and is_done(plan, self.ran_ok):
                break
            if verify_ok and not rung.required:
                continue
            if plan.operator_issue and not rung.required:
                continue  # only what the findings demand; the rest is the operator's
            if rung.rung in self.done_before:
                self.ran_ok.add(rung.rung)
                self.ran_order.append(rung.rung)
                continue
            result = self.rung(rung)
            if result.exit_code == 6:
                stop_reason = _needs_source_cause(rung, result)
                break
            if result.exit_code == 4:
                stop_reason = f"{rung.script} refused: host busy ({'; '.join(result.messages)[:200]})"
                break
            self.diagnose(f"after {rung.rung}")
            verify = self.verify(f"after {rung.rung}")
            if verify.exit_code == 7:
                return "needs-operator", _network_cause(verify, plan)
            verify_ok = verify.exit_code == 0
        self._pay_owed_now()
        pending = self._pending_reboot()
        if pending:
            self.reboot_host(f"pending reboot after repairs ({', '.join(pending)})")
        if stop_reason:
            return "needs-operator", stop_reason
        if plan.operator_issue:
            return "needs-operator", plan.operator_issue
        if not verify_ok:
            return "failed", f"updates still fail after the whole ladder: {_verify_cause(verify)}"
        if not is_done(plan, self.ran_ok):
            missing = [s.rung for s in plan.steps if s.required and s.rung not in self.ran_ok]
            return "failed", f"required steps did not succeed: {', '.join(missing)}"
        if self.ran_order:
            *tried, last = self.ran_order
            return REPAIRED, f"repaired by {last}" + (f" (after {', '.join(tried)})" if tried else "")
        return HEALTHY, "verify passed; nothing to repair"

    # --- steps --------------------------------------------------------------------------
    def rung(self, planned: PlannedStep) -> StepResult:
        if planned.rung == "restart":
            self.reboot_host(planned.reason)
            self.ran_ok.add("restart")
            self.ran_order.append("restart")
            return _synthetic(self.name, "restart", 0)
        params = rung_params(planned.rung, self.host)
        result = self.step(planned.script, params, reason=planned.reason, label=planned.rung)
        if result.exit_code in (0, 3010):
            self.ran_ok.add(planned.rung)
            self.ran_order.append(planned.rung)
            if planned.script in RESTORES:
                self.owed.append(RESTORES[planned.script])
        if result.reboot_required:
            self.reboot_host(f"{planned.rung} asked for a restart")
        return result

    def diagnose(self, reason: str) -> StepResult:
        params = {"ControllerUtc": _iso_now()}
        result = self.step("diagnose", params, reason=reason)
        if result.exit_code != 0 or not result.facts:
            raise HostFailed("failed", f"diagnose failed (exit {result.exit_code}): "
                             + "; ".join(result.messages or result.errors)[:300])
        return result

    def verify(self, reason: str) -> StepResult:
        return self.step("verify", {}, reason=reason)

    def step(self, name: str, params: dict[str, Any], *, reason: str, label: str | None = None) -> StepResult:
        """Run one script (detached when its header says so), with its events and transcript.

        A connection lost under an idempotent step is survived: on a fresh connection the step
        runs again in place (a detached one is re-attached to); if the host restarted under it,
        the attempt is reported interrupted and the step runs once more after the host is back.
        """
        self._check_time(name)
        script = get_script(name)
        label = label or name
        attempt = self.attempts.get(label, 0) + 1
        self.attempts[label] = attempt
        params = {**params, "RunId": self.ctx.run_id}  # the run id is wuremote's, never an option's
        self.emit(ev.STEP_STARTED, label, attempt=attempt, reason=reason, idempotent=script.meta.idempotent,
                  detached=script.meta.detached)
        losses = 0
        restarted_under = False
        while True:
            try:
                if script.meta.detached:
                    result = self._detached(script, params, label, reattach=label in self.reattach or losses > 0)
                    self.reattach.discard(label)
                else:
                    result = self.transport_run(script, params, label)
                break
            except TransportError as exc:
                losses += 1
                if not (exc.transient and script.meta.idempotent and losses <= STEP_RETRIES):
                    self._finished(label, attempt, None, error=str(exc), error_kind=exc.kind)
                    raise
                try:
                    rebooted = self._recover(label, exc)
                except (TransportError, RebootError) as gone:
                    self._finished(label, attempt, None, error=f"{exc}; then {gone}", error_kind=exc.kind)
                    raise HostFailed("unreachable" if isinstance(gone, TransportError) else "failed", str(gone)) from None
                if rebooted:
                    self._finished(label, attempt, None, error=f"the host restarted during {label}",
                                   error_kind="interrupted")
                    if restarted_under:
                        raise HostFailed("failed", f"{label}: the host restarted under it twice; not tried again")
                    restarted_under = True
                    attempt = self.attempts[label] = attempt + 1
                    self.emit(ev.STEP_STARTED, label, attempt=attempt,
                              reason=f"{reason} (again: the host restarted under it)",
                              idempotent=script.meta.idempotent, detached=script.meta.detached)
            except Cancelled:
                self._finished(label, attempt, None, error="interrupted by the operator; a detached step keeps running",
                               error_kind="interrupted")
                raise
            except HostFailed as exc:
                self._finished(label, attempt, None, error=exc.cause, error_kind="failed")
                raise
            except Exception as exc:
                self._finished(label, attempt, None, error=f"internal error: {type(exc).__name__}: {exc}",
                               error_kind="internal")
                raise
        self._finished(label, attempt, result)
        return result

    def _read_boot(self) -> tuple[str, list[str]]:
        """boot-info (read-only), sent once more on a fresh connection if the first try is lost."""
        assert self.transport is not None
        for tries_left in range(STEP_RETRIES, -1, -1):
            try:
                return read_boot(self.transport, self.ctx.run_id, self.options.reboot.probe_timeout)
            except TransportError as exc:
                if not exc.transient or tries_left == 0:
                    raise
                if exc.kind in ("lost", "unreachable"):
                    self.transport.reset()  # a transient fault leaves the pool/shell usable
        raise AssertionError("unreachable")  # the loop returns or raises

    def _recover(self, label: str, lost: TransportError) -> bool:
        """After a lost connection: a fresh one, once the host answers again; True if it restarted meanwhile."""
        assert self.transport is not None
        if lost.kind == "fault":  # the host said "busy" (a quota, an operation timeout): same connection, a moment later
            self.message("warning", f"{label}: {lost}; trying again")
            time.sleep(min(self.options.reboot.poll_interval, 1.0))
            return False
        self.transport.reset()
        self.message("warning", f"{label}: {lost.kind} ({lost}); trying again on a fresh connection")
        try:
            boot = self._read_boot()[0]
        except TransportError as probe:
            if probe.kind in ("auth", "tls", "config") or self.boot_seen is None:
                raise  # never reached in this run: it is down, not restarting
            self.transport.reset()
            boot = wait_until_back(self.transport, run_id=self.ctx.run_id, boot_before=_NO_BOOT,
                                   settings=self.options.reboot)
        rebooted = self.boot_seen is not None and boot != self.boot_seen
        if rebooted:
            self.message("warning", f"the host restarted during {label} (boot {self.boot_seen} -> {boot})")
        self.boot_seen = boot
        return rebooted

    def transport_run(self, script: StepScript, params: dict[str, Any], label: str) -> StepResult:
        assert self.transport is not None
        timeout = max(5.0, script.meta.timeout * self.options.time_scale)
        try:
            return self.transport.run_step(script, params, timeout=timeout, on_stream=self._on_stream(label))
        finally:
            self._note_session()

    def _note_session(self) -> None:
        """Journal each pool/shell id the host gives us, so a resumed run can delete what a dead one left."""
        assert self.transport is not None
        session = self.transport.session_id
        if session and session != self._session:
            self._session = session
            self.emit(ev.HOST_MESSAGE, level="debug", text=f"session {session} opened", session=session)
            self._close_orphans()

    def _close_orphans(self) -> None:
        assert self.transport is not None
        for session in self.ctx.take_orphans(self.name):
            try:
                gone = self.transport.close_orphan(session)
            except TransportError as exc:
                self.message("warning", f"could not delete session {session} left by the stopped run: {exc}")
                continue
            self.emit(ev.HOST_MESSAGE, level="info", session_closed=session,
                      text=f"deleted session {session} left open by the stopped run" if gone
                      else f"session {session} of the stopped run was already gone")

    def _on_stream(self, label: str) -> Callable[[StreamRecord], None]:
        def on_stream(record: StreamRecord) -> None:
            if record.stream == "progress":
                match = re.match(r"\s*(\d{1,3})%\s*(.*)", record.text)
                if match:
                    self.emit(ev.STEP_PROGRESS, label, percent=int(match.group(1)), message=match.group(2)[:120])
        return on_stream

    def _finished(self, label: str, attempt: int, result: StepResult | None, *, error: str | None = None,
                  error_kind: str | None = None) -> None:
        relative = transcript_name(self.name, label, attempt)
        self.ctx.write_artifact(relative, render_transcript(result, host_transcript=None, error=error))
        if result is None:
            self.emit(ev.STEP_FINISHED, label, exit_code=None, status="error", duration=0.0, hresults=[],
                      messages=[error or ""], changes=[], facts={}, reboot_required=False, error_kind=error_kind,
                      transcript=relative)
            return
        facts = result.facts if label == "diagnose" else _small_facts(result.facts)
        self.emit(ev.STEP_FINISHED, label, exit_code=result.exit_code, status=result.status,
                  duration=round(result.duration, 3), hresults=_hresults(result), messages=result.messages[:20],
                  changes=result.changes[:50], facts=facts, reboot_required=result.reboot_required,
                  error_kind=None, transcript=relative)

    def _detached(self, script: StepScript, params: dict[str, Any], label: str, *, reattach: bool) -> StepResult:
        """Start (or re-attach to) a scheduled-task step and poll it with short calls until it ends."""
        started = time.time()
        payload = script.payload()
        body_params = {k: v for k, v in params.items() if k != "RunId"}
        start_params = {"Step": script.meta.name, "Payload": payload, "PayloadSha256": sha256_text(payload),
                        "ParametersJson": json.dumps(body_params), "Restart": not reattach}
        streams: list[StreamRecord] = []
        interrupted_once = False
        while True:
            start = self.transport_run(get_script("detached-start"), {"RunId": params["RunId"], **start_params},
                                       "detached-start")
            streams.extend(start.streams)
            if start.exit_code != 0:
                return StepResult(self.name, script.meta.name, start.exit_code, start.result, streams, start.errors,
                                  started, time.time() - started)
            state, poll = self._poll_until_done(script, params["RunId"], streams)
            if state == "interrupted" and not interrupted_once:
                interrupted_once = True
                self.message("warning", f"{label} was interrupted (the host restarted); starting it once more")
                start_params["Restart"] = True
                continue
            break
        facts = poll.facts if poll else {}
        exit_code = facts.get("exit_code")
        body = facts.get("result") if isinstance(facts.get("result"), dict) else None
        if state != "finished" or not isinstance(exit_code, int):
            exit_code = 1
            body = {"status": "interrupted", "messages": [f"{label} was interrupted twice; not retried again"]}
        try:
            self.transport_run(get_script("detached-cleanup"), {"RunId": params["RunId"], "Step": script.meta.name},
                               "detached-cleanup")
        except TransportError:
            self.message("warning", f"could not remove the finished {label} task; it is removed on the next run")
        result = StepResult(self.name, script.meta.name, exit_code, body, streams, [], started, time.time() - started)
        return result

    def _poll_until_done(self, script: StepScript, run_id: str,
                         streams: list[StreamRecord]) -> tuple[str, StepResult | None]:
        deadline = time.monotonic() + max(30.0, script.meta.timeout * self.options.time_scale)
        offset = 0
        last: StepResult | None = None
        last_percent = -1
        interval = min(0.25, self.options.poll_interval)  # short steps end quickly; long ones are polled less
        while True:
            if self.ctx.cancelled:
                raise Cancelled()
            if time.monotonic() > deadline:
                raise HostFailed("failed", f"{script.meta.name} still running after its timeout; left running on the host "
                                 f"(task wuremote-{run_id}-{script.meta.name}); nothing was stopped")
            time.sleep(interval)
            interval = min(interval * 1.5, self.options.poll_interval)
            try:
                poll = self.transport_run(get_script("detached-poll"),
                                          {"RunId": run_id, "Step": script.meta.name, "TranscriptOffset": offset},
                                          "detached-poll")
            except TransportError as exc:
                if exc.kind in ("auth", "tls"):
                    raise
                assert self.transport is not None
                self.transport.reset()  # re-attach on a fresh connection; the task runs on
                continue
            last = poll
            facts = poll.facts
            text = facts.get("transcript")
            if isinstance(text, str) and text:
                streams.append(StreamRecord(time.time(), "host-transcript", text))
            next_offset = facts.get("transcript_next_offset")
            if isinstance(next_offset, int) and next_offset >= offset:
                offset = next_offset
            percent = facts.get("percent")
            if isinstance(percent, int) and percent != last_percent:
                last_percent = percent
                self.emit(ev.STEP_PROGRESS, script.meta.name, percent=percent, message=str(facts.get("state", "")))
            state = str(facts.get("state") or "")
            if poll.exit_code == 2:
                return "missing", poll
            if state in ("finished", "interrupted"):
                return state, last

    # --- reboots and restores -----------------------------------------------------------
    def reboot_host(self, reason: str) -> None:
        if self.host.reboot == "never":
            raise HostFailed("needs-operator", f"a restart is needed ({reason}) but the inventory says reboot = never")
        if self.host.reboot == "window" and not in_window(self.host.maintenance_window, dt.datetime.now()):
            raise HostFailed("needs-operator", f"a restart is needed ({reason}) outside the maintenance window "
                             f"{self.host.maintenance_window}")
        blocked = sorted(self.roles - set(self.host.allow_reboot_roles))
        if blocked:
            raise HostFailed("needs-operator", f"a restart is needed ({reason}) but this host is a {blocked[0]}; "
                             f"add it to allow_reboot_roles to let wuremote restart it")
        if self.reboots >= self.host.max_reboots:
            raise HostFailed("failed", f"a restart is needed ({reason}) but the host already restarted "
                             f"{self.reboots} times (max_reboots)")
        if self.ctx.cancelled:
            raise Cancelled()
        with self.ctx.reboot_slots(self.host):
            assert self.transport is not None
            boot_before = read_boot(self.transport, self.ctx.run_id, self.options.reboot.probe_timeout)[0]
            self.emit(ev.REBOOT_STARTED, reason=reason, boot_before=boot_before)
            self.reboots += 1
            try:
                outcome = reboot(self.transport, run_id=self.ctx.run_id, reason=f"wuremote: {reason}",
                                 settings=self.options.reboot, boot_before=boot_before)
            except RebootError as exc:
                self.emit(ev.REBOOT_FINISHED, ok=False, duration=0.0, boot_after=None, message=str(exc))
                raise HostFailed("failed", str(exc)) from None
            self.boot_seen = outcome.boot_after
            self.emit(ev.REBOOT_FINISHED, ok=True, duration=round(outcome.duration, 3), boot_after=outcome.boot_after,
                      message=f"back after {outcome.back_after:.1f} s")

    def _pending_reboot(self) -> list[str]:
        return self._read_boot()[1]

    def _pay_owed_now(self) -> None:
        while self.owed:
            restore = self.owed[0]
            result = self.step(restore, {}, reason="owed restore")
            if result.exit_code not in (0, 3010, 2):
                raise HostFailed("failed", f"{restore} failed (exit {result.exit_code}): {'; '.join(result.messages)[:200]}; "
                                 "the on-host fail-safe restores by its deadline")
            self.owed.pop(0)
            if result.reboot_required:
                self.reboot_host(f"{restore} put services back")

    def _pay_owed(self, outcome: str, cause: str) -> tuple[str, str]:
        """On every path out: run owed restores, even after a failure or Ctrl-C."""
        if not self.owed:
            return outcome, cause
        try:
            if self.transport is None:
                raise HostFailed("failed", "no connection")
            self._pay_owed_now()
        except (TransportError, HostFailed, RebootError, Cancelled) as exc:
            return "failed", f"{cause}; owed {', '.join(self.owed)} did not run ({exc}); the on-host fail-safe restores by its deadline"
        return outcome, cause

    def _check_time(self, step: str) -> None:
        if time.monotonic() > self.deadline:
            raise HostFailed("failed", f"host timeout ({self.options.host_timeout:.0f} s) reached before {step}")
        if self.ctx.cancelled and step not in RESTORES.values() and step not in ("lock", "boot-info", "restart"):
            raise Cancelled()


# --- pure helpers -----------------------------------------------------------------------
def _iso_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def prevention_findings(facts: dict[str, Any]) -> list[str]:
    """What `wuremote check` reports: the recipe's prevention advice, host by host."""
    findings = []
    disk = facts.get("disk") or {}
    if disk.get("low"):
        findings.append(f"low disk: {(disk.get('free_bytes') or 0) / 2**30:.1f} GB free (keep 15-20 GB)")
    skew = (facts.get("clock") or {}).get("skew_seconds")
    if isinstance(skew, (int, float)) and abs(skew) > 120:
        findings.append(f"clock {skew:+.0f} s off")
    pending = facts.get("pending_reboot") or []
    if pending:
        findings.append(f"reboot pending: {', '.join(pending)}")
    source = facts.get("update_source") or {}
    if source.get("kind") == "wsus":
        findings.append(f"updates from WSUS {source.get('wsus_server')}")
    failures = facts.get("update_failures") or []
    if failures:
        newest = failures[0]
        findings.append(f"last update failure {newest.get('hresult')} at {newest.get('time_utc')}")
    shutdowns = facts.get("unexpected_shutdowns_30d") or 0
    if shutdowns:
        findings.append(f"{shutdowns} unexpected shutdown(s) in 30 days")
    return findings


def _plan_text(plan: HostPlan) -> str:
    steps = [s.rung + ("*" if s.required else "") for s in plan.steps]
    text = "plan: " + (" -> ".join(steps) if steps else "verify only")
    if plan.blocker:
        text += f" (if verify confirms: {plan.blocker})"
    if plan.operator_issue:
        text += f" (operator: {plan.operator_issue})"
    return text


def _hresults(result: StepResult) -> list[str]:
    """Failure HRESULTs a step reported (severity bit set); success codes such as 0x00000BC2 are not news."""
    found: list[str] = []
    for source in (json.dumps(result.facts), " ".join(result.messages)):
        for code in _HEX.findall(source):
            code = "0x" + code[2:].upper()
            if int(code, 16) & 0x80000000 and code not in found:
                found.append(code)
    return found


def _small_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """A step's facts for the journal, without bulky payloads (transcripts, echoed results)."""
    return {k: v for k, v in facts.items() if k not in ("transcript", "result") and len(json.dumps(v, default=str)) < 4000}


def _verify_cause(verify: StepResult) -> str:
    codes = _hresults(verify)
    return f"verify exit {verify.exit_code}" + (f" ({', '.join(codes)})" if codes else "")


def _network_cause(verify: StepResult, plan: HostPlan) -> str:
    return plan.blocker or f"cannot reach the update server: {_verify_cause(verify)}; fix the network, proxy or WSUS"


def _needs_source_cause(rung: PlannedStep, result: StepResult) -> str:
    if rung.script == "dism":
        return "DISM needs a repair source (0x800F081F): set dism_source to install media of the same build"
    return f"{rung.rung}: {'; '.join(result.messages)[:200] or 'run dism first'}"


def _synthetic(host: str, step: str, exit_code: int) -> StepResult:
    return StepResult(host, step, exit_code, {"status": "ok", "facts": {}, "messages": []})
