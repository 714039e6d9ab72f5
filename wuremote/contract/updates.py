"""What installing updates means on both sides: the categories, the rounds, the result codes.

Categories are the names the Windows Update Agent gives them (``ICategory.Name``: "Security
Updates", "Critical Updates"...).  As ansible.windows' win_updates (plugins/modules/
win_updates.ps1, "allow the camel case names but internally use the full names"), the
command line and the inventory take either spelling, case-insensitively; the script gets the
agent's own name.  The list is win_updates' documented one (plugins/modules/win_updates.py,
``category_names``), plus Drivers, which the agent also names.
"""

from __future__ import annotations

import re
from enum import IntEnum
from types import MappingProxyType

# The agent's category names, by the camel-case spelling win_updates also accepts.
CATEGORIES = MappingProxyType({
    "Application": "Application",
    "Connectors": "Connectors",
    "CriticalUpdates": "Critical Updates",
    "DefinitionUpdates": "Definition Updates",
    "DeveloperKits": "Developer Kits",
    "Drivers": "Drivers",
    "FeaturePacks": "Feature Packs",
    "Guidance": "Guidance",
    "SecurityUpdates": "Security Updates",
    "ServicePacks": "Service Packs",
    "Tools": "Tools",
    "UpdateRollups": "Update Rollups",
    "Updates": "Updates",
    "Upgrades": "Upgrades",
})
ALL = "*"  # every category (win_updates' "*", since ansible.windows 1.7.0)
DEFAULT_CATEGORIES = ("SecurityUpdates", "CriticalUpdates")  # bare --install
# Search, install, restart, search again: the rounds one host gets before the walk stops and says
# what is still pending (win_updates loops until a round finds nothing; wuremote bounds it).
MAX_INSTALL_ROUNDS = 3
_KB = re.compile(r"KB\d{6,8}")
_BY_LOWER = {key.lower(): key for key in CATEGORIES} | {name.lower(): key for key, name in CATEGORIES.items()}


class UnknownCategory(ValueError):
    """A category Windows Update does not name; the message lists the known ones."""


def category_key(text: str) -> str:
    """``SecurityUpdates``, ``security updates`` or ``Security Updates`` -> ``SecurityUpdates`` (``*`` stays)."""
    cleaned = text.strip()
    if cleaned == ALL:
        return ALL
    key = _BY_LOWER.get(cleaned.lower())
    if key is None:
        raise UnknownCategory(f"unknown update category {cleaned!r}; use {ALL} or any of {', '.join(CATEGORIES)}")
    return key


def parse_categories(text: str) -> tuple[str, ...]:
    """A comma list as --install takes it; an empty text is the default categories."""
    items = [item for item in (part.strip() for part in text.split(",")) if item]
    if not items:
        return DEFAULT_CATEGORIES
    keys: list[str] = []
    for item in items:
        key = category_key(item)
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def agent_names(keys: tuple[str, ...]) -> list[str]:
    """The names the update agent uses, for install-updates.ps1's -CategoryNames."""
    return [ALL if key == ALL else CATEGORIES[key] for key in keys]


def is_kb(text: str) -> bool:
    return _KB.fullmatch(text.upper()) is not None


class OperationResultCode(IntEnum):
    """wuapi's OperationResultCode (learn.microsoft.com/windows/win32/api/wuapi/ne-wuapi-operationresultcode);
    ansible.windows' win_updates declares the same enum (plugins/modules/win_updates.ps1)."""

    NOT_STARTED = 0
    IN_PROGRESS = 1
    SUCCEEDED = 2
    SUCCEEDED_WITH_ERRORS = 3
    FAILED = 4
    ABORTED = 5
