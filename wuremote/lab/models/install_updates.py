"""Model of install-updates: search, select, then download and install one update at a time as SYSTEM.

What each update's installation answers comes from the host's live conditions
(wuremote/lab/agent.py ``install_hresult``), so a rung that clears a condition (reset-components,
dism, clean-boot) changes the next install without this model knowing which.  The search follows
the catalog's rules (wuremote/lab/catalog.py: supersedence and the second wave).
"""

from __future__ import annotations

from typing import Any

from ..agent import download_hresult, install_hresult, offered, search_hresult
from ..host import windows_utc
from .helpers import param, require_elevated, strings, switch
from .long_steps import NETWORK_HRESULTS, SYSTEM_USER, hex_hresult, int_param, other_installs, wait_while_busy
from .registry import StepContext, model

SEARCH_SECONDS = 2 * 60
SUCCEEDED, FAILED = 2, 4  # OperationResultCode (learn.microsoft.com/windows/win32/api/wuapi/ne-wuapi-operationresultcode)


def _install_seconds(size_mb: int) -> float:
    """Download and installation together: a minute, plus time by size (a 600 MB cumulative: about 5 minutes)."""
    return 60 + size_mb * 0.4


@model("install-updates", sha256="69f25e38873a3374145c40a5fb9a9f264b7463d78c4fbe164fe7574eae1a14c8")
async def install_updates(ctx: StepContext) -> None:
    categories = strings(ctx, "CategoryNames") if param(ctx, "CategoryNames") is not None else [
        "Security Updates", "Critical Updates"]
    accept = [kb.upper() for kb in strings(ctx, "AcceptKb")] if param(ctx, "AcceptKb") is not None else []
    reject = [kb.upper() for kb in strings(ctx, "RejectKb")] if param(ctx, "RejectKb") is not None else []
    include_optional = switch(ctx, "IncludeOptional")
    search_only = switch(ctx, "SearchOnly")
    wait_seconds = int_param(ctx, "WaitSeconds", 1800, 0, 7200)
    run_id = str(param(ctx, "RunId", ""))
    require_elevated(ctx)
    state = ctx.host.state
    facts: dict[str, Any] = {"as_system": ctx.user == SYSTEM_USER, "search_only": search_only, "searched": 0,
                             "selected": [], "skipped": [], "results": [], "pending": [], "reboot_required": False,
                             "last_success_utc": None}

    def finish(status: str, code: int, messages: list[str]) -> None:
        changes = [{"kind": "update-installed", "kb": r["kb"]} for r in facts["results"] if r["result_code"] in (2, 3)]
        ctx.finish(status, code, facts=facts, changes=changes, messages=messages, reboot_required=code == 3010)

    if not search_only:
        _, others = await wait_while_busy(ctx, lambda: other_installs(ctx, run_id), wait_seconds)
        if others:
            facts["busy"] = others
            finish("failed", 4, [f"{', '.join(others)} still running after {wait_seconds} s: left alone (never "
                                 "stopped); install again when it ends"])
        if state.servicing_in_progress:  # pending.xml in the host model
            finish("failed", 4, ["servicing is pending a reboot (pending.xml): restart, then install"])

    if state.last_install_success is not None:
        facts["last_success_utc"] = windows_utc(state.last_install_success)
    await ctx.host.sleep(SEARCH_SECONDS)
    searched = search_hresult(state)
    if searched is not None:
        facts["search_hresult"] = hex_hresult(searched)
        if searched in NETWORK_HRESULTS:
            finish("failed", 7, [f"cannot reach the update server ({hex_hresult(searched)}): network, proxy or WSUS"])
        finish("failed", 1, [f"search failed with {hex_hresult(searched)}"])
    found = offered(state)
    facts["searched"] = len(found)
    selected = []
    for update in found:
        info: dict[str, Any] = {"kb": update.kb, "title": update.title, "categories": [update.category],
                                "optional": update.optional, "size_bytes": update.size_mb << 20}
        reason = ""
        if "*" not in categories and update.category not in categories:
            reason = "category"
        elif update.optional and not include_optional:
            reason = "optional"
        elif accept and update.kb not in accept:
            reason = "not accepted"
        elif update.kb in reject:
            reason = "rejected"
        if reason:
            facts["skipped"].append(dict(info, reason=reason))
        else:
            selected.append((update, info))
    facts["selected"] = [info for _, info in selected]
    facts["pending"] = [update.kb for update, _ in selected]
    if search_only or not selected:
        finish("ok", 0, [f"search found {len(found)}, selected {len(selected)}"])

    total = len(selected)
    for index, (update, _info) in enumerate(selected):
        label = f"{index + 1}/{total} {update.kb}"
        ctx.progress("install-updates", label, 100 * index // total, message=label)
        ctx.verbose(f"{label}: {update.title}")
        await ctx.host.sleep(_install_seconds(update.size_mb) / 2)
        ctx.progress("install-updates", label, int(100 * (index + 0.5) // total), message=label)
        await ctx.host.sleep(_install_seconds(update.size_mb) / 2)
        entry = {"kb": update.kb, "title": update.title, "phase": "install", "result_code": SUCCEEDED,
                 "hresult": "0x00000000", "reboot_required": False}
        code: int | None = None
        if update.kb not in state.downloaded_kbs and not state.download_cache_stale:  # IsDownloaded false: fetch it
            code = download_hresult(state) if facts["as_system"] else 0x80070005
            if code is None:
                state.downloaded_kbs.add(update.kb)
            else:
                entry["phase"] = "download"
        if code is None:
            code = install_hresult(state, update.kb) if facts["as_system"] else 0x80070005
        if code is None:
            state.installed_kbs.add(update.kb)
            state.downloaded_kbs.discard(update.kb)
            state.install_counts[update.kb] = state.install_counts.get(update.kb, 0) + 1
            state.last_install_success = state.clock
            if update.reboot:
                entry["reboot_required"] = facts["reboot_required"] = True
                state.pending_reboot.add("wu-reboot-required")
        else:
            entry.update(result_code=FAILED, hresult=hex_hresult(code))
            state.update_history.insert(0, {
                "time_utc": windows_utc(state.clock), "event_id": 20, "hresult": hex_hresult(code),
                "message": f"Installation Failure: Windows failed to install the following update with error "
                           f"{hex_hresult(code)}: {update.title}."})
        facts["results"].append(entry)
    ctx.progress("install-updates", "done", 99, message=f"{total}/{total} done")
    installed = [r for r in facts["results"] if r["result_code"] == SUCCEEDED]
    failed = [r for r in facts["results"] if r["result_code"] != SUCCEEDED]
    facts["pending"] = [r["kb"] for r in failed]
    messages = [f"installed {len(installed)} of {len(facts['results'])}"]
    if failed:
        finish("failed", 1, messages + [f"{r['kb']} {r['phase']} failed: {r['hresult']}" for r in failed])
    if facts["reboot_required"]:
        finish("reboot-required", 3010, messages + ["a restart completes the installation"])
    finish("ok", 0, messages)
