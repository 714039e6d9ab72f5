"""Models of ps_scripts/lock.ps1 and restart.ps1, and what every step model shares.

The shared part is what the prelude gives each script: parameters bound by name (PowerShell
binds them case-insensitively), Assert-WuElevated, and the UTC stamps the scripts write.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ..engine import ErrorInfo, Stop
from ..host import ERROR_SHUTDOWN_IN_PROGRESS, ERROR_SHUTDOWN_IS_SCHEDULED, parse_windows_utc, windows_utc
from .registry import StepContext, model

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # Test-WuName
# Get-WuPendingReboot's order: the signals that earn a restart.
PENDING_SIGNALS = ("cbs-reboot-pending", "wu-reboot-required", "configmgr-reboot-pending", "pending-computer-rename")
# PendingFileRenameOperations holding entries: in HostState.pending_reboot as Windows has it, but
# reported apart (Test-WuPendingFileRename) and never a reason to restart.
FILE_RENAME = "pending-file-rename"


def param(ctx: StepContext, name: str, default: Any = None) -> Any:
    """A bound parameter's value by case-insensitive name, or `default` when it was not passed."""
    for key, value in ctx.params.items():
        if key.lower() == name.lower() and value is not None:
            return value
    return default


def switch(ctx: StepContext, name: str) -> bool:
    return bool(param(ctx, name, False))


def strings(ctx: StepContext, name: str) -> list[str]:
    """A [string[]] parameter: one value binds as a one-element array."""
    value = param(ctx, name, [])
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def pending_reboot(ctx: StepContext) -> list[str]:
    """Get-WuPendingReboot: every pending-reboot signal by name, in the prelude's order."""
    signals = ctx.host.state.pending_reboot - {FILE_RENAME}
    return [name for name in PENDING_SIGNALS if name in signals] + sorted(signals - set(PENDING_SIGNALS))


def file_rename_pending(ctx: StepContext) -> bool:
    """Test-WuPendingFileRename."""
    return FILE_RENAME in ctx.host.state.pending_reboot


def require_elevated(ctx: StepContext) -> None:
    """Assert-WuElevated: exit 5 and change nothing in a session without an administrator token."""
    if not ctx.host.state.is_admin:
        ctx.finish("not-elevated", 5, messages=["this step needs an elevated (administrator) session; nothing was changed"])


def require(ctx: StepContext, name: str) -> Any:
    """A mandatory parameter: a non-interactive session fails binding before the script runs."""
    value = param(ctx, name)
    if value is None or value == "":
        raise Stop(1, ErrorInfo(
            f"Cannot process command because of one or more missing mandatory parameters: {name}.",
            category="InvalidArgument", fqid="MissingMandatoryParameter",
            exception_type="System.Management.Automation.ParameterBindingException", command=ctx.meta.name))
    return value


@model("lock", sha256="a8fe83562e9e570898e5bd1c3c9cda6c888cd310d3b03f8112579cb022a7b113")
async def lock(ctx: StepContext) -> None:
    require_elevated(ctx)
    state = ctx.host.state
    action = str(param(ctx, "Action", "take")).lower()
    run_id = str(param(ctx, "RunId", ""))
    if action != "show" and not NAME_PATTERN.match(run_id):
        ctx.finish("failed", 1, messages=["take and release need a run id of letters, digits, dot, dash or underscore (1-64)"])
    await ctx.host.sleep(0.3)
    now = state.clock
    holder = state.lock
    expired = holder is not None and parse_windows_utc(str(holder["expires_utc"])) < now
    free = holder is None or expired
    mine = holder is not None and str(holder["run_id"]) == run_id
    facts: dict[str, Any] = {"action": action, "run_id": run_id, "holder": holder, "expired": expired}
    changes: list[dict[str, Any]] = []
    if action == "take":
        if not (free or mine):
            ctx.finish("failed", 4, facts=facts,
                       messages=[f"host is locked by run {holder['run_id']} until {holder['expires_utc']}"])  # type: ignore[index]
        minutes = int(param(ctx, "ExpiresMinutes", 240))
        expires = windows_utc(now + dt.timedelta(minutes=minutes))
        taken = str(holder["taken_utc"]) if mine and not expired and holder else windows_utc(now)
        state.lock = {"run_id": run_id, "taken_utc": taken, "expires_utc": expires, "host": state.name}
        facts["holder"] = state.lock
        changes.append({"kind": "lock-taken", "run_id": run_id, "expires_utc": expires})
    elif action == "release":
        if mine or holder is None:
            state.lock = None
            facts["holder"] = None
            if mine:
                changes.append({"kind": "lock-released", "run_id": run_id})
        elif expired:
            ctx.finish("ok", 0, facts=facts, messages=[f"lock of run {holder['run_id']} expired; left for its owner or the next take"])
        else:
            ctx.finish("failed", 4, facts=facts, messages=[f"lock belongs to run {holder['run_id']}; not released"])
    else:
        facts["free"] = free
    ctx.finish("ok", 0, facts=facts, changes=changes)


@model("restart", sha256="f9bd6cd2f5b422fd0b078cf0f08794e09d6cc7ecedfa72ffb3cde3af35edf4e1")
async def restart(ctx: StepContext) -> None:
    reason = str(require(ctx, "Reason"))
    require_elevated(ctx)
    state = ctx.host.state
    delay = int(param(ctx, "DelaySeconds", 5))
    facts: dict[str, Any] = {
        "last_boot_utc": windows_utc(state.last_boot),
        "pending_reboot": pending_reboot(ctx),
        "delay_seconds": delay,
    }
    comment = "wuremote: " + re.sub(r"[\r\n]+", " ", reason)
    changes: list[dict[str, Any]] = []
    await ctx.host.sleep(0.5)
    code = ctx.host.shutdown_exe("restart", delay)
    if code == ERROR_SHUTDOWN_IS_SCHEDULED:  # someone else's: shutdown /a, then ours once more
        facts["abort_exit_code"] = abort = ctx.host.shutdown_abort()
        if abort == 0:
            changes.append({"kind": "scheduled-shutdown-aborted"})
        code = ctx.host.shutdown_exe("restart", delay)
    facts["shutdown_exit_code"] = code
    if code not in (0, ERROR_SHUTDOWN_IN_PROGRESS):
        ctx.finish("failed", 1, facts=facts, changes=changes,
                   messages=[f"shutdown.exe refused the restart (exit {code}): "])
    if code == ERROR_SHUTDOWN_IN_PROGRESS:
        message = "a shutdown started by something else is already in progress (exit 1115); waiting for the host to come back"
    else:
        message = f"restart in {delay} s: {comment}"
        changes.append({"kind": "restart-scheduled", "reason": comment})
    ctx.finish("ok", 0, facts=facts, changes=changes, messages=[message], reboot_required=True)
