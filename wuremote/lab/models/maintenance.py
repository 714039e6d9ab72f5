"""Models of ps_scripts/cleanup.ps1, sync-time.ps1 and troubleshooter.ps1."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from ..host import GIB, HostState, expand, parse_windows_utc
from .diagnose import TROUBLESHOOTER_PACK
from .helpers import param, require_elevated, switch
from .registry import StepContext, model

COMPONENT_CLEANUP_SECONDS = 240.0  # modelled: /StartComponentCleanup takes minutes
TROUBLESHOOTER_SECONDS = 90.0


def free_bytes(state: HostState) -> int:
    return int(state.free_disk_gb * GIB)


def free_space(state: HostState, nbytes: int) -> None:
    state.free_disk_gb = min(state.disk_size_gb, state.free_disk_gb + nbytes / GIB)


def remove_folder(state: HostState, key: str) -> int:
    """Removes a folder and everything under it; returns the bytes it held (now free)."""
    prefix = key.lower() + "\\"
    doomed = [k for k in state.folders if k.lower() == key.lower() or k.lower().startswith(prefix)]
    freed = sum(state.folders.pop(k).bytes for k in doomed)
    free_space(state, freed)
    return freed


@model("cleanup", sha256="4bb35f9095200a51cdd237226cb71946ee12f6adf4c6fb59ef056cb4c27ffd89")
async def cleanup(ctx: StepContext) -> None:
    require_elevated(ctx)
    state = ctx.host.state
    before = free_bytes(state)
    facts: dict[str, Any] = {"free_bytes_before": before}
    changes: list[dict[str, Any]] = []
    messages: list[str] = []

    if switch(ctx, "SkipComponentStore"):
        facts["component_store"] = "skipped"
    elif state.servicing_in_progress:
        facts["component_store"] = "skipped: servicing pending a reboot"
        messages.append("component-store cleanup skipped: pending.xml present, reboot first")
    else:
        reset_base = switch(ctx, "ResetBase")
        ctx.verbose("DISM /Online /Cleanup-Image /StartComponentCleanup" + (" /ResetBase" if reset_base else ""))
        await ctx.host.sleep(COMPONENT_CLEANUP_SECONDS)
        free_space(state, int(state.component_store_reclaimable_gb * GIB))
        state.component_store_reclaimable_gb = 0.0
        facts["component_store"] = "dism exit 0"
        facts["dism_exit_code"] = 0
        changes.append({"kind": "component-store-cleanup", "reset_base": reset_base})

    if state.old_temp_gb > 0:
        free_space(state, int(state.old_temp_gb * GIB))
        state.old_temp_gb = 0.0
        changes.append({"kind": "temp-removed", "path": expand("%SystemRoot%\\Temp\\*")})
    facts["temp_items_kept"] = 0

    # By the UTC stamp in the backup's name: a rename keeps the folder's creation time (Folder.created).
    cutoff = state.clock - dt.timedelta(days=int(param(ctx, "BackupAgeDays", 7)))
    for key in sorted(k for k in state.folders if (stamp := backup_stamp(k)) is not None and stamp < cutoff):
        if key in state.folders:
            remove_folder(state, key)
            changes.append({"kind": "backup-removed", "path": expand(key)})

    after = free_bytes(state)
    facts["free_bytes_after"] = after
    facts["bytes_freed"] = max(0, after - before)
    ctx.finish("ok", 0, facts=facts, changes=changes, messages=messages)


@model("sync-time", sha256="50cbdd8912e6da92cf7e6f96a5579ed71bdc23cb0f5c4a76bffbedce3918ef8a")
async def sync_time(ctx: StepContext) -> None:
    require_elevated(ctx)
    state = ctx.host.state
    started = time.monotonic()
    controller = str(param(ctx, "ControllerUtc", ""))
    peer = str(param(ctx, "Peer", ""))

    def skew() -> float | None:
        """Host clock minus the controller's clock advanced by the time this step has run."""
        if not controller:
            return None
        elapsed = dt.timedelta(seconds=time.monotonic() - started)
        return round((state.clock - parse_windows_utc(controller) - elapsed).total_seconds(), 1)

    facts: dict[str, Any] = {"skew_before_seconds": skew(), "peer": peer}
    changes: list[dict[str, Any]] = []
    messages: list[str] = []
    w32time = state.services.get("w32time")
    if w32time is None:
        ctx.finish("not-applicable", 2, facts=facts, messages=["the Windows Time service is not installed on this host"])
    if w32time.start_mode == "Disabled":
        w32time.set_start_mode("Manual")
        changes.append({"kind": "service-start-type", "name": "w32time", "from": "Disabled", "to": "Manual"})
    if w32time.status != "Running":
        if w32time.effective_start_type == "Disabled":
            messages.append("sync-time failed: Service 'Windows Time (w32time)' cannot be started due to the following "
                            "error: Cannot start service w32time on computer '.'.")
            ctx.finish("failed", 1, facts=facts, changes=changes, messages=messages)
        await ctx.host.sleep(2.0)
        changes.append({"kind": "service-state", "name": "w32time", "from": w32time.status, "to": "Running"})
        w32time.status = "Running"

    facts["domain_member"] = state.domain_role != "workgroup"
    if peer:
        state.time_source = peer.split()[0].split(",")[0]
        changes.append({"kind": "time-config", "peers": peer})
    elif facts["domain_member"]:
        messages.append("domain member: time configuration left to the domain hierarchy")

    ctx.verbose("w32tm /resync")
    await ctx.host.sleep(3.0)
    state.clock_skew_seconds = ctx.host.rng.uniform(-0.05, 0.05)
    state.last_time_sync = state.clock
    facts["resync_exit_code"] = 0
    facts["resync_output"] = ["Sending resync command to local computer", "The command completed successfully."]
    facts["skew_after_seconds"] = after = skew()
    limit = int(param(ctx, "MaxSkewSeconds", 120))
    if after is not None and abs(after) > limit:
        messages.append(f"clock still {after} s off the controller after resync (limit {limit} s): "
                        "the time source itself may be wrong")
        ctx.finish("failed", 1, facts=facts, changes=changes, messages=messages)
    ctx.finish("ok", 0, facts=facts, changes=changes, messages=messages)


# The pack's root causes the lab reports, with what makes each one "Detected" on the host model.
ROOT_CAUSES = (
    ("RC_WUServiceStopped", "Windows Update service is not running",
     lambda s: any(s.services[n].status != "Running" for n in ("wuauserv", "bits", "cryptsvc") if n in s.services)),
    ("RC_DataStore", "Potential Windows Update Database error detected",
     lambda s: s.download_cache_corrupt or s.catroot_corrupt),
    ("RC_PendingRestart", "A restart is pending", lambda s: bool(s.pending_reboot)),
)


@model("troubleshooter", sha256="a02bf7a6527a7a7984df607c1a9e7103a48b3ab790f9928521922d55212f35b0")
async def troubleshooter(ctx: StepContext) -> None:
    """Runs and reads back what it found, but repairs nothing: each scenario has its own repairing step.

    So the pack never adds a pending-reboot signal here, and the script's 3010 never comes up.
    """
    require_elevated(ctx)
    state = ctx.host.state
    facts: dict[str, Any] = {"pack_path": expand(TROUBLESHOOTER_PACK)}
    if not state.troubleshooter_available:
        ctx.finish("not-applicable", 2, facts=facts, messages=[
            "the Windows Update troubleshooting pack is not on this OS (retired or removed); use reset-components instead"])
    run = str(param(ctx, "RunId", "")) or "adhoc"
    facts["report_folder"] = expand(f"%ProgramData%\\wuremote\\runs\\{run}\\troubleshooter\\troubleshooter-"
                                    f"{state.clock:%Y%m%dT%H%M%SZ}")
    ctx.progress("Windows Update troubleshooter", "Detecting problems", 0)
    await ctx.host.sleep(TROUBLESHOOTER_SECONDS)
    ctx.progress("Windows Update troubleshooter", "Detecting problems", 100)
    causes = [{"id": rc_id, "name": name, "status": "Not Fixed" if detected(state) else "Not Detected"}
              for rc_id, name, detected in ROOT_CAUSES]
    facts["root_causes"] = causes
    facts["report_found"] = True
    unfixed = [c["name"] for c in causes if c["status"] in ("Not Fixed", "Detected")]
    messages = [f"root causes left unfixed: {'; '.join(unfixed)}"] if unfixed else []
    ctx.finish("ok", 0, facts=facts, messages=messages)


BACKUP_NAME = re.compile(r"\.wuremote-(\d{8}T\d{6}Z)(-\d+)?$")


def backup_stamp(key: str) -> dt.datetime | None:
    """The UTC time in a backup folder's name (reset-components: <leaf>.wuremote-yyyyMMddTHHmmssZ[-n])."""
    match = BACKUP_NAME.search(key.split("\\")[-1])
    if match is None:
        return None
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
