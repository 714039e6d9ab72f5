"""The Windows Update agent of a lab host: what search, download and install answer right now.

The answer is computed from the host's live conditions, never stored, so a repair step
that fixes a condition (sync-time, reset-components, cleanup, dism...) changes what the
next verify sees without any model having to know which error it cleared.  The HRESULTs
are the ones the scenario fixtures (``wuremote/lab/fixtures/*.json``, ``update_agent``)
record for the same conditions, so the lab and the Pester mocks tell the same story.
"""

from __future__ import annotations

from dataclasses import dataclass

from .host import HostState

# The update every lab host is offered until it is installed (the fixtures' November cumulative).
CUMULATIVE_KB = "KB5068787"

# Search: the agent cannot talk to its update service.
WSUS_NAME_NOT_RESOLVED = 0x8024402C
CANNOT_CONNECT = 0x80072EFD
SECURE_CHANNEL_FAILED = 0x80072F8F  # a clock off by more than the TLS tolerance
SERVICE_DISABLED = 0x80070422
# Download: the agent reaches the service but cannot store what it fetches.
CANNOT_REACH_BITS = 0x80246008
FILE_NOT_FOUND = 0x80070002
ACCESS_DENIED = 0x80070005
DISK_FULL = 0x80070070
# Install.
COMPONENT_STORE_CORRUPT = 0x80073712
SHARING_VIOLATION = 0x80070020
INSTALLER_FAILURE = 0x8024200B  # the update's installer fails under the agent; DISM by hand works

SKEW_TOLERANCE_SECONDS = 300
MIN_FREE_DISK_GB = 5.0


@dataclass(frozen=True)
class AgentOutcome:
    """The HRESULT each phase fails with (None: it succeeds), as met in that order."""

    search: int | None
    download: int | None
    install: int | None


def _effective_start_type(state: HostState, name: str) -> str | None:
    service = state.services.get(name)
    return None if service is None else service.policy_start_type or service.start_type


def search_hresult(state: HostState) -> int | None:
    if state.update_source == "unreachable":
        return CANNOT_CONNECT
    if state.update_source == "wsus" and not state.wsus_reachable:
        return WSUS_NAME_NOT_RESOLVED
    if state.clock_skew_seconds > SKEW_TOLERANCE_SECONDS:
        return SECURE_CHANNEL_FAILED
    if any(_effective_start_type(state, name) == "Disabled" for name in ("wuauserv", "bits")):
        return SERVICE_DISABLED
    return None


def download_hresult(state: HostState) -> int | None:
    cryptsvc = state.services.get("cryptsvc")
    if cryptsvc is not None and cryptsvc.status == "Stopped":
        return CANNOT_REACH_BITS
    if state.download_cache_corrupt:
        return FILE_NOT_FOUND
    if state.antivirus.interferes and state.antivirus.realtime_enabled:
        return ACCESS_DENIED
    if state.free_disk_gb < MIN_FREE_DISK_GB:
        return DISK_FULL
    return None


def install_hresult(state: HostState, kb: str) -> int | None:
    """How the agent's install of one update ends; the KB that installs only by hand fails alone."""
    if state.component_store != "healthy":
        return COMPONENT_STORE_CORRUPT
    if any(s.status == "Running" and s.role == "third-party" for s in state.services.values()):
        return SHARING_VIOLATION
    if kb == state.manual_kb:
        return INSTALLER_FAILURE
    return None


def applicable_kbs(state: HostState) -> list[str]:
    """The updates a search finds: the cumulative update and the hand-installed KB, until installed."""
    offered = [CUMULATIVE_KB] + ([state.manual_kb] if state.manual_kb and state.manual_kb != CUMULATIVE_KB else [])
    return [kb for kb in offered if kb not in state.installed_kbs]


def update_title(kb: str) -> str:
    kind = "Cumulative Update" if kb == CUMULATIVE_KB else "Security Update"
    return f"2025-11 {kind} for Microsoft server operating system version 21H2 for x64-based Systems ({kb})"


def agent_outcome(state: HostState) -> AgentOutcome:
    """Each phase's result on this host now; install is the first failure among the offered updates."""
    installs = [code for code in (install_hresult(state, kb) for kb in applicable_kbs(state)) if code is not None]
    return AgentOutcome(search_hresult(state), download_hresult(state), installs[0] if installs else None)
