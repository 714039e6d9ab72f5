"""The repair ladder: which steps a host gets, in which order, and why.

Pure functions over diagnose's facts and the host's inventory settings; nothing here talks
to a host.  The runner asks for the plan after the first diagnose and walks it, stopping
as soon as verify passes and nothing the findings demand is left.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ..contract import hresult
from ..contract.steps import OPT_IN_STEPS as OPT_IN
from ..contract.updates import agent_names
from ..inventory import RepairPolicy

# The ladder, gentlest first (docs/design.md, §3).  Opt-in rungs run only when named.
LADDER = ("troubleshooter", "reset-components:gentle", "reset-components:full", "dism", "sfc",
          "av-pause", "clean-boot", "install-kb")
MAX_SKEW_SECONDS = 120
GATES = ("cleanup", "sync-time", "restart")  # run before the ladder when a finding demands them
# Steps whose own result is the repair: a finding that names one makes it required.
FINDING_STEPS = ("cleanup", "sync-time", "reset-components:gentle", "dism", "clean-boot", "install-kb")


@dataclass(frozen=True)
class PlannedStep:
    """One rung: the script to run, its parameters, and why the plan holds it."""

    rung: str  # a LADDER entry or a gate: "cleanup", "sync-time", "restart"
    reason: str
    required: bool = False  # a finding demands it: the host is not done until it has run

    @property
    def script(self) -> str:
        return self.rung.split(":", 1)[0]


@dataclass
class HostPlan:
    host: str
    gates: list[PlannedStep] = field(default_factory=list)  # before anything else
    ladder: list[PlannedStep] = field(default_factory=list)  # climbed until verify passes
    blocker: str | None = None  # a network/WSUS failure: verify confirms it, then nothing is climbed
    operator_issue: str | None = None  # what only the operator can fix; the ladder stops after required rungs
    notes: list[str] = field(default_factory=list)
    install: tuple[str, ...] = ()  # categories install-updates installs once verify passes (--install)
    # install-kb's package: the controller's file pushed to the host (name, size), or why none fits.
    # Set by the walk, which reads the controller's files; the plan itself stays a pure function.
    package: str | None = None
    # What the update history says when no failure demands a rung: "no failure recorded", or the
    # newest failure and, when a later verify settled it, that verify (failure_history).
    history: str = "no failure recorded"

    @property
    def steps(self) -> list[PlannedStep]:
        return self.gates + self.ladder

    @property
    def text(self) -> str:
        """One line for people: what runs for sure, what runs only while verify fails, what verify may confirm.

        A host that shows no failure is planned as what would run on it: verify, and nothing else unless
        verify fails (the ladder is then in the report's plan, not on this line)."""
        then = f"; then install-updates ({', '.join(self.install)})" if self.install else ""
        if not any(s.required for s in self.steps) and not self.blocker and not self.operator_issue:
            return f"plan: verify only ({self.history}; the ladder is climbed only if verify fails)" + then
        steps = [s.rung + ("*" if s.required else "") for s in self.steps]
        text = "plan: " + (" -> ".join(steps) if steps else "verify only")
        if any(s.required for s in self.steps) and any(not s.required for s in self.steps):
            text += " (* runs: a recorded failure needs it; the others only while verify fails)"
        elif steps:
            text += " (* runs: a recorded failure needs it)" if any(s.required for s in self.steps) else (
                " (each only while verify fails)")
        if self.blocker:
            text += f" (if verify confirms: {self.blocker})"
        if self.operator_issue:
            text += f" (operator: {self.operator_issue})"
        if self.package:
            text += f" (install-kb: {self.package})"
        return text + then

    def as_dict(self) -> dict[str, Any]:
        return {
            "gates": [{"step": s.rung, "reason": s.reason} for s in self.gates],
            "ladder": [{"step": s.rung, "reason": s.reason, "required": s.required} for s in self.ladder],
            "blocker": self.blocker,
            "operator_issue": self.operator_issue,
            "notes": list(self.notes),
            "install": list(self.install),
            "package": self.package,
            "history": self.history,
        }


def rung_params(rung: str, policy: RepairPolicy) -> dict[str, Any]:
    """A rung's script parameters from the inventory: always values, never code."""
    name, _, level = rung.partition(":")
    params: dict[str, Any] = {key: value for key, value in policy.step_options.get(name, {}).items()
                              if key.lower() not in ("runid", "resultmarker")}  # wuremote's own, never an option's
    if name == "reset-components":
        params["Level"] = level or "gentle"
    elif name == "dism" and policy.dism_source:
        params["Source"] = policy.dism_source
    elif name == "install-kb" and policy.kb:
        params["KbId"] = policy.kb
        if policy.kb_url:
            params["Url"] = policy.kb_url
        if policy.msu_path:
            params["MsuPath"] = policy.msu_path
        if policy.kb_sha256:
            params["Sha256"] = policy.kb_sha256
    elif name == "clean-boot" and policy.exclude_services:
        params["ExcludeServices"] = list(policy.exclude_services)
    elif name == "av-pause" and policy.vendor_av:
        for key, param in (("pause_command", "VendorPauseCommand"), ("pause_arguments", "VendorPauseArguments"),
                           ("resume_command", "VendorResumeCommand"), ("resume_arguments", "VendorResumeArguments")):
            if key in policy.vendor_av:
                params[param] = policy.vendor_av[key]
    return params


def _settled(failure: dict[str, Any], facts: dict[str, Any]) -> bool:
    """A failure recorded before the last verify that passed once every demanded repair had run
    (diagnose's last_verify_ok_utc) is history: the event log keeps it after the repair, and
    requiring its rung again would repair a healthy host on every run."""
    verified, when = facts.get("last_verify_ok_utc"), failure.get("time_utc")
    if not isinstance(verified, str) or not isinstance(when, str):
        return False
    try:
        return dt.datetime.fromisoformat(when.replace("Z", "+00:00")) <= dt.datetime.fromisoformat(
            verified.replace("Z", "+00:00"))
    except ValueError:
        return False


def _utc_text(value: str) -> str:
    """An ISO 8601 UTC time as the plan line prints it (2026-11-29 14:20 UTC); as given if unreadable."""
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def failure_history(facts: dict[str, Any]) -> str:
    """The newest recorded update failure as the plan line tells it.  A failure a later passing verify
    settled (``_settled``) demands nothing, but it is still in the host's history (diagnose shows it):
    the line says so, and when it was settled, rather than "no failure recorded"."""
    for failure in facts.get("update_failures") or []:
        if not isinstance(failure, dict) or not failure.get("hresult"):
            continue
        when = failure.get("time_utc")
        text = f"last failure {failure['hresult']}" + (f" on {_utc_text(when)}" if isinstance(when, str) else "")
        verified = facts.get("last_verify_ok_utc")
        if _settled(failure, facts) and isinstance(verified, str):
            return f"{text}, settled by verify on {_utc_text(verified)}"
        return text
    return "no failure recorded"


def current_failure(facts: dict[str, Any]) -> hresult.HResult | None:
    """The newest recorded update failure with a known HRESULT that no passing verify has settled."""
    for failure in facts.get("update_failures") or []:
        code = failure.get("hresult") if isinstance(failure, dict) else None
        if code and isinstance(failure, dict) and _settled(failure, facts):
            return None  # newest first: this one and every older one are settled
        if code:
            known = hresult.lookup(code)
            if known is not None:
                return known
    return None


def network_blocker(facts: dict[str, Any]) -> str | None:
    failure = current_failure(facts)
    if failure is not None and failure.category in hresult.NOT_A_REPAIR_STEP:
        source = facts.get("update_source") or {}
        where = f" ({source.get('wsus_server')})" if source.get("wsus_server") else ""
        return f"{failure.hex} {failure.name}: cannot reach the update server{where}; {failure.fix}"
    return None


def plan_host(name: str, policy: RepairPolicy, facts: dict[str, Any]) -> HostPlan:
    """The plan for one host from its first diagnose: gates, then the ladder, with reasons."""
    plan = HostPlan(name, blocker=network_blocker(facts), install=policy.install, history=failure_history(facts))
    services = facts.get("services") or {}
    by_policy = sorted(name for name, svc in services.items()
                       if isinstance(svc, dict) and svc.get("policy_start_type") == "Disabled")
    if by_policy:
        plan.operator_issue = (f"{', '.join(by_policy)} disabled by Group Policy: change the policy "
                               "(wuremote reports it and does not fight it)")
    disk = facts.get("disk") or {}
    if disk.get("low"):
        free_gb = (disk.get("free_bytes") or 0) / 2**30
        plan.gates.append(PlannedStep("cleanup", f"{free_gb:.1f} GB free on {disk.get('system_drive', 'the system drive')}, "
                                      f"below {disk.get('min_free_gb', 15)} GB", required=True))
    skew = (facts.get("clock") or {}).get("skew_seconds")
    if isinstance(skew, (int, float)) and abs(skew) > MAX_SKEW_SECONDS:
        plan.gates.append(PlannedStep("sync-time", f"clock is {skew:+.0f} s off the controller", required=True))
    servicing = facts.get("servicing") or {}
    pending = facts.get("pending_reboot") or []
    # Only a pending reboot earns a restart: servicing that is merely running (a DISM or sfc,
    # perhaps our own detached step a resumed run is about to re-attach to) must be left to finish.
    if pending:
        why = "servicing in progress and a reboot pending" if servicing.get("in_progress") else "a reboot is pending"
        plan.gates.append(PlannedStep("restart", f"{why} ({', '.join(pending)}): restart before repairs", required=True))
    elif servicing.get("in_progress"):
        plan.notes.append("servicing is running (TiWorker or pending.xml) with no reboot pending: left to finish")

    failure = current_failure(facts)
    start = 0
    required: dict[str, str] = {}
    if failure is not None and failure.step:
        rung = "reset-components:gentle" if failure.step == "reset-components" else failure.step
        if rung in LADDER and rung in FINDING_STEPS:
            reason = f"last update failure {failure.hex} {failure.name}: {failure.fix}"
            if rung in OPT_IN and rung not in policy.opt_in:
                plan.notes.append(f"{reason}; {rung} is opt-in: add it to opt_in to let wuremote run it")
            else:
                required[rung] = reason
                if rung in ("dism",):
                    start = LADDER.index(rung)  # a corrupt component store goes straight to DISM
    installed = {str(kb).upper() for kb in facts.get("installed_kbs") or []}
    if policy.kb and policy.kb.upper() in installed:
        plan.notes.append(f"{policy.kb} is already installed: install-kb not needed")
    elif policy.kb:
        required["install-kb"] = f"{policy.kb} named in the inventory"
    for index, rung in enumerate(LADDER):
        name = rung.split(":")[0]
        if name in OPT_IN and name not in policy.opt_in:
            continue
        if name == "install-kb" and (not policy.kb or policy.kb.upper() in installed):
            continue
        if name == "troubleshooter" and not (facts.get("troubleshooter") or {}).get("available", True):
            plan.notes.append("troubleshooter: not available on this OS, skipped")
            continue
        if index < start and rung not in required:
            continue
        if rung in required:
            plan.ladder.append(PlannedStep(rung, required[rung], required=True))
        else:
            plan.ladder.append(PlannedStep(rung, "next rung while verify fails"))
    if start:
        plan.notes.append(f"starts at {LADDER[start]}: {required.get(LADDER[start], '')}")
    return plan


def is_done(plan: HostPlan, ran_ok: set[str]) -> bool:
    """Every step a finding demanded has run successfully (verify is checked by the caller)."""
    return all(step.rung in ran_ok for step in plan.steps if step.required)


def install_params(policy: RepairPolicy) -> dict[str, Any]:
    """install-updates' parameters from the host's install vars (values, never code)."""
    params: dict[str, Any] = {"CategoryNames": agent_names(policy.install)}
    if policy.install_accept:
        params["AcceptKb"] = list(policy.install_accept)
    if policy.install_reject:
        params["RejectKb"] = list(policy.install_reject)
    if policy.install_optional:
        params["IncludeOptional"] = True
    return params


def install_rung(code: str, policy: RepairPolicy, climbed: set[str]) -> str | None:
    """The rung an install failure climbs next: from the rung the HRESULT table names for ``code``
    (0x80070002 reset-components, 0x80073712 dism, 0x80070020 clean-boot) up the ladder, skipping
    rungs already climbed for installing and opt-in rungs the host did not opt in to; None when no
    rung repairs it (install-kb only runs for the inventory's own kb, before any install)."""
    known = hresult.lookup(code) if code else None
    if known is None or not known.step or known.category in hresult.NOT_A_REPAIR_STEP:
        return None
    first = "reset-components:gentle" if known.step == "reset-components" else known.step
    if first not in LADDER or first == "install-kb":
        return None
    for rung in LADDER[LADDER.index(first):]:
        name = rung.split(":")[0]
        if rung in climbed or name == "install-kb" or (name in OPT_IN and name not in policy.opt_in):
            continue
        return rung
    return None
