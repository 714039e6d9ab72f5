"""The Windows Update agent of a lab host: what search, download and install answer right now.

The answer is computed from the host's live conditions, never stored, so a repair step
that fixes a condition (sync-time, reset-components, cleanup, dism...) changes what the
next verify sees without any model having to know which error it cleared.  The HRESULTs
are the ones the scenario fixtures (``wuremote/lab/fixtures/*.json``, ``update_agent``)
record for the same conditions, so the lab and the Pester mocks tell the same story.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import CUMULATIVE_KB, CatalogUpdate, manual_entry
from .host import HostState

__all__ = ["CUMULATIVE_KB", "AgentOutcome", "agent_outcome", "applicable_kbs", "install_hresult", "offered", "search_hresult",
           "update_title"]

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
    if state.download_cache_stale:
        return FILE_NOT_FOUND
    if state.component_store != "healthy":
        return COMPONENT_STORE_CORRUPT
    if any(s.status == "Running" and s.role == "third-party" for s in state.services.values()):
        return SHARING_VIOLATION
    if kb == state.manual_kb:
        return INSTALLER_FAILURE
    return None


def offered(state: HostState) -> list[CatalogUpdate]:
    """What IUpdateSearcher.Search("IsInstalled=0 and IsHidden=0") finds now (catalog.py's rules)."""
    kbs = {update.kb for update in state.catalog}
    restart_owed = "wu-reboot-required" in state.pending_reboot or "cbs-reboot-pending" in state.pending_reboot
    found = []
    for update in state.catalog:
        if update.kb in state.installed_kbs or (update.superseded_by and update.superseded_by in kbs):
            continue
        if update.requires and (update.requires not in state.installed_kbs or restart_owed):
            continue
        found.append(update)
    if state.manual_kb and state.manual_kb not in kbs and state.manual_kb not in state.installed_kbs:
        found.append(manual_entry(state.manual_kb))
    return found


# verify's default -CategoryNames (verify.ps1: win_updates' default category_names).
VERIFY_CATEGORIES = ("Critical Updates", "Security Updates", "Update Rollups")


def applicable_kbs(state: HostState) -> list[str]:
    """The updates verify selects: offered, in its default categories, not optional."""
    return [u.kb for u in offered(state) if u.category in VERIFY_CATEGORIES and not u.optional]


def update_title(state: HostState, kb: str) -> str:
    return next((u.title for u in offered(state) + list(state.catalog) if u.kb == kb), kb)


def agent_outcome(state: HostState) -> AgentOutcome:
    """Each phase's result on this host now; install is the first failure among the offered updates."""
    installs = [code for code in (install_hresult(state, kb) for kb in applicable_kbs(state)) if code is not None]
    return AgentOutcome(search_hresult(state), download_hresult(state), installs[0] if installs else None)
