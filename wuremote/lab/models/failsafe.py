"""Models of av-pause, av-resume, clean-boot and clean-boot-restore, with their on-host fail-safes.

What each pause records lives in HostState.failsafe[kind] (the script's failsafe\\<kind>.json)
and its fail-safe task in HostState.scheduled_tasks; the host runs the same restore the
resume steps run once its clock passes the deadline, or at the first boot after it, so a
host is never left paused when the controller does not come back.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from ..host import Host, HostState, windows_utc
from .helpers import StateRootUnsafe, param, protect_state_root, require_elevated, strings, switch
from .registry import StepContext, model

TASK_PATH = "\\wuremote\\"
# clean-boot's never-touch lists (the script's $ProtectedCompanies and $ProtectedNames) and the roles they stand for.
PROTECTED_COMPANIES = (
    "VMware", "Citrix", "XenSource", "Nutanix", "Red Hat", "QEMU", "Amazon", "Google", "Oracle",
    "Veeam", "Commvault", "Veritas", "Arcserve", "Acronis", "Rubrik", "Cohesity", "Dell", "EMC", "Hewlett", "HPE",
    "NetApp", "Pure Storage", "Hitachi", "IBM", "Broadcom", "Emulex", "QLogic", "Marvell", "Mellanox", "NVIDIA",
    "Intel", "Cisco", "Palo Alto", "Fortinet", "Zscaler", "F5", "Juniper",
    "CrowdStrike", "SentinelOne", "Sophos", "Symantec", "McAfee", "Trellix", "Trend Micro", "Carbon Black",
    "Cylance", "BlackBerry", "ESET", "Kaspersky", "Bitdefender", "Cybereason", "Elastic", "Tanium", "Qualys", "Rapid7", "Tenable",
)
PROTECTED_NAMES = (
    "winrm", "vmtools", "vgauthservice", "vm3dservice", "xenagent", "xensvc", "qemu-ga", "amazonssmagent",
    "ec2launch", "windowsazureguestagent", "rdagent", "waappagent", "gceagent", "googlevssagent", "csfalconservice",
    "sentinelagent", "sense", "windefend", "mpssvc", "vss", "swprv",
    "http", "rpcss",  # what WinRM depends on
)
PROTECTED_ROLES = ("networking", "storage", "guest-tools", "backup", "edr")


def task_name(kind: str) -> str:
    return f"wuremote-failsafe-{kind}"


class FailSafeCannotRun(Exception):
    """Register-WuFailSafe's probe got no FullLanguage answer: the task is removed, the caller refuses."""


def register_failsafe(host: Host, kind: str, deadline: dt.datetime) -> str:
    """Register-WuFailSafe: a SYSTEM task at the deadline and at start-up, running the kind's restore
    through the -EncodedCommand loader; then its probe run, which must answer in FullLanguage."""
    name = task_name(kind)
    try:
        protect_state_root(host)
    except StateRootUnsafe as exc:
        raise FailSafeCannotRun(str(exc)) from None
    host.state.scheduled_tasks[name] = {"path": TASK_PATH, "state": "Ready", "deadline_utc": windows_utc(deadline),
                                        "at_startup": True, "kind": "failsafe", "action": "encoded-command"}
    if not host.state.task_action_runs("encoded-command"):
        unregister_failsafe(host.state, kind)
        raise FailSafeCannotRun(
            f"the fail-safe task cannot run on this host: it runs in {host.state.language_mode} (task last result "
            "0x00000001); check the execution policy (Get-ExecutionPolicy -List) and the language mode (WDAC/AppLocker); "
            "nothing was changed")
    restore = RESTORES[kind]
    host.arm_deadline_task(name, lambda: restore(host.state, "fail-safe deadline passed"))
    return name


def unregister_failsafe(state: HostState, kind: str) -> bool:
    """Unregister-WuFailSafe: True when there was a task to remove."""
    return state.scheduled_tasks.pop(task_name(kind), None) is not None


def vendor_tool_exists(state: HostState, path: str) -> bool:
    """Test-Path -PathType Leaf on a rooted path: the product's own tool, or a file pushed to the host."""
    rooted = re.match(r"^(?:[A-Za-z]:\\|\\\\)", path) is not None
    control = state.antivirus.control_path
    return rooted and (path.lower() == (control or "").lower() or path.lower() in state.files)


def run_vendor_tool(state: HostState, path: str, *, scanning: bool) -> int:
    """The vendor's pause or resume command: the product's own tool turns its real-time scanning off or on."""
    if not vendor_tool_exists(state, path):
        return 2  # ERROR_FILE_NOT_FOUND, as Windows reports a vanished executable
    if state.antivirus.third_party and path.lower() == (state.antivirus.control_path or "").lower():
        state.antivirus.realtime_enabled = scanning
    return 0


def restore_av(state: HostState, reason: str) -> list[dict[str, Any]]:
    """Restore-WuAvState: Defender back on, the vendor's resume command; the record goes once all is back."""
    record = state.failsafe.get("av")
    changes: list[dict[str, Any]] = []
    if record is None:
        return changes
    failed = 0
    if record["defender_paused"]:
        state.antivirus.realtime_enabled = True
        changes.append({"kind": "defender-realtime", "from": "off", "to": "on", "reason": reason})
    command = str(record["vendor_resume_command"] or "")
    if command:
        code = run_vendor_tool(state, command, scanning=True)
        failed += code != 0
        changes.append({"kind": "vendor-resume", "command": command, "exit_code": code, "reason": reason})
    if not failed:
        del state.failsafe["av"]
    return changes


def restore_start_types(state: HostState, reason: str) -> list[dict[str, Any]]:
    """Restore-WuStartTypes: exactly the recorded start types; automatic ones that were running started."""
    record = state.failsafe.get("clean-boot")
    changes: list[dict[str, Any]] = []
    if record is None:
        return changes
    failed = 0
    for entry in record["services"]:
        name, original = entry["name"], entry["original_start_type"]
        service = state.services.get(name.lower())
        if service is None:
            failed += 1
            changes.append({"kind": "service-start-type", "name": name, "from": "Disabled", "to": original,
                            "error": f"could not set {name} to {original}: sc.exe exit 1060: [SC] OpenService FAILED 1060: "
                                     "The specified service does not exist as an installed service."})
            continue
        service.set_start_mode(original)
        changes.append({"kind": "service-start-type", "name": name, "from": "Disabled", "to": original, "reason": reason})
        if entry["original_state"] == "Running" and original.startswith("Automatic") and service.status != "Running":
            service.status = "Running"
            changes.append({"kind": "service-state", "name": name, "from": "Stopped", "to": "Running", "reason": reason})
    if not failed:
        del state.failsafe["clean-boot"]
    return changes


RESTORES: dict[str, Callable[[HostState, str], list[dict[str, Any]]]] = {"av": restore_av, "clean-boot": restore_start_types}


def _deadline(ctx: StepContext, default_minutes: int) -> dt.datetime:
    return ctx.host.state.clock + dt.timedelta(minutes=int(param(ctx, "FailSafeMinutes", default_minutes)))


@model("av-pause", sha256="b938e967f1f97e1308ca014a83c9f8b751dd728af2cf872683b4d5401c52e9af")
async def av_pause(ctx: StepContext) -> None:
    require_elevated(ctx)
    state = ctx.host.state
    deadline = _deadline(ctx, 120)
    facts: dict[str, Any] = {"deadline_utc": windows_utc(deadline), "state_file": "C:\\ProgramData\\wuremote\\failsafe\\av.json"}
    pause, resume = str(param(ctx, "VendorPauseCommand", "")), str(param(ctx, "VendorResumeCommand", ""))
    for command in (pause, resume):
        if command and not vendor_tool_exists(state, command):
            ctx.finish("failed", 1, facts=facts, messages=[f"vendor command {command} must be the full path of an existing executable"])
    if bool(pause) != bool(resume):
        ctx.finish("failed", 1, facts=facts, messages=["a vendor pause command needs its resume command (and the other way round)"])
    await ctx.host.sleep(1.0)

    existing = state.failsafe.get("av")
    if existing is not None:  # Complete-WuFailSafeExtended
        facts["already_paused"] = True
        facts["state"] = existing
        existing["deadline_utc"] = windows_utc(deadline)
        try:
            register_failsafe(ctx.host, "av", deadline)
        except FailSafeCannotRun as exc:
            facts["restored"] = restore_av(state, "fail-safe cannot run")
            ctx.finish("failed", 1, facts=facts, messages=[f"{exc}; antivirus turned back on"])
        ctx.finish("ok", 0, facts=facts, messages=["already paused by wuremote; fail-safe deadline extended"])

    # Record first, then arm the fail-safe, then change anything.
    record: dict[str, Any] = {
        "run_id": str(param(ctx, "RunId", "")), "paused_utc": windows_utc(state.clock), "deadline_utc": windows_utc(deadline),
        "defender_paused": False, "vendor_resume_command": resume, "vendor_resume_arguments": strings(ctx, "VendorResumeArguments"),
    }
    state.failsafe["av"] = record
    try:
        facts["failsafe_task"] = register_failsafe(ctx.host, "av", deadline)
    except FailSafeCannotRun as exc:
        del state.failsafe["av"]
        ctx.finish("failed", 1, facts=facts, messages=[f"refused: {exc}"])
    changes: list[dict[str, Any]] = [{"kind": "failsafe-registered", "task": facts["failsafe_task"],
                                      "deadline_utc": record["deadline_utc"]}]
    could_not = None
    av = state.antivirus
    if av.defender_present and not av.defender_service_running:  # Get-MpComputerStatus throws; nothing of Defender's to pause
        facts["defender_error"] = "Operation failed with the following error: 0x800106ba"
    elif av.defender_present:
        facts["defender_before"] = {"realtime_enabled": av.defender_realtime, "tamper_protected": av.tamper_protection}
        if av.defender_realtime:
            if not av.tamper_protection:  # tamper protection ignores Set-MpPreference without a word
                av.realtime_enabled = False
            facts["defender_after"] = {"realtime_enabled": av.defender_realtime}
            if av.defender_realtime:
                could_not = "could not pause Defender: real-time protection is still on (tamper protection ignores the change)"
            else:
                record["defender_paused"] = True
                changes.append({"kind": "defender-realtime", "from": "on", "to": "off"})
    if could_not is None and pause:
        code = run_vendor_tool(state, pause, scanning=False)
        facts["vendor_pause_exit_code"] = code
        if code:
            could_not = f"could not pause the third-party product: {pause} exited {code}"
        else:
            changes.append({"kind": "vendor-pause", "command": pause})

    if could_not:
        facts["restored"] = restore_av(state, "pause failed")
        if "av" not in state.failsafe:
            unregister_failsafe(state, "av")
        ctx.finish("failed", 1, facts=facts, changes=changes, messages=[could_not])
    if not record["defender_paused"] and not pause:
        del state.failsafe["av"]
        unregister_failsafe(state, "av")
        ctx.finish("not-applicable", 2, facts=facts, messages=[
            "nothing to pause: Defender real-time protection is off or absent and no vendor command was given"])
    facts["state"] = dict(record)
    ctx.finish("ok", 0, facts=facts, changes=changes, messages=[
        f"antivirus paused until {deadline:%Y-%m-%d %H:%M:%S} UTC at the latest; av-resume turns it back on"])


@model("av-resume", sha256="ce11527ddfb24b7e219bda6aa6c383cd0c3271631378974419bf5412d6b3f440")
async def av_resume(ctx: StepContext) -> None:
    require_elevated(ctx)
    state = ctx.host.state
    await ctx.host.sleep(1.0)
    record = state.failsafe.get("av")
    facts: dict[str, Any] = {"state": dict(record) if record is not None else None}
    if record is None:
        facts["failsafe_cancelled"] = unregister_failsafe(state, "av")
        ctx.finish("ok", 0, facts=facts, messages=["nothing was paused by wuremote"])
    changes = restore_av(state, "av-resume")
    if any("error" in c or c.get("exit_code", 0) != 0 for c in changes) or "av" in state.failsafe:
        ctx.finish("failed", 1, facts=facts, changes=changes, messages=[
            "antivirus not fully restored; the fail-safe task stays armed and will retry at its deadline"])
    facts["failsafe_cancelled"] = unregister_failsafe(state, "av")
    ctx.finish("ok", 0, facts=facts, changes=changes)


def _protected_reason(name: str, company: str, role: str, excluded: set[str]) -> str | None:
    if name in PROTECTED_NAMES or name in excluded:
        return "protected service"
    if role in PROTECTED_ROLES:
        return f"protected role ({role})"
    vendor = next((c for c in PROTECTED_COMPANIES if c.lower() in company.lower()), None)
    return f"protected vendor ({vendor})" if vendor else None


@model("clean-boot", sha256="86c9fe64ca868f99c47bf4cb8eeb2a48ec109ec84b8c332d2cd451d2ee6776d5")
async def clean_boot(ctx: StepContext) -> None:
    require_elevated(ctx)
    state = ctx.host.state
    list_only = switch(ctx, "ListOnly")
    deadline = _deadline(ctx, 240)
    facts: dict[str, Any] = {"list_only": list_only}
    await ctx.host.sleep(3.0)
    existing = state.failsafe.get("clean-boot")
    if existing is not None and not list_only:  # Complete-WuFailSafeExtended
        facts["state"] = existing
        existing["deadline_utc"] = windows_utc(deadline)
        try:
            register_failsafe(ctx.host, "clean-boot", deadline)
        except FailSafeCannotRun as exc:
            facts["restored"] = restore_start_types(state, "fail-safe cannot run")
            ctx.finish("failed", 1, facts=facts, messages=[f"{exc}; start types put back"])
        ctx.finish("ok", 0, facts=facts, messages=["clean boot already active (recorded by wuremote); fail-safe deadline extended"])

    managed: set[str] = set()
    if state.cluster_node:  # Get-ClusterManagedService: the node's Generic Service resources, by WMI
        if not state.cluster_wmi_readable:
            ctx.finish("failed", 1, facts=facts, messages=[
                "this host is a cluster node and the services its cluster manages could not be read (Generic failure ); "
                "clean boot refused, nothing was changed"])
        managed = {r["service_name"].lower() for r in state.cluster_resources
                   if r.get("type") == "Generic Service" and r.get("service_name")}
    facts["cluster_managed"] = sorted(managed)
    excluded = {name.lower() for name in strings(ctx, "ExcludeServices")}
    candidates: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for name in sorted(state.services):
        service = state.services[name]
        if service.kind != "win32" or service.start_mode == "Disabled" or service.company.startswith("Microsoft"):
            continue
        entry: dict[str, Any] = {"name": service.name, "display_name": service.display_name, "publisher": service.company,
                                 "original_start_type": service.start_mode, "original_state": service.status}
        reason = _protected_reason(name, service.company, service.role, excluded)
        if reason is None and name in managed:
            reason = "cluster-managed service (a Generic Service resource of this node's cluster)"
        if reason is None and service.launch_protected:
            reason = "launch-protected service (LaunchProtected 3)"
        if reason:
            kept.append(dict(entry, kept_because=reason))
        else:
            candidates.append(entry)
    facts["kept"], facts["services"] = kept, candidates
    if list_only or not candidates:
        message = (f"{len(candidates)} service(s) would be disabled; nothing changed (-ListOnly)" if list_only
                   else "nothing to disable: every Win32 service is Microsoft's or protected")
        ctx.finish("ok", 0, facts=facts, messages=[message])

    state.failsafe["clean-boot"] = {"run_id": str(param(ctx, "RunId", "")), "taken_utc": windows_utc(state.clock),
                                    "deadline_utc": windows_utc(deadline), "services": candidates}
    try:
        facts["failsafe_task"] = register_failsafe(ctx.host, "clean-boot", deadline)
    except FailSafeCannotRun as exc:
        del state.failsafe["clean-boot"]
        ctx.finish("failed", 1, facts=facts, messages=[f"refused: {exc}"])
    facts["deadline_utc"] = windows_utc(deadline)
    changes = []
    for entry in candidates:
        state.services[entry["name"]].set_start_mode("Disabled")  # takes effect at the next boot
        changes.append({"kind": "service-start-type", "name": entry["name"], "from": entry["original_start_type"], "to": "Disabled"})
    ctx.finish("reboot-required", 3010, facts=facts, changes=changes, reboot_required=True, messages=[
        f"{len(candidates)} service(s) disabled until clean-boot-restore or {deadline:%Y-%m-%d %H:%M:%S} UTC; reboot to take effect"])


@model("clean-boot-restore", sha256="099a5a8f084bd2f0ceee98f1b119e3edf2e948a054db10de03f808287f42ffa2")
async def clean_boot_restore(ctx: StepContext) -> None:
    require_elevated(ctx)
    state = ctx.host.state
    await ctx.host.sleep(2.0)
    record = state.failsafe.get("clean-boot")
    facts: dict[str, Any] = {"state": dict(record) if record is not None else None}
    if record is None:
        facts["failsafe_cancelled"] = unregister_failsafe(state, "clean-boot")
        ctx.finish("ok", 0, facts=facts, messages=["no clean boot recorded by wuremote"])
    changes = restore_start_types(state, "clean-boot-restore")
    if "clean-boot" in state.failsafe:
        ctx.finish("failed", 1, facts=facts, changes=changes, messages=[
            "some start types could not be restored; the fail-safe task stays armed (deadline or next start-up)"])
    facts["failsafe_cancelled"] = unregister_failsafe(state, "clean-boot")
    ctx.finish("ok", 0, facts=facts, changes=changes, messages=[f"{len(record['services'])} start type(s) restored"])
