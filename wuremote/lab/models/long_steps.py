"""Models of the long steps that run detached: dism, sfc, install-kb and verify.

Each body mirrors its script's result shape and exit codes, changes the host model as the
native tool would, and narrates as Invoke-WuNative does (every tool line is a verbose
record, which the detached runner also writes to the transcript).  Progress records stand
for Set-WuStepProgress: the detached runner turns them into status.json's percent.

Lab stand-ins, documented here because no Windows API is behind them:
- a path "exists" when HostState.files (or .pushed) holds it or a file under it (Test-Path);
- a package's Authenticode status is "Valid" when its bytes start like a cabinet (``MSCF``,
  as every .msu does), "NotSigned" otherwise;
- ``-Url`` always downloads (a signed cabinet named by the URL's last segment).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ...contract import hresult
from ..agent import agent_outcome, applicable_kbs, install_hresult, update_title
from ..engine import ErrorInfo, Stop
from ..host import HostState, windows_utc
from .helpers import param, require, require_elevated, switch
from .registry import StepContext, model

SYSTEM_USER = "SYSTEM"  # who a detached body runs as (the agent serves only it)
PROGRAM_DATA = "C:\\ProgramData"
SYSTEM_ROOT = "C:\\Windows"
CABINET_MAGIC = b"MSCF"


# --- parameters, bound as PowerShell binds them ------------------------------------------------
def _binding_error(ctx: StepContext, message: str, exception: str) -> Stop:
    return Stop(1, ErrorInfo(message, category="InvalidData", fqid="ParameterArgumentValidationError",
                             exception_type=f"System.Management.Automation.{exception}", command=ctx.meta.name))


def text_param(ctx: StepContext, name: str, pattern: str | None = None, *, mandatory: bool = False) -> str:
    """A [string] parameter, checked against its [ValidatePattern] (case-insensitive, as PowerShell's)."""
    text = str(require(ctx, name) if mandatory else param(ctx, name, ""))
    if pattern is not None and not re.search(pattern, text, re.IGNORECASE):
        raise _binding_error(
            ctx,
            f"Cannot validate argument on parameter '{name}'. The argument \"{text}\" does not match the \"{pattern}\" "
            f"pattern. Supply an argument that matches \"{pattern}\" and try the command again.",
            "ParameterBindingValidationException",
        )
    return text


def int_param(ctx: StepContext, name: str, default: int, minimum: int, maximum: int) -> int:
    """An [int]/[long] parameter with its [ValidateRange]."""
    value = param(ctx, name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _binding_error(ctx, f"Cannot process argument transformation on parameter '{name}'. Cannot convert value "
                                  f"\"{value}\" to type \"System.Int64\".",
                             "ParameterBindingArgumentTransformationException") from None
    if not minimum <= number <= maximum:
        bound, relation = (minimum, "less than the minimum") if number < minimum else (maximum, "greater than the maximum")
        raise _binding_error(ctx, f"Cannot validate argument on parameter '{name}'. The {number} argument is {relation} "
                                  f"allowed range of {bound}. Supply an argument that is within range and then try the "
                                  "command again.", "ParameterBindingValidationException")
    return number


def run_folder(run_id: str, step: str) -> str:
    """Get-WuRunFolder (a run id of '' is the prelude's 'adhoc')."""
    return f"{PROGRAM_DATA}\\wuremote\\runs\\{run_id or 'adhoc'}\\{step}"


def path_exists(state: HostState, path: str) -> bool:
    key = path.lower().rstrip("\\")
    return any(key in names or any(name.startswith(key + "\\") for name in names)
               for names in (state.files, state.pushed))


def signed_hresult(code: int) -> int:
    """An HRESULT as $LASTEXITCODE holds a native tool's exit code (negative when the top bit is set)."""
    return code - (1 << 32) if code & 0x80000000 else code


def hex_hresult(code: int) -> str:
    """ConvertTo-WuHexHResult."""
    return f"0x{code & 0xFFFFFFFF:08X}"


async def _native_progress(ctx: StepContext, step: str, lines: list[str], model_seconds: float, until: float = 100.0) -> None:
    """A native tool's run: its percent lines as verbose records and progress (capped at 99) over its duration."""
    marks = [p for p in range(10, 101, 10) if p <= until] + ([until] if until % 10 else [])
    for line in lines:
        ctx.verbose(line)
    for mark in marks:
        await ctx.host.sleep(model_seconds / len(marks))
        ctx.verbose(_dism_bar(mark))
        ctx.progress(step, f"{mark:.1f}% complete", min(99, int(mark)))


def _dism_bar(percent: float) -> str:
    label = f"{percent:.1f}%"
    cells = list("=" * round(58 * percent / 100) + " " * (58 - round(58 * percent / 100)))
    middle = (58 - len(label)) // 2
    cells[middle : middle + len(label)] = label
    return "[" + "".join(cells) + "]"


def _tail(lines: list[str]) -> list[str]:
    """$run.Output | Select-Object -Last 15."""
    return lines[-15:]


# --- dism ------------------------------------------------------------------------------------
DISM_BANNER = ["Deployment Image Servicing and Management tool", "Version: 10.0.20348.681", ""]
DISM_SECONDS = {"healthy": 10 * 60, "repairable": 20 * 60, "needs-source": 12 * 60}
NEEDS_SOURCE_AT = 62.3  # DISM's bar stops here when it cannot find repair content
NEEDS_SOURCE = {
    0x800F081F: "source files not found: give a repair source (-Source wim:<install.wim>:<index> of the same build)",
}
SOURCE_PATTERN = r'^$|^((wim|esd):([A-Za-z]:)?[^":]+:\d{1,3}|[A-Za-z]:\\[^"]*|\\\\[^"]+)$'


@model("dism", sha256="18e8d65ef078c34c5713be3fe45c5749b976dedf1355aa869f7714e068be0f5b")
async def dism(ctx: StepContext) -> None:
    source = text_param(ctx, "Source", SOURCE_PATTERN)
    limit_access = bool(param(ctx, "LimitAccess", True))
    require_elevated(ctx)
    state = ctx.host.state
    facts: dict[str, Any] = {"source": source, "limit_access": limit_access and bool(source)}
    if state.dism_running:  # still running after the script's bounded wait (the wait itself is not modelled)
        facts["busy_processes"] = "DismHost (5012)"
        ctx.finish("failed", 4, facts=facts,
                   messages=["another DISM is running; left alone (never stopped): try again when it ends"])
    if source:
        match = re.match(r"^(wim|esd):(.+):(\d{1,3})$", source, re.IGNORECASE)
        source_path = match.group(2) if match else source
        if not path_exists(state, source_path):
            ctx.finish("failed", 6, facts=facts, messages=[f"repair source {source_path} is not reachable from the host"])

    store = state.component_store
    repairs = store == "repairable" or (store == "needs-source" and bool(source))
    fails = store == "needs-source" and not source
    seconds = DISM_SECONDS["repairable" if repairs else store]
    lines = DISM_BANNER + [f"Image Version: 10.0.{state.build}.{state.ubr}", ""]
    state.servicing_in_progress = state.dism_running = True  # DismHost and TiWorker run while DISM works
    try:
        await _native_progress(ctx, "dism", lines, seconds, until=NEEDS_SOURCE_AT if fails else 100.0)
    finally:
        state.servicing_in_progress = state.dism_running = False
    if fails:
        code = 0x800F081F
        tail = ["Error: 0x800f081f", "", "The source files could not be found.",
                'Use the "Source" option to specify the location of the files that are required to restore the feature. '
                "For more information on specifying a source location, see https://go.microsoft.com/fwlink/?LinkId=243077.",
                "", "The DISM log file can be found at C:\\Windows\\Logs\\DISM\\dism.log"]
    else:
        code = 0
        state.component_store = "healthy"
        tail = ["The restore operation completed successfully.", "The operation completed successfully."]
    for line in tail:
        ctx.verbose(line)
    output = lines + [_dism_bar(NEEDS_SOURCE_AT if fails else 100.0)] + tail
    facts.update({
        "exit_code": signed_hresult(code),
        "hresult": hex_hresult(code),
        "duration_seconds": seconds,
        "output_tail": _tail(output),
        "needs_source": code in NEEDS_SOURCE,
        "corruption_repaired": any("The restore operation completed successfully" in line for line in output),
    })
    changes = [{"kind": "component-store-repaired"}] if facts["corruption_repaired"] else []
    if code == 0:
        ctx.finish("ok", 0, facts=facts, changes=changes)
    ctx.finish("failed", 6, facts=facts, messages=[f"needs a repair source ({hex_hresult(code)}): {NEEDS_SOURCE[code]}"])


# --- sfc -------------------------------------------------------------------------------------
SFC_SECONDS = 15 * 60
CBS_LOG = f"{SYSTEM_ROOT}\\Logs\\CBS\\CBS.log"


@model("sfc", sha256="39f280aaca0ed4ddf872e05ec422e8481c79fe0b9f833655aa54f3860bc069c1")
async def sfc(ctx: StepContext) -> None:
    require_elevated(ctx)
    state = ctx.host.state
    facts: dict[str, Any] = {"cbs_log": CBS_LOG}
    if state.servicing_in_progress:  # in the host model TiWorker runs with pending.xml present
        ctx.finish("failed", 4, facts=facts, messages=["a system repair is pending a reboot (pending.xml): reboot, then run sfc"])
    ctx.verbose("Beginning system scan.  This process will take some time.")
    ctx.verbose("Beginning verification phase of system scan.")
    for percent in range(10, 101, 10):
        await ctx.host.sleep(SFC_SECONDS / 10)
        ctx.verbose(f"Verification {percent}% complete.")
        ctx.progress("sfc", f"Verification {percent}% complete.", min(99, percent))

    stamp = state.clock.strftime("%Y-%m-%d %H:%M:%S")
    sr_lines: list[str] = []
    cannot = state.system_files_corrupt and state.component_store != "healthy"
    if cannot:
        sr_lines.append(f"{stamp}, Info CSI 00000010 [SR] Cannot repair member file [l:14]'msvcp_win.dll'")
        ctx.verbose("Windows Resource Protection found corrupt files but was unable to fix some of them.")
    elif state.system_files_corrupt:
        sr_lines += [f"{stamp}, Info CSI 00000010 [SR] Repairing 1 components",
                     f"{stamp}, Info CSI 00000011 [SR] Repaired file \\SystemRoot\\System32\\msvcp_win.dll by copying from store"]
        ctx.verbose("Windows Resource Protection found corrupt files and successfully repaired them.")
    else:
        ctx.verbose("Windows Resource Protection did not find any integrity violations.")
    sr_lines.append(f"{stamp}, Info CSI 00000012 [SR] Verify complete")
    cannot_repair = [line for line in sr_lines if "Cannot repair member file" in line]
    repaired = [line for line in sr_lines if re.search(r"Repairing corrupted file|Repaired file|Repairing \d+ components", line)
                and "Repairing 0 components" not in line]
    verdict = "corruption-not-repaired" if cannot_repair else "repaired" if repaired else "no-violations"
    facts.update({"exit_code": 1 if cannot else 0, "sr_lines": len(sr_lines), "verify_complete": True,
                  "cannot_repair": cannot_repair[:20], "repaired": repaired[:20], "verdict": verdict})
    if verdict == "corruption-not-repaired":
        ctx.finish("failed", 6, facts=facts, messages=[
            f"sfc found {len(cannot_repair)} file(s) it could not repair: run dism (RestoreHealth), then sfc again"])
    if verdict == "repaired":
        state.system_files_corrupt = False
        changes = [{"kind": "system-files-repaired", "count": len(repaired)}]
        if "pending-file-rename" in state.pending_reboot:  # no new signal: the script sees no reboot owed by this run
            ctx.finish("ok", 0, facts=facts, changes=changes)
        state.pending_reboot.add("pending-file-rename")  # files in use are replaced at the next start
        ctx.finish("reboot-required", 3010, facts=facts, changes=changes,
                   messages=["repaired; a reboot completes the repair"], reboot_required=True)
    ctx.finish("ok", 0, facts=facts, messages=["no integrity violations"])


# --- never two installs at once ----------------------------------------------------------------
WAIT_STEP_SECONDS = 15  # install-kb's and install-updates' Start-Sleep between two looks at another install
_STATUS = re.compile(r"^c:\\programdata\\wuremote\\runs\\([^\\]+)\\(install-kb|install-updates)\\status\.json$")


async def wait_while_busy(ctx: StepContext, busy: Callable[[], list[str]], wait_seconds: int) -> tuple[int, list[str]]:
    """install-kb's and install-updates' bounded wait for what else installs on the host, looking again
    every WAIT_STEP_SECONDS and never stopping it: the seconds waited, and what is still busy."""
    waited, found = 0, busy()
    while found and waited < wait_seconds:
        ctx.verbose(f"waiting for {', '.join(found)} to finish ({waited} s of {wait_seconds} s)")
        await ctx.host.sleep(WAIT_STEP_SECONDS)
        waited += WAIT_STEP_SECONDS
        found = busy()
    return waited, found


def other_installs(ctx: StepContext, run_id: str) -> list[str]:
    """install-kb or install-updates tasks of other runs still queued or running (the scripts read
    each run's status file the same way)."""
    from .detached import detached_state  # detached.py imports this module: read at call time

    found = []
    for key in list(ctx.host.state.files):
        match = _STATUS.match(key)
        if match is None or match.group(1) == run_id.lower():
            continue
        current = detached_state(ctx.host, match.group(1), match.group(2))
        if current is not None and current.state in ("running", "queued"):
            found.append(f"{match.group(2)} of run {match.group(1)}")
    return found


# --- install-kb ------------------------------------------------------------------------------
INSTALL_SECONDS = 8 * 60
# Below this build (2012 R2 9600, 2016 14393) install-kb expands a single .msu and gives DISM its
# .cab, as ansible.windows' win_hotfix does for every .msu (Expand-MSU, Get-HotfixMetadataFromFile).
MSU_BY_DISM_BUILD = 17763


def _nt_version(build: int) -> str:
    """The OS version in a package's file name (Windows8.1-KB..., Windows10.0-KB...)."""
    return "8.1" if build < 10240 else "10.0"


def _msu_files(state: HostState, path: str) -> list[str]:
    """Get-ChildItem -LiteralPath PATH -Filter *.msu -File: the file itself, or a folder's direct children."""
    key = path.lower().rstrip("\\")
    names = [*state.files, *state.pushed]
    if key in names:
        return [key] if key.endswith(".msu") else []
    return sorted(name for name in names
                  if name.startswith(key + "\\") and "\\" not in name[len(key) + 1:] and name.endswith(".msu"))


def _package_identity(state: HostState, key: str) -> tuple[str, bytes]:
    """A package's SHA-256 and first bytes: read from the file, or carried by a pushed one (no bytes kept)."""
    pushed = state.pushed.get(key)
    if pushed is not None:
        return pushed.sha256, pushed.head
    data = state.files[key]
    return hashlib.sha256(data).hexdigest(), data[:8]


def _busy_servicing(ctx: StepContext, run_id: str) -> list[str]:
    """What installs on the host besides this step: another run's install task (its status file),
    a Windows Installer installation (the _MSIExecute mutex) or a CBS session holding the exclusive flag."""
    busy = other_installs(ctx, run_id)
    if ctx.host.state.msi_installing:
        busy.append("a Windows Installer installation (_MSIExecute)")
    if ctx.host.state.cbs_exclusive:
        busy.append("a servicing operation (TrustedInstaller: SessionsPending\\Exclusive)")
    return busy


@model("install-kb", sha256="c2b7ae73f89b840ef53d6021de5d456a496654e08d81549ccdc7a52d2258e68e")
async def install_kb(ctx: StepContext) -> None:
    kb_id = text_param(ctx, "KbId", r"^KB\d{6,8}$", mandatory=True)
    msu_path = text_param(ctx, "MsuPath")
    url = text_param(ctx, "Url", r'^$|^https?://[^\s"]+$')
    expected_sha = text_param(ctx, "Sha256", r"^$|^[0-9a-fA-F]{64}$").lower()
    run_id = text_param(ctx, "RunId")
    require_elevated(ctx)
    state = ctx.host.state
    kb = kb_id.upper()  # Get-HotFix -Id matches case-insensitively
    facts: dict[str, Any] = {"kb": kb_id}

    def failed(message: str, code: int = 1) -> None:
        ctx.finish("failed", code, facts=facts, messages=[message])

    if kb in state.installed_kbs:
        facts["already_installed"] = True
        ctx.finish("ok", 0, facts=facts, messages=[f"{kb_id} is already installed"])
    facts["already_installed"] = False
    wait_seconds = int_param(ctx, "WaitSeconds", 1800, 0, 7200)
    waited, busy = await wait_while_busy(ctx, lambda: _busy_servicing(ctx, run_id), wait_seconds)
    facts["waited_seconds"] = waited
    if busy:
        facts["busy"] = busy
        failed(f"{', '.join(busy)} still running after {wait_seconds} s: left alone (never stopped); install "
               f"{kb_id} again when it ends", 4)
    if state.servicing_in_progress:
        failed("servicing is pending a reboot (pending.xml): reboot, then install", 4)

    step_folder = run_folder(run_id, "install-kb")
    if url:
        leaf = urlsplit(url).path.rsplit("/", 1)[-1]  # [IO.Path]::GetFileName(([uri]$Url).AbsolutePath)
        if not re.match(r"^[\w.\-]+\.msu$", leaf):
            failed(f"the URL must end in a .msu file name, got {leaf}")
        package_path = f"{step_folder}\\download\\{leaf}"
        await ctx.host.sleep(60)
        state.files[package_path.lower()] = CABINET_MAGIC + url.encode("utf-8")
    else:
        package_path = msu_path or f"{step_folder}\\packages"
    facts["package_path"] = package_path
    if not path_exists(state, package_path):
        failed(f"no package at {package_path}")
    files = _msu_files(state, package_path)
    if not files:
        failed(f"no .msu file at {package_path}")
    names = {key: key.rsplit("\\", 1)[-1] for key in files}
    named = [key for key in files if re.search(rf"kb{kb[2:]}(\D|$)", names[key], re.IGNORECASE)]
    if not named:
        failed(f"none of {', '.join(names.values())} names {kb_id}: refusing to install an unnamed package")

    checked = []
    for key in files:
        digest, head = _package_identity(state, key)
        signature = "Valid" if head.startswith(CABINET_MAGIC) else "NotSigned"
        checked.append({"name": names[key], "sha256": digest, "signature": signature})
        if expected_sha and key in named:
            if digest != expected_sha:
                facts["packages"] = checked
                failed(f"{names[key]}: SHA-256 {digest} does not match the expected {expected_sha}")
        elif signature != "Valid":
            facts["packages"] = checked
            failed(f"{names[key]}: signature {signature} and no SHA-256 given: not installed")
    facts["packages"] = checked

    target = package_path if len(files) > 1 else named[0]
    if len(files) == 1 and state.build < MSU_BY_DISM_BUILD:  # expand.exe -F:*, then DISM on the .cab it holds
        cab = f"{step_folder}\\expanded\\windows{_nt_version(state.build)}-{kb.lower()}-x64.cab"
        facts["expanded_cab"] = cab
        target = cab.lower()
        state.files[target] = CABINET_MAGIC + kb.encode("ascii")
    lines = DISM_BANNER + [f"Image Version: 10.0.{state.build}.{state.ubr}", "", "Processing 1 of 1 - Adding package "
                           f"Package_for_RollupFix~31bf3856ad364e35~amd64~~{state.build}.4405.1.13"]
    damaged = state.component_store != "healthy"
    state.servicing_in_progress = state.cbs_exclusive = True  # TrustedInstaller's session holds the exclusive flag
    try:
        await _native_progress(ctx, "install-kb", lines, INSTALL_SECONDS, until=40.0 if damaged else 100.0)
    finally:
        state.servicing_in_progress = state.cbs_exclusive = False
    if damaged:
        code = 0x80073712
        tail = ["", "Error: 0x80073712", "", "The component store has been corrupted.", "",
                "The DISM log file can be found at C:\\Windows\\Logs\\DISM\\dism.log"]
    elif state.servicing_stack_too_old:
        code = 0x800F0823
        tail = ["", "Error: 0x800f0823", "", "The package requires a newer version of the servicing stack.", "",
                "The DISM log file can be found at C:\\Windows\\Logs\\DISM\\dism.log"]
    else:
        code = 3010
        tail = ["The operation completed successfully.", "Restart Windows to complete this operation."]
        state.installed_kbs.add(kb)
        state.pending_reboot.add("cbs-reboot-pending")
    for line in tail:
        ctx.verbose(line)
    facts.update({"exit_code": signed_hresult(code), "hresult": hex_hresult(code), "output_tail": _tail(lines + tail)})
    if damaged:
        failed("the component store is damaged (0x80073712): run dism, then install again", 6)
    if state.servicing_stack_too_old:
        failed(f"{kb_id} needs a newer servicing stack (0x800F0823): install the latest servicing stack update (SSU) "
               f"for this build, then {kb_id} again", 6)
    shown = facts.get("expanded_cab") or _display_path(package_path, target)
    change = {"kind": "kb-installed", "kb": kb_id, "package": shown}
    ctx.finish("reboot-required", 3010, facts=facts, changes=[change],
               messages=[f"{kb_id} installed; a reboot completes it"], reboot_required=True)


def _display_path(package_path: str, target_key: str) -> str:
    """The target as the script names it: the folder given, or the file under it in the given casing."""
    if target_key == package_path.lower().rstrip("\\"):
        return package_path
    folder = package_path.rstrip("\\")
    if target_key.startswith(folder.lower() + "\\"):
        return folder + target_key[len(folder):]
    return target_key


# --- verify ----------------------------------------------------------------------------------
# verify.ps1's $NetworkHResults: the "network" and "policy" categories of wuremote/hresult.py.
NETWORK_HRESULTS = hresult.codes_in("network") | hresult.codes_in("policy")
SEARCH_SECONDS, DOWNLOAD_SECONDS, INSTALL_AGENT_SECONDS = 2 * 60, 5 * 60, 10 * 60
EVENT_IDS = {"search": 25, "download": 31, "install": 20}


def _history_message(phase: str, code: str, title: str) -> str:
    if phase == "search":
        return f"Windows Update failed to check for updates with error {code}."
    if phase == "download":
        return f"Windows Update failed to download an update with error {code}."
    return f"Installation Failure: Windows failed to install the following update with error {code}: {title}."


@model("verify", sha256="3a5bceec8b7aa404d2708875008d6de8696a5ec94c0f2a04f221be967d86a320")
async def verify(ctx: StepContext) -> None:
    install = switch(ctx, "Install")
    require_elevated(ctx)
    state = ctx.host.state
    as_system = ctx.user == SYSTEM_USER
    facts: dict[str, Any] = {"as_system": as_system, "searched": 0, "downloaded": 0, "installed": 0, "failures": []}
    failures: list[dict[str, Any]] = []

    def add_failure(phase: str, code: int, title: str = "") -> None:
        hex_code = hex_hresult(code)
        kind = "network" if code in NETWORK_HRESULTS else "agent"
        failures.append({"phase": phase, "hresult": hex_code, "kind": kind, "title": title})
        state.update_history.insert(0, {"time_utc": windows_utc(state.clock), "event_id": EVENT_IDS[phase],
                                        "hresult": hex_code, "message": _history_message(phase, hex_code, title)})

    if not as_system:
        facts["warning"] = ("not running as SYSTEM: the agent refuses download to a remote logon token (0x80070005); "
                            "run verify through detached-start")
    outcome = agent_outcome(state)
    await ctx.host.sleep(SEARCH_SECONDS)
    if state.tiworker_lingers_after_scan:
        state.tiworker_running = True  # the scan's servicing query started it; it idles out later
    if outcome.search is not None:
        add_failure("search", outcome.search)
    else:
        kbs = applicable_kbs(state)
        titles = [update_title(state, kb) for kb in kbs]
        ctx.progress("verify", "searched", 30)
        facts.update({"search_result_code": 2, "searched": len(kbs), "updates": titles})
        # Every update the lab offers is a security update: selected by verify's default categories.
        facts.update({"selected": len(kbs), "skipped": []})
        fetch = [kb for kb in kbs if kb not in state.downloaded_kbs and not state.download_cache_stale]
        facts["already_downloaded"] = len(kbs) - len(fetch)
        facts["downloaded"] = facts["already_downloaded"]
        if fetch:
            await ctx.host.sleep(DOWNLOAD_SECONDS)
            download = outcome.download if as_system else 0x80070005
            for kb in fetch:
                if download is None:
                    facts["downloaded"] += 1
                    state.downloaded_kbs.add(kb)
                else:
                    add_failure("download", download, update_title(state, kb))
            ctx.progress("verify", "downloaded", 70)
        if install and facts["downloaded"] > 0 and not failures:
            await ctx.host.sleep(INSTALL_AGENT_SECONDS)
            installed = []
            for kb, title in zip(kbs, titles):
                code = install_hresult(state, kb) if as_system else 0x80070005
                if code is None:
                    installed.append(kb)
                else:
                    add_failure("install", code, title)
            state.installed_kbs.update(installed)
            facts["installed"] = len(installed)
            facts["reboot_required"] = bool(installed)
            if installed:
                state.pending_reboot.add("wu-reboot-required")

    facts["failures"] = failures
    agent = [f for f in failures if f["kind"] == "agent"]
    network = [f for f in failures if f["kind"] == "network"]
    messages = [f"search found {facts['searched']}, downloaded {facts['downloaded']}, installed {facts['installed']}"]
    if agent:
        messages.append("update agent broken: " + ", ".join(f"{f['phase']} {f['hresult']}" for f in agent))
        ctx.finish("failed", 1, facts=facts, messages=messages)
    if network:
        messages.append(f"cannot reach the update server ({', '.join(f['hresult'] for f in network)}): "
                        "network, proxy or WSUS; not a repair step")
        ctx.finish("failed", 7, facts=facts, messages=messages)
    if facts.get("reboot_required"):
        ctx.finish("reboot-required", 3010, facts=facts, messages=messages, reboot_required=True)
    if switch(ctx, "RecordSuccess"):
        state.verify_ok_utc = facts["recorded_utc"] = windows_utc(state.clock)
    ctx.finish("ok", 0, facts=facts, messages=messages)
