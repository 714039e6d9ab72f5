"""Model of ps_scripts/boot-info.ps1: last boot time and the pending-reboot signals that earn a restart
(a pending file rename reported apart); changes nothing."""

from __future__ import annotations

import datetime as dt

from .helpers import file_rename_pending, pending_reboot
from .registry import StepContext, model


@model("boot-info", sha256="c552428473e7bad680ea4b7a36d748b51f1c3d0ed5d6af7754101f404ab840e7")
async def boot_info(ctx: StepContext) -> None:
    await ctx.host.sleep(0.5)
    state = ctx.host.state
    ctx.finish(
        "ok",
        0,
        facts={
            "last_boot_utc": state.last_boot.astimezone(dt.timezone.utc).isoformat(),
            "pending_reboot": pending_reboot(ctx),
            "pending_file_rename": file_rename_pending(ctx),
        },
    )
