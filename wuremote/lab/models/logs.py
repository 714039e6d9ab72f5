"""Model of ps_scripts/collect-logs.ps1: bounded tails of CBS.log, dism.log and the update client's events.

The lab keeps no log files, so each log is written from the host model when it is asked for:
weeks of routine servicing sessions, then a health check just after the last boot that says
what the host's component store and system files are like now (the corruption a scenario
plants shows up in the tail an operator would read).  Times hang on the last boot, not on the
clock, so two reads between boots see the same log.  The tails are cut as the script cuts them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..host import HostState, parse_windows_utc, windows_utc
from .helpers import require_elevated
from .long_steps import SYSTEM_ROOT, int_param
from .registry import StepContext, model

MAX_EVENTS = 200  # Get-WinEvent -MaxEvents in the script
ROUTINE_SESSIONS = 120  # older servicing sessions in each file: enough that the default tail is truncated
ERROR_EVENT_IDS = {20, 25, 31}  # WindowsUpdateClient install, search and download failures
ROUTINE_EVENT_DAYS = 60
DEFENDER_KB = "KB2267602"  # Security Intelligence Update for Microsoft Defender Antivirus


@model("collect-logs", sha256="e85826069d17e99e2eacab4ae04736f131ae47e633dda5cba3032ac521c6d587")
async def collect_logs(ctx: StepContext) -> None:
    max_bytes = int_param(ctx, "MaxBytes", 65536, 1024, 1048576)
    require_elevated(ctx)
    state = ctx.host.state
    await ctx.host.sleep(2.0)
    logs = {
        "CBS.log": file_tail(cbs_log(state).encode("utf-8"), max_bytes),
        "dism.log": file_tail(dism_log(state).encode("utf-8"), max_bytes),
        "WindowsUpdateClient": event_tail(event_lines(state), max_bytes),
    }
    ctx.finish("ok", 0, facts={"logs": logs, "errors": []})


# --- cutting, as Read-FileTail and Read-UpdateClientTail do --------------------------------------
def file_tail(data: bytes, max_bytes: int) -> dict[str, Any]:
    """The last max_bytes bytes, from the byte after the first line feed when the cut fell mid-line."""
    start = max(0, len(data) - max_bytes)
    window = data[start:]
    if start:
        window = window[window.find(b"\n") + 1:] if b"\n" in window else b""
    elif window.startswith(b"\xef\xbb\xbf"):
        window = window[3:]
    return {"text": window.decode("utf-8", errors="replace"), "bytes_total": len(data), "truncated": start > 0}


def event_tail(newest_first: list[str], max_bytes: int) -> dict[str, Any]:
    """The newest lines that fit in max_bytes (each with its CRLF), in time order."""
    kept: list[str] = []
    total = 0
    full = False
    for line in newest_first:
        size = len(line.encode("utf-8")) + 2
        if not full and total + size <= max_bytes:
            kept.append(line)
        else:
            full = True
        total += size
    text = "".join(line + "\r\n" for line in reversed(kept))
    return {"text": text, "bytes_total": total, "truncated": len(kept) < len(newest_first)}


# --- CBS.log ---------------------------------------------------------------------------------------
def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _cbs(moment: dt.datetime, source: str, text: str, level: str = "Info") -> str:
    return f"{_stamp(moment)}, {level:<22}{source:<7}{text}\r\n"


def _health_check_time(state: HostState) -> dt.datetime:
    """When TrustedInstaller's last session (and the DISM command behind it) ran."""
    return state.last_boot + dt.timedelta(minutes=10)


def _component(state: HostState) -> str:
    return f"amd64_microsoft-windows-msvcp_win_31bf3856ad364e35_10.0.{state.build}.{state.ubr}_none_6d1ecf2f7b5c0a4e"


def cbs_log(state: HostState) -> str:
    """TrustedInstaller sessions for Windows Update, then the last health check and sfc run."""
    version = f"10.0.{state.build}.{state.ubr}"
    core = f"{SYSTEM_ROOT}\\winsxs\\amd64_microsoft-windows-servicingstack_31bf3856ad364e35_{version}_none_5e2b0c1d8f3a7b64"
    end = _health_check_time(state)
    lines: list[str] = []
    for index in range(ROUTINE_SESSIONS, 0, -1):
        moment = end - dt.timedelta(hours=6 * index)
        lines += [
            _cbs(moment, "CBS", "TI: --- Initializing Trusted Installer ---"),
            _cbs(moment, "CBS", "Starting TrustedInstaller initialization."),
            _cbs(moment, "CBS", f"Loaded Servicing Stack v{version} with Core: {core}\\cbscore.dll"),
            _cbs(moment, "CBS", "Ending TrustedInstaller initialization."),
            _cbs(moment, "CBS", f"Session: 31{index:06d}_{3200000000 + index} initialized by client WindowsUpdateAgent, "
                                "external staging directory: (null), external registry directory: (null)"),
            _cbs(moment, "CBS", f"Read out cached package applicability for package: "
                                f"Package_for_RollupFix~31bf3856ad364e35~amd64~~{state.build}.{state.ubr}.1.10, "
                                "ApplicableState: 112, CurrentState:112"),
            _cbs(moment, "CBS", "Trusted Installer is shutting down because: SHUTDOWN_REASON_AUTORESTART"),
            _cbs(moment, "CBS", "Ending TrustedInstaller finalization."),
        ]
    corrupt = state.component_store != "healthy"
    needs_source = state.component_store == "needs-source"
    lines += [
        _cbs(end, "CBS", "TI: --- Initializing Trusted Installer ---"),
        _cbs(end, "CBS", "Session: 31000000_3300000000 initialized by client DISM Package Manager Provider, "
                         "external staging directory: (null), external registry directory: (null)"),
        _cbs(end, "CBS", "Checking System Update Readiness."),
    ]
    if corrupt:
        lines.append(_cbs(end, "CSI", f"00000001 (p)\tCSI Payload Corrupt\t\t\t(n)\t{_component(state)}\\msvcp_win.dll"))
    if needs_source:
        lines.append(_cbs(end, "CBS", "Repair failed: Missing replacement payload."))
    summary = [
        "Summary:",
        f"Operation: {'Detect and Repair' if needs_source else 'Detect only'}",
        f"Operation result: {'0x800f081f' if needs_source else '0x0'}",
        "Last Successful Step: " + ("Remove staged packages completes." if needs_source else "Entire operation completes."),
        f"Total Detected Corruption:\t{int(corrupt)}",
        "\tCBS Manifest Corruption:\t0",
        "\tCBS Metadata Corruption:\t0",
        "\tCSI Manifest Corruption:\t0",
        "\tCSI Metadata Corruption:\t0",
        f"\tCSI Payload Corruption:\t{int(corrupt)}",
        "Total Repaired Corruption:\t0",
        "Total Operation Time: 412 seconds.",
    ]
    lines += [_cbs(end, "CBS", text) for text in summary]
    if state.system_files_corrupt:
        lines += [
            _cbs(end, "CSI", "00000010 [SR] Verifying 100 components"),
            _cbs(end, "CSI", "00000011 [SR] Beginning Verify and Repair transaction"),
            _cbs(end, "CSI", f"00000012 [SR] Cannot repair member file [l:14]'msvcp_win.dll' of Microsoft-Windows-msvcp_win, "
                             f"version 10.0.{state.build}.{state.ubr}, arch amd64, nonSxS, pkt {{l:8 b:31bf3856ad364e35}}"),
            _cbs(end, "CSI", "00000013 [SR] Verify complete"),
        ]
    return "".join(lines)


# --- dism.log --------------------------------------------------------------------------------------
def _dism(moment: dt.datetime, text: str, level: str = "Info") -> str:
    return _cbs(moment, "DISM", text, level)


def dism_log(state: HostState) -> str:
    """DismHost sessions of the update agent, then the last health command and how it ended."""
    end = _health_check_time(state)
    lines: list[str] = []
    for index in range(ROUTINE_SESSIONS, 0, -1):
        moment = end - dt.timedelta(hours=6 * index)
        pid = f"PID={4000 + index} TID={5000 + index}"
        lines += [
            _dism(moment, f"{pid} Scratch directory set to '{SYSTEM_ROOT}\\TEMP\\'. - CDISMManager::put_ScratchDir"),
            _dism(moment, f"{pid} DismCore.dll version: 10.0.{state.build}.{state.ubr} - CDISMManager::FinalConstruct"),
            _dism(moment, f"{pid} Successfully loaded the ImageSession at \"{SYSTEM_ROOT}\\System32\\Dism\" - "
                          "CDISMManager::LoadLocalImageSession"),
            _dism(moment, f"DISM Provider Store: {pid} Found and Initialized the DISM Logger. - "
                          "CDISMProviderStore::Internal_InitializeLogger"),
            _dism(moment, f"DISM Package Manager: {pid} Finished initializing the CbsConUI Handler. - "
                          "CCbsConUIHandler::Initialize"),
            _dism(moment, f"DISM Manager: {pid} Closing session event handle - CDISMImageSession::Final_OnDisconnect"),
        ]
    pid = "PID=6120 TID=6124"
    command = "/RestoreHealth" if state.component_store == "needs-source" else "/ScanHealth"
    lines += [
        _dism(end, "DISM.EXE: <----- Starting Dism.exe session ----->"),
        _dism(end, f"DISM.EXE: Host machine information: OS Version=10.0.{state.build}, Running architecture=amd64, "
                   "Number of processors=4"),
        _dism(end, f"DISM.EXE: Executing command line: {SYSTEM_ROOT}\\system32\\Dism.exe /Online /Cleanup-Image {command}"),
    ]
    if state.component_store == "needs-source":
        lines += [
            _dism(end, f"DISM Package Manager: {pid} Failed processing package changes with session options - "
                       "CDISMPackageManager::ProcessChangesWithOptions(hr:0x800f081f)", "Error"),
            _dism(end, f"DISM Package Manager: {pid} Failed to restore the image health. Error 0x800f081f: the source "
                       "files could not be found. - CPackageManagerCLIHandler::ProcessCmdLine_CleanupImage(hr:0x800f081f)",
                  "Error"),
            _dism(end, "DISM.EXE: DISM Package Manager processed the command line but failed. HRESULT=800F081F", "Error"),
        ]
    elif state.component_store == "repairable":
        lines.append(_dism(end, f"DISM Package Manager: {pid} The component store is repairable. - "
                                "CPackageManagerCLIHandler::ProcessCmdLine_CleanupImage"))
    else:
        lines.append(_dism(end, f"DISM Package Manager: {pid} No component store corruption detected. - "
                                "CPackageManagerCLIHandler::ProcessCmdLine_CleanupImage"))
    lines.append(_dism(end, "DISM.EXE: <----- Ending Dism.exe session ----->"))
    return "".join(lines)


# --- Microsoft-Windows-WindowsUpdateClient/Operational -----------------------------------------------
def event_lines(state: HostState) -> list[str]:
    """The newest MAX_EVENTS events as the script renders them, newest first.

    HostState.update_history holds the failures; daily searches and weekly Defender updates
    that went well fill the weeks before the first of them.
    """
    history = [(parse_windows_utc(str(row["time_utc"])), int(str(row["event_id"])), str(row["message"]))
               for row in state.update_history]
    anchor = min((moment for moment, _, _ in history), default=state.last_boot) - dt.timedelta(hours=1)
    routine: list[tuple[dt.datetime, int, str]] = []
    for day in range(ROUTINE_EVENT_DAYS):
        moment = anchor - dt.timedelta(days=day)
        routine.append((moment, 26, "Windows Update successfully found 0 updates."))
        if day % 7 == 3:
            routine.append((moment - dt.timedelta(minutes=5), 19, "Installation Successful: Windows successfully installed "
                            f"the following update: Security Intelligence Update for Microsoft Defender Antivirus - "
                            f"{DEFENDER_KB} (Version 1.421.{400 - day}.0)"))
    events = sorted(history + routine, key=lambda event: event[0], reverse=True)[:MAX_EVENTS]
    return [f"{windows_utc(moment)} {event_id} {'Error' if event_id in ERROR_EVENT_IDS else 'Information'} "
            f"{message.strip().splitlines()[0].strip() if message.strip() else ''}"
            for moment, event_id, message in events]
