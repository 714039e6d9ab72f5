"""Model of ps_scripts/reset-components.ps1: stop the update services, move their caches aside, start them again.

What it repairs on the host model: a corrupt download cache (gentle is enough), a corrupt
catroot2 (full), stopped update services, and a service disabled without a policy.  A
service Group Policy disables stays disabled and is reported, as the script leaves it.
"""

from __future__ import annotations

from typing import Any

from ..host import BITS_DOWNLOADER, CATROOT2, DATASTORE, DOWNLOAD, SOFTWARE_DISTRIBUTION, Folder, HostState, Service, expand
from .helpers import param, require_elevated
from .maintenance import remove_folder
from .registry import StepContext, model

RESET_SERVICES = ("wuauserv", "bits", "cryptsvc", "msiserver")
UPDATE_SERVICES = ("wuauserv", "bits", "cryptsvc", "msiserver", "trustedinstaller", "appidsvc", "usosvc")
NEVER_TOUCH = ("waasmedicsvc", "winrm")
# What a service recreates when it starts and finds its folder gone.
RECREATED_ON_START = {
    "wuauserv": ((SOFTWARE_DISTRIBUTION, 0), (DATASTORE, 32 << 20), (DOWNLOAD, 0)),
    "cryptsvc": ((CATROOT2, 8 << 20),),
    "bits": ((BITS_DOWNLOADER, 0),),
}


def windows_default_start_type(name: str, build: int) -> str:
    """Get-WindowsDefaultStartType: a clean install's start type (usosvc is delayed-auto from build 17763)."""
    if name == "cryptsvc":
        return "Automatic"
    if name == "usosvc":
        return "AutomaticDelayed" if build >= 17763 else "Manual"
    return "Manual"


def start_service(state: HostState, service: Service) -> None:
    service.status = "Running"
    for key, size in RECREATED_ON_START.get(service.name, ()):
        state.folders.setdefault(key, Folder(size, state.clock))


class _Reset:
    """One run of the step: the changes and messages it collects, as the script's lists do."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.state = ctx.host.state
        self.stamp = f"{self.state.clock:%Y%m%dT%H%M%SZ}"
        self.keep = int(param(ctx, "KeepBackups", 2))
        self.stop_timeout = int(param(ctx, "StopTimeoutSeconds", 60))
        self.changes: list[dict[str, Any]] = []
        self.messages: list[str] = []

    async def stop(self, service: Service) -> str | None:
        """Stop-UpdateService: None, or why the service did not stop within the bounded wait."""
        if service.status == "Stopped":
            return None
        if service.stop_refuses:
            await self.ctx.host.sleep(self.stop_timeout)
            return f"{service.name} did not stop within {self.stop_timeout} s (state StopPending); nothing was moved"
        await self.ctx.host.sleep(2.0)
        service.status = "Stopped"
        self.changes.append({"kind": "service-state", "name": service.name, "from": "Running", "to": "Stopped"})
        return None

    def move_to_backup(self, key: str) -> None:
        """Move-ToBackup: rename to <leaf>.wuremote-<stamp> (-2, -3... if taken), keep the newest `keep`."""
        folders = self.state.folders
        if key not in folders:
            return
        target = f"{key}.wuremote-{self.stamp}"
        n = 2
        while target in folders:
            target = f"{key}.wuremote-{self.stamp}-{n}"
            n += 1
        prefix = key + "\\"
        for old in [k for k in folders if k == key or k.startswith(prefix)]:
            folders[target + old[len(key):]] = folders.pop(old)
        self.changes.append({"kind": "folder-moved", "path": expand(key), "backup": expand(target)})
        backups = sorted((k for k in folders if k.startswith(f"{key}.wuremote-") and "\\" not in k[len(key):]), reverse=True)
        for old in backups[self.keep:]:
            remove_folder(self.state, old)
            self.changes.append({"kind": "backup-pruned", "path": expand(old)})


@model("reset-components", sha256="7a496e6c47534cb8b02371b2538a578451c515bcf834d8a6540a01b07f9b72b2")
async def reset_components(ctx: StepContext) -> None:
    require_elevated(ctx)
    state = ctx.host.state
    level = str(param(ctx, "Level", "gentle")).lower()
    facts: dict[str, Any] = {"level": level}
    facts["servicing"] = {"pending_xml": state.servicing_in_progress}
    if state.servicing_in_progress:
        ctx.finish("failed", 4, facts=facts, messages=[
            "a servicing operation is pending a reboot (pending.xml): reboot, then run again; nothing was changed"])
    if state.dism_running:  # still running after the script's bounded wait (the wait itself is not modelled)
        facts["servicing"]["busy_processes"] = "DismHost (5012)"
        ctx.finish("failed", 4, facts=facts, messages=[
            "DISM or sfc is running (DismHost (5012)); left alone: run again when it ends; nothing was changed"])

    reset = _Reset(ctx)
    services = {n: state.services[n] for n in UPDATE_SERVICES if n in state.services and n not in NEVER_TOUCH}
    recorded = {name: service.start_mode for name, service in services.items()}
    was_running = [name for name, service in services.items() if service.status == "Running"]
    facts["start_types_before"] = dict(recorded)
    facts["policy_disabled"] = []

    failure = None
    for name, mode in list(recorded.items()):
        if mode != "Disabled":
            continue
        if state.policy_readable and services[name].policy_start_type == "Disabled":
            facts["policy_disabled"].append(name)
            reset.messages.append(f"{name} is disabled by Group Policy: fix the policy; left as it is")
            continue
        default = windows_default_start_type(name, state.build)
        services[name].set_start_mode(default)
        reset.changes.append({"kind": "service-start-type", "name": name, "from": "Disabled", "to": default,
                              "reason": "disabled without a policy"})
        recorded[name] = default

    for name in RESET_SERVICES:
        if name in services:
            failure = await reset.stop(services[name])
            if failure:
                break
    if failure is None:
        if level == "gentle":
            reset.move_to_backup(DATASTORE)
            reset.move_to_backup(DOWNLOAD)
            state.download_cache_corrupt = state.download_cache_stale = False
            state.downloaded_kbs.clear()  # the downloads went aside with the Download folder
        else:
            for key in (SOFTWARE_DISTRIBUTION, CATROOT2, BITS_DOWNLOADER):
                reset.move_to_backup(key)
            state.download_cache_corrupt = state.catroot_corrupt = state.download_cache_stale = False
            state.downloaded_kbs.clear()
        await ctx.host.sleep(1.0)
    else:
        reset.messages.append(f"reset stopped: {failure}")

    # finally: start types as recorded, services running again
    for name, mode in recorded.items():
        if services[name].start_mode != mode:
            reset.changes.append({"kind": "service-start-type", "name": name, "from": services[name].start_mode,
                                  "to": mode, "reason": "restored"})
            services[name].set_start_mode(mode)
    not_started = []
    for name in dict.fromkeys([*RESET_SERVICES, *was_running]):
        service = state.services.get(name)
        if service is None or name in NEVER_TOUCH or name in facts["policy_disabled"] or service.status == "Running":
            continue
        if service.effective_start_type == "Disabled":
            not_started.append(name)
            reset.messages.append(f"{name} did not start: Service '{service.display_name} ({name})' cannot be started "
                                  f"due to the following error: Cannot start service {name} on computer '.'.")
            continue
        await ctx.host.sleep(1.0)
        start_service(state, service)
        reset.changes.append({"kind": "service-state", "name": name, "from": "Stopped", "to": "Running"})
    facts["not_started"] = not_started
    facts["start_types_after"] = {name: services[name].start_mode for name in recorded}
    facts["reboot_recommended"] = True
    # The script recommends a reboot in its facts but exits 0: the reset itself needs none.
    if failure or not_started:
        ctx.finish("failed", 1, facts=facts, changes=reset.changes, messages=reset.messages)
    ctx.finish("ok", 0, facts=facts, changes=reset.changes, messages=reset.messages)
