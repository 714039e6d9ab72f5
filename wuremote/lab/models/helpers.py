"""Models of ps_scripts/lock.ps1 and restart.ps1, and what every step model shares.

The shared part is what the prelude gives each script: parameters bound by name (PowerShell
binds them case-insensitively), Assert-WuElevated, and the UTC stamps the scripts write.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ..engine import ErrorInfo, Stop
from ..host import (
    ERROR_SHUTDOWN_IN_PROGRESS,
    ERROR_SHUTDOWN_IS_SCHEDULED,
    STATE_ROOT,
    TRUSTED_OWNERS,
    Host,
    parse_windows_utc,
    windows_utc,
)
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


CREATOR_OWNER = "S-1-3-0"


class StateRootUnsafe(Exception):
    """Protect-WuStateRoot refused the state folder (its message is the script's)."""


def protect_state_root(host: Host, session_user: str = "") -> str:
    """Protect-WuStateRoot: refuse a root that is a link; reset the root's owner and ACL; then fail
    closed on any item under it that is a link, owned by someone else, or writable by anyone else."""
    state = host.state
    root = STATE_ROOT.lower()
    item = state.state_items.get(root)
    if item is not None and item.reparse:
        raise StateRootUnsafe(f"the state folder {STATE_ROOT} is a junction or symbolic link; refused, nothing was "
                              f"changed. Remove the link (rmdir {STATE_ROOT}; the folder it points at is kept) and run again")
    state.state_items.pop(root, None)
    trusted = set(TRUSTED_OWNERS) | ({session_user} if session_user else set())
    unsafe = []
    for path, entry in sorted(state.state_items.items()):
        if not path.startswith(root + "\\"):
            continue
        if any(path.startswith(link + "\\") for link, e in state.state_items.items() if e.reparse):
            continue  # never walked into
        shown = STATE_ROOT + path[len(root):]
        if entry.reparse:
            unsafe.append(f"{shown}: a junction or symbolic link")
        elif entry.owner not in trusted:
            unsafe.append(f"{shown}: owned by {entry.owner}")
        elif set(entry.writers) - trusted - {CREATOR_OWNER}:
            unsafe.append(f"{shown}: writable by {', '.join(sorted(set(entry.writers) - trusted - {CREATOR_OWNER}))}")
    if unsafe:
        raise StateRootUnsafe(f"the state folder {STATE_ROOT} holds items that are not only SYSTEM's and Administrators': "
                              f"{'; '.join(unsafe[:5])}; refused (fail closed), nothing was changed. Check what they hold, "
                              "delete them and run again")
    return STATE_ROOT


def thrown(message: str) -> Stop:
    """A script's `throw 'text'` that nothing caught: RuntimeException, its message as the error id."""
    return Stop(1, ErrorInfo(message, category="OperationStopped", fqid=message,
                             exception_type="System.Management.Automation.RuntimeException", command=""))


BOOT_MARKER_KEY = "HKLM\\SOFTWARE\\wuremote\\boot"  # lock.ps1's volatile key: this boot's id
CONTROLLER_PATTERN = re.compile(r"^$|^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def _boot_marker(ctx: StepContext) -> str:
    """This boot's id, kept in a volatile key that the next boot no longer has (HostState.volatile_registry)."""
    keys = ctx.host.state.volatile_registry
    if BOOT_MARKER_KEY not in keys:
        keys[BOOT_MARKER_KEY] = f"{ctx.host.rng.getrandbits(128):032x}"
    return keys[BOOT_MARKER_KEY]


def _lease_over(holder: dict[str, Any], now: dt.datetime, tick: int, marker: str) -> bool:
    """Whether a lease ran out: on the performance counter (Host.tick_ms) while in the boot it was
    renewed in; from a later boot, at least this boot's uptime has passed; an older lock.json
    without lease fields by its expires_utc on the host's clock."""
    if not {"renewed_tick_ms", "boot_marker", "lease_minutes"} <= holder.keys():
        return parse_windows_utc(str(holder["expires_utc"])) < now
    elapsed = tick
    if str(holder["boot_marker"]) == marker and tick >= int(holder["renewed_tick_ms"]):
        elapsed = tick - int(holder["renewed_tick_ms"])
    return elapsed > int(holder["lease_minutes"]) * 60000


@model("lock", sha256="b0f114ce64b1114db80d65f45b2d9ea6f36163af022bffd226453191c7cc0103")
async def lock(ctx: StepContext) -> None:
    action = str(param(ctx, "Action", "take")).lower()
    controller = str(param(ctx, "Controller", ""))
    if action not in ("take", "renew", "release", "show") or not CONTROLLER_PATTERN.match(controller):
        raise Stop(1, ErrorInfo("Cannot validate argument on parameter", category="InvalidData",
                                fqid="ParameterArgumentValidationError",
                                exception_type="System.Management.Automation.ParameterBindingValidationException",
                                command=ctx.meta.name))
    require_elevated(ctx)
    state = ctx.host.state
    run_id = str(param(ctx, "RunId", ""))
    if action != "show" and not NAME_PATTERN.match(run_id):
        ctx.finish("failed", 1, messages=["take, renew and release need a run id of letters, digits, dot, dash or underscore (1-64)"])
    try:
        protect_state_root(ctx.host)
    except StateRootUnsafe as exc:
        raise thrown(str(exc)) from None
    await ctx.host.sleep(0.3)
    now, tick, marker = state.clock, ctx.host.tick_ms(), _boot_marker(ctx)
    holder = state.lock
    expired = holder is not None and _lease_over(holder, now, tick, marker)
    free = holder is None or expired
    held_by = str(holder.get("controller") or "") if holder else ""
    mine = holder is not None and str(holder["run_id"]) == run_id and (not held_by or held_by == controller)
    who = f"run {holder['run_id']}" + (f" of controller {held_by}" if held_by else "") if holder else ""
    facts: dict[str, Any] = {"action": action, "run_id": run_id, "controller": controller, "holder": holder,
                             "expired": expired}
    changes: list[dict[str, Any]] = []
    if action in ("take", "renew"):
        if not (free or mine):
            assert holder is not None
            message = (f"host is locked by {who} (lease of {holder['lease_minutes']} min, renewed {holder['renewed_utc']})"
                       if "lease_minutes" in holder else f"host is locked by {who} until {holder['expires_utc']}")
            ctx.finish("failed", 4, facts=facts, messages=[message])
        minutes = int(param(ctx, "ExpiresMinutes", 240))
        expires = windows_utc(now + dt.timedelta(minutes=minutes))
        record: dict[str, object] = {
            "run_id": run_id, "controller": controller, "taken_utc": windows_utc(now), "renewed_utc": windows_utc(now),
            "expires_utc": expires, "lease_minutes": minutes, "renewals": 0, "boot_marker": marker,
            "renewed_tick_ms": tick, "host": state.name}
        if mine and not expired and holder:
            record["taken_utc"] = str(holder["taken_utc"])
            if "renewals" in holder:
                record["renewals"] = int(holder["renewals"]) + 1  # type: ignore[call-overload]
        state.lock = record
        facts["holder"] = record
        changes.append({"kind": "lock-taken", "run_id": run_id, "expires_utc": expires})
    elif action == "release":
        if mine or holder is None:
            state.lock = None
            facts["holder"] = None
            if mine:
                changes.append({"kind": "lock-released", "run_id": run_id})
        elif expired:
            ctx.finish("ok", 0, facts=facts, messages=[f"lock of {who} expired; left for its owner or the next take"])
        else:
            ctx.finish("failed", 4, facts=facts, messages=[f"lock belongs to {who}; not released"])
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
