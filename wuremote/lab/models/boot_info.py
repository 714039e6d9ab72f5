"""Model of ps_scripts/boot-info.ps1: last boot time and the pending-reboot signals that earn a restart
(a pending file rename reported apart); changes nothing.  With RebootRequiredIfPending its result asks
for a restart when one is pending: what stops a chain of steps after it (the lock's release at a host's end)."""

from __future__ import annotations

import datetime as dt

from .helpers import file_rename_pending, pending_reboot
from .registry import StepContext, model


@model("boot-info", sha256="342c5bd08cb472338cf6a73978b9183f4e1a3558c8178d52b1b2e9f385d6f278")
async def boot_info(ctx: StepContext) -> None:
    await ctx.host.sleep(0.5)
    state = ctx.host.state
    pending = pending_reboot(ctx)
    ctx.finish(
        "ok",
        0,
        facts={
            "last_boot_utc": state.last_boot.astimezone(dt.timezone.utc).isoformat(),
            "pending_reboot": pending,
            "pending_file_rename": file_rename_pending(ctx),
        },
        reboot_required=bool(ctx.params.get("RebootRequiredIfPending")) and bool(pending),
    )
