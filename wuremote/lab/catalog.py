"""The updates a lab host's update agent offers: a handful per host, with what a search reports of each.

Each entry carries what ``IUpdate`` tells a script (learn.microsoft.com/windows/win32/api/wuapi/
nn-wuapi-iupdate): the title with its KB (``KBArticleIDs``), one category (``Categories``, named
as Windows Update names them), ``MaxDownloadSize``, ``BrowseOnly`` (an optional update), and
whether its installation asks for a restart (``IInstallationResult.RebootRequired``).  Two
relations are kept simple:
- supersedence: an update superseded by another one in the catalog is not offered (Windows
  Update offers the newest cumulative update, not the ones it replaces);
- a second wave: an update that ``requires`` another is offered only once that one is installed
  and the restart it asked for has happened, as a .NET or servicing update that applies only to
  the new build shows up in the search after the cumulative update's restart (win_updates loops
  "search, install, reboot" for the same reason: plugins/action/win_updates.py).
"""

from __future__ import annotations

from dataclasses import dataclass

CUMULATIVE_KB = "KB5068787"  # the fixtures' November cumulative update
_OS = "Microsoft server operating system version 21H2 for x64-based Systems"


@dataclass(frozen=True)
class CatalogUpdate:
    kb: str
    title: str
    category: str  # ICategory.Name: "Security Updates", "Critical Updates", "Definition Updates"...
    size_mb: int  # IUpdate.MaxDownloadSize, in MB
    optional: bool = False  # IUpdate.BrowseOnly
    reboot: bool = False  # the installation asks for a restart
    requires: str | None = None  # offered once this KB is installed and its restart has happened
    superseded_by: str | None = None


CATALOG: tuple[CatalogUpdate, ...] = (
    CatalogUpdate(CUMULATIVE_KB, f"2025-11 Cumulative Update for {_OS} ({CUMULATIVE_KB})", "Security Updates", 612,
                  reboot=True),
    CatalogUpdate("KB5066782", f"2025-10 Cumulative Update for {_OS} (KB5066782)", "Security Updates", 598,
                  reboot=True, superseded_by=CUMULATIVE_KB),
    CatalogUpdate("KB5068862", f"2025-11 Update for {_OS} (KB5068862)", "Critical Updates", 18),
    CatalogUpdate("KB890830", "Windows Malicious Software Removal Tool x64 - v5.136 (KB890830)", "Update Rollups", 76),
    CatalogUpdate("KB2267602", "Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 "
                  "(Version 1.441.112.0)", "Definition Updates", 145),
    CatalogUpdate("KB5067931", f"2025-11 Cumulative Update Preview for {_OS} (KB5067931)", "Updates", 605,
                  optional=True, reboot=True),
    CatalogUpdate("KB5068794", f"2025-11 Cumulative Update for .NET Framework 3.5, 4.8 and 4.8.1 for {_OS} (KB5068794)",
                  "Security Updates", 84, requires=CUMULATIVE_KB),
)


def manual_entry(kb: str) -> CatalogUpdate:
    """A scenario's hand-installed KB that the catalog does not list: a security update needing a restart."""
    return CatalogUpdate(kb, f"2025-11 Security Update for {_OS} ({kb})", "Security Updates", 40, reboot=True)
