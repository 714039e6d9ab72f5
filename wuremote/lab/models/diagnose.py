"""Model of ps_scripts/diagnose.ps1: the live host model rendered as diagnose's facts; changes nothing.

The shape is the one documented in wuremote/lab/fixtures/README.md, so a fresh host of a
built-in scenario answers what its fixture's `facts` say (times aside).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..host import CATROOT2, DATASTORE, DOWNLOAD, GIB, SOFTWARE_DISTRIBUTION, HostState, expand, parse_windows_utc, windows_utc
from .helpers import param, pending_reboot
from .registry import StepContext, model

UPDATE_SERVICES = ("wuauserv", "bits", "cryptsvc", "msiserver", "trustedinstaller", "appidsvc", "usosvc")
TROUBLESHOOTER_PACK = "%SystemRoot%\\diagnostics\\system\\WindowsUpdate"
MAX_FAILURES = 20
FAILURE_DAYS = 30
# SecurityCenter2 productState of an up-to-date product with real-time scanning on / off.
PRODUCT_STATE_ON, PRODUCT_STATE_OFF = 397568, 393472


@model("diagnose", sha256="6154b4dee8fe1ecbde2b7ff3b575927d619780566004de8d0493302e7c23ac6f")
async def diagnose(ctx: StepContext) -> None:
    state = ctx.host.state
    ctx.verbose("reading services, clock, disk, servicing, update source, antivirus")
    await ctx.host.sleep(5.0)
    facts: dict[str, Any] = {
        "os": _os(state),
        "roles": {
            "domain_member": state.domain_role != "workgroup",
            "domain_controller": state.domain_role == "domain-controller",
            "cluster_node": state.cluster_node,
            "hyperv_host": state.domain_role == "hyperv-host",
        },
        "services": _services(state),
        "policy_readable": state.policy_readable,
        "clock": _clock(state, str(param(ctx, "ControllerUtc", ""))),
        "disk": _disk(state, int(param(ctx, "MinFreeGB", 15))),
        "folders": _folders(state),
        "pending_reboot": pending_reboot(ctx),
        "servicing": {
            "tiworker_running": state.servicing_in_progress or state.tiworker_running,
            "pending_xml": state.servicing_in_progress,
            "in_progress": state.servicing_in_progress or state.tiworker_running,  # the script's "TiWorker or pending.xml"
        },
        "update_source": _update_source(state),
        "update_failures": _failures(state),
        "last_verify_ok_utc": state.verify_ok_utc,
        "installed_kbs": sorted(kb.upper() for kb in state.installed_kbs),
        "powershell": {"language_mode": state.language_mode, "execution_policies": {
            "MachinePolicy": state.execution_policy_gpo or "Undefined", "UserPolicy": "Undefined", "Process": "Undefined",
            "CurrentUser": "Undefined", "LocalMachine": "RemoteSigned"}},
        "antivirus": _antivirus(state),
        "troubleshooter": {"available": state.troubleshooter_available, "path": expand(TROUBLESHOOTER_PACK)},
        "unexpected_shutdowns_30d": state.unexpected_shutdowns_30d,
        "elevated": state.is_admin,
        "errors": [],
    }
    messages = [] if state.is_admin else ["session is not elevated: repair steps will refuse (exit 5)"]
    ctx.finish("ok", 0, facts=facts, messages=messages)


def product_type(state: HostState) -> str:
    if state.domain_role == "domain-controller":
        return "domain-controller"
    return "server" if "Server" in state.os_caption else "workstation"


def _os(state: HostState) -> dict[str, Any]:
    return {
        "caption": state.os_caption,
        "version": f"10.0.{state.build}",
        "build": state.build,
        "ubr": state.ubr,
        "product_type": product_type(state),
        "architecture": state.architecture,
        "last_boot_utc": windows_utc(state.last_boot),
    }


def _services(state: HostState) -> dict[str, dict[str, Any]]:
    table = {}
    for name in UPDATE_SERVICES:
        service = state.services.get(name)
        policy = service.policy_start_type if service is not None and state.policy_readable else None
        if service is None:
            table[name] = {"state": "Absent", "start_type": "Absent", "policy_start_type": policy}
        else:
            table[name] = {"state": service.status, "start_type": service.start_mode, "policy_start_type": policy}
    return table


def w32tm_time(moment: dt.datetime) -> str:
    """As w32tm /query /status prints a time on an en-US host: 11/20/2025 9:58:12 AM."""
    hour = moment.hour % 12 or 12
    return f"{moment.month}/{moment.day}/{moment.year} {hour}:{moment:%M:%S} {'AM' if moment.hour < 12 else 'PM'}"


def skew_seconds(state: HostState, controller_utc: str) -> float | None:
    """Host clock minus the controller's (None without a controller time)."""
    if not controller_utc:
        return None
    return round((state.clock - parse_windows_utc(controller_utc)).total_seconds(), 1)


def _clock(state: HostState, controller_utc: str) -> dict[str, Any]:
    w32time = state.services.get("w32time")
    running = w32time is not None and w32time.status == "Running"
    last_sync = None
    if running:
        last_sync = w32tm_time(state.last_time_sync) if state.last_time_sync else "unspecified"
    return {
        "local_utc": windows_utc(state.clock),
        "skew_seconds": skew_seconds(state, controller_utc),
        "w32time_state": w32time.status if w32time is not None else "Absent",
        "w32tm_exit_code": 0 if running else None,
        "source": state.time_source if running else None,
        "last_sync": last_sync,
    }


def _disk(state: HostState, min_free_gb: int) -> dict[str, Any]:
    free = int(state.free_disk_gb * GIB)
    return {
        "system_drive": "C:",
        "free_bytes": free,
        "size_bytes": int(state.disk_size_gb * GIB),
        "min_free_gb": min_free_gb,
        "low": free < min_free_gb * GIB,
    }


def folder_bytes(state: HostState, key: str) -> int:
    """Get-ChildItem -Recurse summed: the folder and everything under it."""
    prefix = key.lower() + "\\"
    return sum(f.bytes for k, f in state.folders.items() if k.lower() == key.lower() or k.lower().startswith(prefix))


def _folders(state: HostState) -> dict[str, Any]:
    backups = sorted(leaf for parent, _, leaf in (k.rpartition("\\") for k in state.folders)
                     if parent.lower() == "%systemroot%" and leaf.lower().startswith("softwaredistribution.wuremote-"))
    return {
        "software_distribution": {
            "exists": SOFTWARE_DISTRIBUTION in state.folders,
            "bytes": folder_bytes(state, SOFTWARE_DISTRIBUTION),
            "datastore_exists": DATASTORE in state.folders,
            "download_bytes": folder_bytes(state, DOWNLOAD),
        },
        "catroot2": {"exists": CATROOT2 in state.folders, "bytes": folder_bytes(state, CATROOT2)},
        "wuremote_backups": backups,
    }


def _update_source(state: HostState) -> dict[str, Any]:
    return {
        "kind": state.update_source,
        "wsus_server": state.wsus_server or "",
        "wsus_status_server": state.wsus_status_server or "",
        "use_wsus": state.update_source == "wsus",
        "no_internet_wu": state.no_internet_wu,
        "wu_access_disabled": state.wu_access_disabled,
        "no_auto_update": state.no_auto_update,
        "configmgr_client": state.update_source == "configmgr",
        "winhttp_proxy": state.winhttp_proxy,
        "winhttp_proxy_bypass": state.winhttp_proxy_bypass,
    }


def _failures(state: HostState) -> list[dict[str, Any]]:
    since = state.clock - dt.timedelta(days=FAILURE_DAYS)
    recent = [row for row in state.update_history if parse_windows_utc(str(row["time_utc"])) >= since]
    recent.sort(key=lambda row: parse_windows_utc(str(row["time_utc"])), reverse=True)
    return [dict(row) for row in recent[:MAX_FAILURES]]


def _antivirus(state: HostState) -> dict[str, Any]:
    av = state.antivirus
    products: Any = "unknown"  # SecurityCenter2 exists on client SKUs only
    if product_type(state) == "workstation":
        products = [{"name": av.product, "product_state": PRODUCT_STATE_ON if av.realtime_enabled else PRODUCT_STATE_OFF}]
    defender: dict[str, Any] = {"present": False, "realtime_enabled": None, "tamper_protected": None, "running_mode": None}
    if av.defender_present and not av.defender_service_running:  # Get-MpComputerStatus fails (0x800106BA)
        defender = {"present": True, "realtime_enabled": False, "tamper_protected": None, "running_mode": "Not running"}
    elif av.defender_present:
        defender = {"present": True, "realtime_enabled": av.defender_realtime,
                    "tamper_protected": av.tamper_protection, "running_mode": av.defender_mode}
    return {"products": products, "defender": defender}
