"""One host's walk through its plan: diagnose, gates, verify, the ladder, reboots and restores.

Only the decisions live here: which rung next, when to stop, what the outcome is.  Running a
step (events, transcript, lost connections) is wuremote/engine/steps.py; a long step's
start/poll/cleanup is detached.py; a restart is reboot.py; owed restores are ledger.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from pathlib import Path
from typing import Any

from .. import events as ev
from ..contract import ExitCode, Outcome, StepResult, hresult
from ..contract.steps import OPT_IN_STEPS, RESTORES
from ..contract.updates import MAX_INSTALL_ROUNDS, OperationResultCode
from ..inventory import HostConfig
from ..store.rundir import logs_name
from ..transport.base import TransportError
from . import packages
from .context import Cancelled, HostContext, HostFailed
from .findings import (
    bound_skew,
    needs_source_cause,
    network_cause,
    pending_findings,
    prevention_findings,
    problems_of,
    verify_cause,
)
from .ledger import Ledger
from .options import RunOptions
from .plan import GATES, LADDER, HostPlan, PlannedStep, install_params, install_rung, is_done, plan_host, rung_params
from .progress import HostProgress
from .reboot import RebootError, read_boot, reboot, reboot_refusal, wait_until_back
from .steps import FollowUp, StepRunner, iso_now

RUNGS = frozenset(LADDER) | frozenset(GATES)  # what "repaired by" can name
# The host lock's lease outlives the longest a host may be worked on (--host-timeout) by this
# margin, so a live controller never loses it; it is renewed as each rung begins besides.
LEASE_MARGIN_MINUTES = 30
LEASE_MAX_MINUTES = 10080  # lock.ps1's ExpiresMinutes range
# Restores left owed between the repair and the install (see HostWalk._repair): the antivirus
# that blocked downloads until paused stays paused while the updates download.
KEPT_FOR_INSTALL = frozenset({RESTORES["av-pause"]})
ROLE_FACTS = {"domain_controller": "domain-controller", "cluster_node": "cluster-node", "hyperv_host": "hyperv-host"}


class HostWalk:
    """One host's walk through its plan, on one worker thread (or Dask worker)."""

    def __init__(self, ctx: HostContext, host: HostConfig, progress: HostProgress | None) -> None:
        self.ctx = ctx
        self.host = host
        self.name = host.name
        self.options = ctx.options
        self.policy = host.policy
        self.progress = progress
        self.ledger = Ledger(list(progress.owed)) if progress else Ledger()
        # Detached steps the stopped controller left on the host: re-attached, never started twice.
        reattach = set(progress.detached_open) if progress else set()
        self.steps = StepRunner(ctx, host, self.ledger, reattach)
        # The outcome folds the whole run: rungs that succeeded before a stop count (and are not
        # run again), so a host fixed before the kill ends "repaired by" what fixed it.
        self.ran_order: list[str] = [s for s in progress.ok_steps if s in RUNGS] if progress else []
        self.ran_ok: set[str] = set(self.ran_order)
        self.done_before = set(self.ran_order)
        self.reboots = progress.reboots if progress else 0
        self.roles: set[str] = set()
        self.facts: dict[str, Any] = {}  # the last diagnose's
        self.rungs_begun = 0  # rungs started in this walk: each after the first renews the host lock first
        self.locked = False  # this run holds the host lock: released on the way out
        self.logs_kept = False  # collect-logs already ran (in the last pending check's pipeline)

    def emit(self, event: ev.Event) -> None:
        self.ctx.emit(event)

    # --- life of a host -----------------------------------------------------------------
    def run(self) -> tuple[Outcome, str]:
        self.emit(ev.HostStarted(self.ctx.run_id, self.name, address=self.host.address, transport=self.host.transport,
                                 groups=list(self.host.groups), resumed=self.progress is not None))
        outcome, cause = Outcome.FAILED, "unknown"
        try:
            self.steps.open()
            if self.options.command == "plan":
                outcome, cause = self._plan_only()
            elif self.options.command == "check":
                outcome, cause = self._check()
            else:
                self._settle_interrupted_reboot()
                # The boot time and the baseline diagnose travel with the lock where the transport can
                # chain, unless restores are owed (on resume they run first).
                start = () if self.ledger.owed else (FollowUp("boot-info", {}, "boot time", quiet=True),
                                                     FollowUp("diagnose", {"ControllerUtc": iso_now()}, "baseline"))
                self.locked = self._lock("take", then=start)
                started = dict(self.steps.followed)
                self._pay_owed_now()  # on resume: restores owed by the stopped controller run first
                outcome, cause = self._repair(started)
        except HostFailed as failure:
            outcome, cause = failure.outcome, failure.cause
        except Cancelled:
            outcome, cause = Outcome.INTERRUPTED, "interrupted by the operator"
        except TransportError as exc:
            outcome = Outcome.UNREACHABLE if exc.kind in ("unreachable", "auth", "tls") else Outcome.FAILED
            cause = str(exc)
        except RebootError as exc:
            outcome, cause = Outcome.FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 - one host's bug must not stop the others
            outcome, cause = Outcome.FAILED, f"internal error: {type(exc).__name__}: {exc}"
        finally:
            answering = outcome is not Outcome.UNREACHABLE  # a silent host is not waited for again
            outcome, cause = self._pay_owed(outcome, cause) if answering else (outcome, self._owed_left(cause))
            repairing = self.options.command == "repair"
            if outcome in _LOGGED and self.steps.transport is not None and repairing and not self.logs_kept:
                self._collect_logs()
            if self.locked and answering:
                try:
                    self._lock("release")
                except (TransportError, HostFailed, Cancelled):
                    self.steps.message("warning", "could not release the host lock; it expires on its own")
            self.steps.close()
        self.emit(ev.HostFinished(self.ctx.run_id, self.name, outcome=outcome, cause=cause,
                                  steps_run=self.steps.steps_run, reboots=self.reboots))
        return outcome, cause

    def _collect_logs(self) -> None:
        """Bounded tails of CBS.log, dism.log and the update client's log, kept for a host that did not end well."""
        try:
            result = self.steps.step("collect-logs", {}, reason=_LOGS_REASON)
        except (TransportError, HostFailed, Cancelled):
            return  # the host is gone or the run is stopping: the report already says why
        self._keep_logs(result)

    def _keep_logs(self, result: StepResult) -> None:
        self.logs_kept = True
        logs = result.facts.get("logs")
        if not isinstance(logs, dict):
            return
        for name, log in logs.items():
            if isinstance(log, dict) and isinstance(log.get("text"), str):
                self.ctx.write_artifact(logs_name(self.name, str(name)), log["text"])

    def _settle_interrupted_reboot(self) -> None:
        """The stopped controller had asked for a restart: wait for that boot before anything else."""
        flight = self.progress.reboot_in_flight if self.progress else None
        if flight is None or not flight.boot_before:
            return
        assert self.progress is not None
        try:
            boot = self.steps.read_boot()[0]
        except TransportError:
            boot = None  # down, or on its way back: wait for the new boot below
        if boot is not None and boot == flight.boot_before and not self.progress.reboot_requested:
            # The journal says the controller stopped before the restart went out: nothing to wait for.
            self.emit(ev.RebootFinished(self.ctx.run_id, self.name, ok=False,
                                        message="the restart was never sent (the controller stopped first); not waited for"))
            return
        try:
            if boot is None or boot == flight.boot_before:
                boot = wait_until_back(self.steps.connected, run_id=self.ctx.run_id, boot_before=flight.boot_before,
                                       settings=self.options.reboot)
        except RebootError as exc:
            self.emit(ev.RebootFinished(self.ctx.run_id, self.name, ok=False, message=str(exc)))
            raise HostFailed(Outcome.FAILED, str(exc)) from None
        self.reboots += 1
        if flight.rung and flight.rung not in self.ran_ok:  # the restart rung the stopped controller began is done
            self._ran(flight.rung)
            self.done_before.add(flight.rung)
        self.emit(ev.RebootFinished(self.ctx.run_id, self.name, ok=True, boot_after=boot,
                                    message="back (restart begun before resume)"))

    def _lock_params(self, action: str) -> dict[str, Any]:
        return {"Action": action, "Controller": self.ctx.controller, "ExpiresMinutes": lease_minutes(self.options)}

    def _lock(self, action: str, *, then: tuple[FollowUp, ...] = ()) -> bool:
        """Take, renew or release the host lock, which names this run and this controller instance."""
        result = self.steps.step("lock", self._lock_params(action), reason=f"{action} the per-host lock", then=then)
        return self._locked(action, result)

    def _locked(self, action: str, result: StepResult) -> bool:
        """What a lock step's result means for the walk: taken, renewed or released, else HostFailed."""
        if action == "take" and result.exit_code == ExitCode.REFUSED:
            # Not a failure of this host: it was never worked on (so no logs are collected either).
            raise HostFailed(Outcome.SKIPPED, _held_lock(result.facts.get("holder"), self.name))
        if action == "renew" and result.exit_code == ExitCode.REFUSED:
            raise HostFailed(Outcome.FAILED, "the host lock was taken by another controller while this run worked "
                             f"the host; stopped ({'; '.join(result.messages)[:200]})")
        if result.exit_code != ExitCode.OK:
            said = "; ".join(result.messages or result.errors)[:600]
            raise HostFailed(Outcome.FAILED, f"lock {action} failed (exit {result.exit_code})" + (f": {said}" if said else ""))
        return True

    def _planned(self, plan: HostPlan) -> None:
        self.emit(ev.HostPlanned(self.ctx.run_id, self.name, plan=plan.as_dict(), text=plan.text))

    def _plan_only(self) -> tuple[Outcome, str]:
        plan = plan_host(self.name, self.policy, self.diagnose("what the plan is based on").facts)
        self._note_package(plan)
        self._planned(plan)
        return Outcome.PLANNED, plan.text

    def _check(self) -> tuple[Outcome, str]:
        findings = prevention_findings(self.diagnose("prevention report").facts)
        if self.policy.install:  # check --install: what is pending in those categories, and since when
            search = self.steps.step("install-updates", {**install_params(self.policy), "SearchOnly": True},
                                     reason="updates pending (search only: nothing is installed)")
            findings += pending_findings(search, now=dt.datetime.now(dt.timezone.utc))
        for finding in findings:
            self.steps.message("warning", finding)
        if problems_of(findings):  # the check found something to act on: the run exits 1, the host fails in junit
            return Outcome.NEEDS_OPERATOR, "; ".join(findings)
        return Outcome.CHECKED, "; ".join(findings) or "nothing to report"

    def _repair(self, started: dict[str, StepResult]) -> tuple[Outcome, str]:
        """The repair, then the install when asked; ``started`` holds what ran in the lock's pipeline
        (boot-info, the baseline diagnose).

        When installing, a paused antivirus stays paused until the install is over (KEPT_FOR_INSTALL):
        the product that blocked the update agent's downloads until av-pause blocks the updates'
        downloads too (0x80070005) as soon as it is resumed, so resuming it between the repair and
        the install would turn the operator's opt-in into a certain failure.  The window stays
        bounded: the on-host fail-safe is armed (its deadline is extended before each install round),
        av-resume runs right after the last round, and on every other path out (a failure, a refusal,
        Ctrl-C, a lost host) the owed restore is paid as always (``_pay_owed``), or by the fail-safe.
        clean-boot is not kept: a third-party service it stopped is what makes installs fail
        (0x80070020) only while it runs, and the install climbs to clean-boot itself when that happens.
        """
        outcome, cause = self._repair_ladder(started)
        if outcome in (Outcome.HEALTHY, Outcome.REPAIRED) and self.policy.install:
            return self._install(cause)
        return outcome, cause

    def _repair_ladder(self, started: dict[str, StepResult]) -> tuple[Outcome, str]:
        boot = started.get("boot-info")
        last_boot = boot.facts.get("last_boot_utc") if boot is not None and boot.exit_code == ExitCode.OK else None
        self.steps.boot_seen = last_boot if isinstance(last_boot, str) else self.steps.read_boot()[0]
        facts = self.diagnose("baseline", chained=started.get("diagnose")).facts
        self.roles = {role for key, role in ROLE_FACTS.items() if (facts.get("roles") or {}).get(key)}
        plan = plan_host(self.name, self.policy, facts)
        self._note_package(plan)
        self._planned(plan)
        for gate in plan.gates:
            if not self._done_before(gate, verify_ok=False):
                self.rung(gate)
        verify = self.verify("baseline", plan)
        if verify.exit_code == ExitCode.UNREACHABLE_UPDATE_SERVER:
            return Outcome.NEEDS_OPERATOR, network_cause(verify, plan)
        verify_ok = verify.exit_code == ExitCode.OK
        stop_reason = ""
        for rung in plan.ladder:
            if verify_ok and is_done(plan, self.ran_ok):
                break
            if verify_ok and not rung.required:
                continue
            if plan.operator_issue and not rung.required:
                continue  # only what the findings demand; the rest is the operator's
            if self._done_before(rung, verify_ok=verify_ok):
                continue
            result = self.rung(rung, diagnose_after=True)
            if result.exit_code == ExitCode.NEEDS_REPAIR_FIRST:
                stop_reason = needs_source_cause(rung, result)
                break
            if result.exit_code == ExitCode.REFUSED:
                stop_reason = f"{rung.script} refused: host busy ({'; '.join(result.messages)[:200]})"
                break
            self.diagnose(f"after {rung.rung}", chained=self.steps.followed.get("diagnose"))
            verify = self.verify(f"after {rung.rung}", plan)
            if verify.exit_code == ExitCode.UNREACHABLE_UPDATE_SERVER:
                return Outcome.NEEDS_OPERATOR, network_cause(verify, plan)
            verify_ok = verify.exit_code == ExitCode.OK
        self._pay_owed_now(keep=KEPT_FOR_INSTALL if self.policy.install else frozenset())
        ending = self._ladder_outcome(plan, verify, verify_ok=verify_ok, stop_reason=stop_reason)
        installs = ending[0] in (Outcome.HEALTHY, Outcome.REPAIRED) and self.policy.install
        pending = self.steps.read_boot()[1] if installs else self._last_pending(ending[0])
        if pending:
            self.reboot_host(f"pending reboot after repairs ({', '.join(pending)})")
        return ending

    def _ladder_outcome(self, plan: HostPlan, verify: StepResult, *, verify_ok: bool,
                        stop_reason: str) -> tuple[Outcome, str]:
        """The ladder's outcome, unless the pending restart after it fails the host."""
        if stop_reason:
            return Outcome.NEEDS_OPERATOR, stop_reason
        if plan.operator_issue:
            return Outcome.NEEDS_OPERATOR, plan.operator_issue
        if not verify_ok:
            return Outcome.FAILED, f"updates still fail after the whole ladder: {verify_cause(verify)}"
        if not is_done(plan, self.ran_ok):
            missing = [s.rung for s in plan.steps if s.required and s.rung not in self.ran_ok]
            return Outcome.FAILED, f"required steps did not succeed: {', '.join(missing)}"
        if self.ran_order:
            return Outcome.REPAIRED, self._repaired_by()
        return Outcome.HEALTHY, "verify passed; nothing to repair"

    def _last_pending(self, ending: Outcome) -> list[str]:
        """The host's last pending-reboot check.  Over PSRP the host's logs (when it ends failed or
        needs-operator) and the lock's release travel in its pipeline; boot-info stops that pipeline when a
        restart is pending, so they run after the restart, as before, and the lock is held through both.
        Whatever did not run here runs on the way out (run's finally)."""
        then: tuple[FollowUp, ...] = ()
        if self.locked and not self.ctx.cancelled and self.steps.time_left > 0:
            logs = (FollowUp("collect-logs", {}, _LOGS_REASON),) if ending in _LOGGED else ()
            then = (*logs, FollowUp("lock", self._lock_params("release"), "release the per-host lock"))
        pending = self.steps.read_boot_then(then)[1]
        followed = self.steps.followed
        if "collect-logs" in followed:
            self._keep_logs(followed["collect-logs"])
        if "lock" in followed:
            self.locked = False
            if followed["lock"].exit_code != ExitCode.OK:
                self.steps.message("warning", "could not release the host lock; it expires on its own")
        return pending

    # --- installing -----------------------------------------------------------------------
    def _install(self, repaired: str) -> tuple[Outcome, str]:
        """Install the selected updates once updates work, as win_updates loops: install, restart when
        an update asks and the reboot policy allows, search again, until nothing selected is left
        (at most MAX_INSTALL_ROUNDS searches after a restart).  An update failing with an HRESULT a
        rung repairs climbs the ladder from that rung, then installs again; any other ends the host
        needs-operator with the update, the code, its meaning and the fix."""
        params = install_params(self.policy)
        installed: list[str] = []
        climbed: set[str] = set()
        rounds = 0
        while True:
            rounds += 1
            self._extend_kept_pause()
            result = self.steps.step("install-updates", params, reason=f"install updates (round {rounds})")
            facts = result.facts
            results = [r for r in facts.get("results") or [] if isinstance(r, dict)]
            installed += [str(r.get("kb")) for r in results if r.get("result_code") in _INSTALLED]
            failed = [r for r in results if r.get("result_code") not in _INSTALLED]
            if result.exit_code == ExitCode.UNREACHABLE_UPDATE_SERVER:
                return Outcome.NEEDS_OPERATOR, f"installing: {'; '.join(result.messages)[:300]}"
            if result.exit_code == ExitCode.REFUSED:
                if self.steps.read_boot()[1] and rounds <= MAX_INSTALL_ROUNDS:
                    self.reboot_host("servicing is pending a restart before updates can install")
                    continue
                return Outcome.NEEDS_OPERATOR, f"install-updates refused: {'; '.join(result.messages)[:300]}"
            if not failed and result.exit_code not in (ExitCode.OK, ExitCode.REBOOT_NEEDED):
                return Outcome.FAILED, f"install-updates failed (exit {result.exit_code}): {'; '.join(result.messages)[:300]}"
            if facts.get("reboot_required") or result.reboot_required:
                self.reboot_host("installed updates asked for a restart")
            if failed:
                code = str(failed[0].get("hresult") or "")
                rung = install_rung(code, self.policy, climbed)
                if rung is None:
                    return Outcome.NEEDS_OPERATOR, self._install_failure(failed, installed)
                climbed.add(rung)
                climb = self.rung(PlannedStep(rung, f"{failed[0].get('kb')} failed to install with {code}: climb from {rung}"))
                if climb.exit_code == ExitCode.NEEDS_REPAIR_FIRST:
                    return Outcome.NEEDS_OPERATOR, needs_source_cause(PlannedStep(rung, ""), climb)
                rounds -= 1  # a climb's retry is not a round of its own: each rung is climbed once at most
                continue
            if not (facts.get("reboot_required") or result.reboot_required):
                break  # no restart: a new search would find what this one found, minus what it installed
            if rounds >= MAX_INSTALL_ROUNDS:
                self._pay_owed_now()
                return Outcome.REPAIRED if self.ran_order else Outcome.HEALTHY, (
                    f"{repaired}; {_installed_text(installed)}; more may be pending after {rounds} rounds "
                    f"(MAX_INSTALL_ROUNDS): run again")
        self._pay_owed_now()
        pending = self._last_pending(Outcome.PATCHED)
        if pending:
            self.reboot_host(f"pending reboot after installing ({', '.join(pending)})")
        if self.ran_order:
            repaired = self._repaired_by()
        return Outcome.PATCHED, f"{_installed_text(installed)}; {repaired}"

    def _extend_kept_pause(self) -> None:
        """A pause kept for the install (KEPT_FOR_INSTALL) gets a fresh fail-safe deadline before each
        round: av-pause again, which on a host it already paused only moves the deadline on."""
        for restore in KEPT_FOR_INSTALL:
            pause = next(step for step, undo in RESTORES.items() if undo == restore)
            if restore in self.ledger.owed:
                self.steps.step(pause, rung_params(pause, self.policy),
                                reason="keep the antivirus paused while installing: fail-safe deadline extended")

    def _repaired_by(self) -> str:
        """"repaired by LAST (after THE OTHERS)", each rung named once (an install may climb one again)."""
        *tried, last = self.ran_order
        earlier = list(dict.fromkeys(rung for rung in tried if rung != last))
        return f"repaired by {last}" + (f" (after {', '.join(earlier)})" if earlier else "")

    def _install_failure(self, failed: list[dict[str, object]], installed: list[str]) -> str:
        """The update that no rung repairs, its code, what it means and what to do."""
        first = failed[0]
        kb, code = str(first.get("kb") or "an update"), str(first.get("hresult") or "")
        known = hresult.lookup(code) if code else None
        what = f"{known.name}: {known.meaning}" if known else "not in wuremote's HRESULT table"
        fix = known.fix if known else "read the update's entry in the host's WindowsUpdate.log"
        if known is not None and known.step == "install-kb":
            fix = f"install it by hand: set kb = \"{kb}\" in the inventory (install-kb, DISM on the .msu)"
        elif known is not None and known.step in OPT_IN_STEPS and known.step not in self.policy.opt_in:
            fix = f"{known.fix}; add {known.step} to opt_in to let wuremote do it"
        elif known is not None and known.step:
            fix = f"{known.fix} (already climbed; still failing)"
        others = f"; {len(failed) - 1} more failed" if len(failed) > 1 else ""
        done = f"; {_installed_text(installed)}" if installed else ""
        return f"{kb} failed to install with {code} {what}; fix: {fix}{others}{done}"

    def _done_before(self, planned: PlannedStep, *, verify_ok: bool) -> bool:
        """A rung that succeeded before a resume counts as run.

        A pausing rung (av-pause, clean-boot) was undone by its owed restore: it runs again only
        if verify still fails, never just because the controller was stopped.
        """
        if planned.rung not in self.done_before:
            return False
        if planned.script in RESTORES and not verify_ok:
            self.done_before.discard(planned.rung)
            self.ran_ok.discard(planned.rung)
            self.ran_order.remove(planned.rung)
            return False
        return True

    def _ran(self, rung: str) -> None:
        self.ran_ok.add(rung)
        self.ran_order.append(rung)

    # --- steps --------------------------------------------------------------------------
    def rung(self, planned: PlannedStep, *, diagnose_after: bool = False) -> StepResult:
        """One rung; with ``diagnose_after``, the diagnose that follows it travels in the same pipeline
        where the transport can chain (left in ``steps.followed``; it runs only after exit 0 and no restart)."""
        # The lease runs on while the host is worked on: renewed as each rung after the first begins (the
        # take renewed it for the first), in the rung's own pipeline where the transport chains.
        renew = self.rungs_begun > 0
        self.rungs_begun += 1
        self.steps.followed = {}
        if planned.rung == "restart":
            if renew:
                self._lock("renew")
            self.reboot_host(planned.reason, rung=planned.rung)
            self._ran("restart")
            return StepResult(self.name, "restart", ExitCode.OK, {"status": "ok", "facts": {}, "messages": []})
        params = rung_params(planned.rung, self.policy)
        if planned.script == "install-kb":
            params.update(self._pushed_package())
        then = (FollowUp("diagnose", {"ControllerUtc": iso_now()}, f"after {planned.rung}"),) if diagnose_after else ()
        lead = (FollowUp("lock", self._lock_params("renew"), "renew the per-host lock",
                         check=functools.partial(self._locked, "renew")),) if renew else ()
        result = self.steps.step(planned.script, params, reason=planned.reason, label=planned.rung, then=then,
                                 lead=lead)
        if result.ok:
            self._ran(planned.rung)
        if result.reboot_required:
            self.reboot_host(f"{planned.rung} asked for a restart")
        return result

    def _package_path(self) -> Path | None:
        """The file on this machine install-kb gets pushed (kb_file, else --kb-dir): the one that fits
        this host's build and architecture (diagnose's facts); None when the host reads its package
        itself (kb_url, msu_path) or none is given; ValueError naming the host when none fits."""
        policy = self.policy
        if not policy.kb or policy.kb_url or policy.msu_path or not (policy.kb_file or self.options.kb_dir):
            return None
        return packages.pick(self.name, policy.kb, self.facts, kb_file=policy.kb_file, kb_dir=self.options.kb_dir)

    def _note_package(self, plan: HostPlan) -> None:
        """The plan line says which file install-kb's push will send and its size, or why none fits,
        so `wuremote plan` shows a missing or wrong package before any repair is begun."""
        if not any(step.script == "install-kb" for step in plan.ladder):
            return
        try:
            path = self._package_path()
            if path is not None:
                plan.package = (f"pushes {path.name} ({packages.size_text(path.stat().st_size)}) "
                                "from the controller")
        except ValueError as exc:
            plan.package = str(exc).removeprefix(f"{self.name}: ")
        except OSError as exc:
            plan.package = f"cannot read the package to push: {exc.strerror or exc}"

    def _pushed_package(self) -> dict[str, str]:
        """install-kb from a file on this machine (``_package_path``), pushed into the step's staging
        folder; its SHA-256 goes to install-kb.  Nothing is pushed when the host reads the package itself."""
        policy = self.policy
        try:
            path = self._package_path()
            if path is None:
                return {}
            pkg = packages.package(path)
        except (ValueError, OSError) as exc:
            raise HostFailed(Outcome.NEEDS_OPERATOR, str(exc)) from None
        if policy.kb_sha256 and policy.kb_sha256.lower() != pkg.sha256:
            raise HostFailed(Outcome.NEEDS_OPERATOR, f"{self.name}: {path.name} has SHA-256 {pkg.sha256}, not the "
                                                     f"kb_sha256 {policy.kb_sha256.lower()} the inventory gives")
        result = packages.push(self.steps, pkg, reason=f"{path.name} for install-kb")
        if result.exit_code != ExitCode.OK or not result.facts.get("staged"):
            raise HostFailed(Outcome.FAILED, f"pushing {path.name} failed: " + "; ".join(result.messages or result.errors)[:300])
        return {"Sha256": pkg.sha256}

    def diagnose(self, reason: str, *, chained: StepResult | None = None) -> StepResult:
        """Diagnose, or the one already run in the same pipeline as the step before it (``chained``)."""
        result = chained if chained is not None else self.steps.step("diagnose", {"ControllerUtc": iso_now()}, reason=reason)
        if result.exit_code != ExitCode.OK or not result.facts:
            raise HostFailed(Outcome.FAILED, f"diagnose failed (exit {result.exit_code}): "
                             + "; ".join(result.messages or result.errors)[:300])
        bound_skew(result)  # no wait before the host ran it (a request slot, a rung ahead) reads as skew
        self.facts = result.facts
        return result

    def verify(self, reason: str, plan: HostPlan | None = None) -> StepResult:
        """Verify; once every rung the plan demands has run, a pass is recorded on the host, so the
        failures it settles demand nothing of the next run (plan.current_failure)."""
        settles = plan is not None and is_done(plan, self.ran_ok)
        return self.steps.step("verify", {"RecordSuccess": True} if settles else {}, reason=reason)

    # --- reboots and restores -----------------------------------------------------------
    def reboot_host(self, reason: str, *, rung: str | None = None) -> None:
        refusal = reboot_refusal(self.policy, reason, roles=self.roles, reboots=self.reboots, now=dt.datetime.now())
        if refusal is not None:
            raise HostFailed(*refusal)
        if self.ctx.cancelled:
            raise Cancelled()
        with self.ctx.reboot_slots(self.host):
            transport = self.steps.connected
            settings = self.options.reboot.within(self.steps.time_left)
            boot_before = read_boot(transport, self.ctx.run_id, self.options.reboot.probe_timeout)[0]
            self.emit(ev.RebootStarted(self.ctx.run_id, self.name, reason=reason, boot_before=boot_before, rung=rung))
            self.reboots += 1
            try:
                outcome = reboot(transport, run_id=self.ctx.run_id, reason=f"wuremote: {reason}",
                                 settings=settings, boot_before=boot_before,
                                 on_requested=lambda: self.emit(ev.RebootRequested(self.ctx.run_id, self.name)))
            except RebootError as exc:
                self.emit(ev.RebootFinished(self.ctx.run_id, self.name, ok=False, message=str(exc)))
                if settings != self.options.reboot:  # the wait was cut short by --host-timeout
                    raise HostFailed(Outcome.FAILED, f"{self.steps.host_timeout_cause('the restart')}: {exc}") from None
                raise HostFailed(Outcome.FAILED, str(exc)) from None
            self.steps.boot_seen = outcome.boot_after
            self.emit(ev.RebootFinished(self.ctx.run_id, self.name, ok=True, duration=round(outcome.duration, 3),
                                        boot_after=outcome.boot_after, message=f"back after {outcome.back_after:.1f} s"))

    def _pay_owed_now(self, *, keep: frozenset[str] = frozenset()) -> None:
        """Run the owed restores now, except those in ``keep`` (left owed: paid later or on the way out)."""
        while any(restore not in keep for restore in self.ledger.owed):
            restore = next(restore for restore in self.ledger.owed if restore not in keep)
            result = self.steps.step(restore, {}, reason="owed restore")
            if restore in self.ledger.owed:  # not settled: the restore failed
                raise HostFailed(Outcome.FAILED, f"{restore} failed (exit {result.exit_code}): "
                                 f"{'; '.join(result.messages)[:200]}; the on-host fail-safe restores by its deadline")
            if result.reboot_required:
                self.reboot_host(f"{restore} put services back")

    def _owed_left(self, cause: str) -> str:
        if not self.ledger.owed:
            return cause
        return (f"{cause}; owed {', '.join(self.ledger.owed)} recorded for resume "
                "(the on-host fail-safe restores by its deadline)")

    def _pay_owed(self, outcome: Outcome, cause: str) -> tuple[Outcome, str]:
        """On every path out: run owed restores, even after a failure or Ctrl-C."""
        if not self.ledger.owed:
            return outcome, cause
        try:
            self.steps.connected  # noqa: B018 - raises HostFailed("no connection") when none was opened
            self._pay_owed_now()
        except (TransportError, HostFailed, RebootError, Cancelled) as exc:
            owed = ", ".join(self.ledger.owed)
            return Outcome.FAILED, f"{cause}; owed {owed} did not run ({exc}); the on-host fail-safe restores by its deadline"
        return outcome, cause


_INSTALLED = (int(OperationResultCode.SUCCEEDED), int(OperationResultCode.SUCCEEDED_WITH_ERRORS))
_LOGGED = (Outcome.FAILED, Outcome.NEEDS_OPERATOR)  # outcomes whose host's logs are kept (collect-logs)
_LOGS_REASON = "keep the host's logs for the report"


def _installed_text(installed: list[str]) -> str:
    if not installed:
        return "no selected update was pending"
    return f"installed {len(installed)} update(s): {', '.join(installed)}"


def lease_minutes(options: RunOptions) -> int:
    """The host lock's lease: longer than --host-timeout (LEASE_MARGIN_MINUTES), within lock.ps1's range."""
    return max(1, min(LEASE_MAX_MINUTES, math.ceil(options.host_timeout / 60) + LEASE_MARGIN_MINUTES))


def _held_lock(holder: object, host: str) -> str:
    """Who holds a host's lock (run and controller), since when, and how to clear it if that run is gone."""
    found = holder if isinstance(holder, dict) else {}
    run_id, taken, expires = (str(found.get(key) or "?")[:64] for key in ("run_id", "taken_utc", "expires_utc"))
    controller = str(found.get("controller") or "")[:128]
    by = f" from controller {controller}" if controller else ""
    if found.get("lease_minutes") is not None:
        ends = (f"its lease ends {found.get('lease_minutes')} min after its last renewal "
                f"({str(found.get('renewed_utc') or '?')[:40]}, about {expires} by the host's clock)")
    else:
        ends = f"the lock expires at {expires}"
    return (f"run {run_id}{by} holds the host lock since {taken}; if that run is still going, let it finish. "
            f"If it is gone, {ends}, or clear it now by deleting "
            f"%ProgramData%\\wuremote\\lock.json on {host}")
