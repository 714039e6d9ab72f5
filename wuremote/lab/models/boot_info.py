"""Model of ps_scripts/boot-info.ps1: last boot time and pending-reboot signals; changes nothing."""

from __future__ import annotations

import datetime as dt

from .registry import StepContext, model


@model("boot-info", sha256="7360d19658b2d4f235aa3ac44081243ba745d2f50ecb9155e1f9d3e4b39704f0")
async def boot_info(ctx: StepContext) -> None:
    await ctx.host.sleep(0.5)
    state = ctx.host.state
    signals = sorted(state.pending_reboot)
    ctx.finish(
        "ok",
        0,
        facts={
            "last_boot_utc": state.last_boot.astimezone(dt.timezone.utc).isoformat(),
            "pending_reboot": signals,
        },
    )
