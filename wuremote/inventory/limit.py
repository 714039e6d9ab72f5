"""`--limit`: which of an inventory's hosts a run takes, as Ansible's --limit chooses them."""

from __future__ import annotations

import fnmatch

from .model import HostConfig, Inventory, InventoryError


def select(inventory: Inventory, pattern: str) -> list[HostConfig]:
    """`--limit`: comma-separated host or group names or fnmatch patterns; `!x` leaves out, `&x` intersects.

    A part that matches nothing is an error: a mistyped exclusion must not pass silently.
    """
    parts = [part.strip() for part in pattern.split(",") if part.strip()]
    if not parts:
        raise InventoryError("--limit: empty; give host or group names or patterns, e.g. --limit 'web*,!web03'")
    include: set[str] | None = None
    narrow: list[set[str]] = []
    exclude: set[str] = set()
    for part in parts:
        sign, body = (part[0], part[1:]) if part[0] in "!&" else ("", part)
        names = _matching(inventory, body)
        if not names:
            left = [name for name in inventory.left_out if fnmatch.fnmatchcase(name.lower(), body.lower())]
            why = f" ({inventory.left_out[left[0]]})" if left else ""
            raise InventoryError(f"--limit {pattern!r}: {body!r} matches no host or group{why}; "
                                 f"groups: {', '.join(inventory.groups) or 'none'}")
        if sign == "!":
            exclude |= names
        elif sign == "&":
            narrow.append(names)
        else:
            include = names if include is None else include | names
    return [host for host in inventory.hosts
            if (include is None or host.name in include) and all(host.name in s for s in narrow)
            and host.name not in exclude]


def _matching(inventory: Inventory, pattern: str) -> set[str]:
    if pattern in ("all", "*"):
        return {host.name for host in inventory.hosts}
    wanted = pattern.lower()
    found = {host.name for host in inventory.hosts if fnmatch.fnmatchcase(host.name.lower(), wanted)}
    for group, members in inventory.groups.items():
        if fnmatch.fnmatchcase(group.lower(), wanted):
            found.update(members)
    return found
