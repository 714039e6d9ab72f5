"""`--limit`: which of an inventory's hosts a run takes, as Ansible's --limit chooses them.

Ansible's forms (lib/ansible/inventory/manager.py: ``subset`` and ``_match_list``): names and
shell patterns; ``!x`` leaves out; ``&x`` intersects; ``~REGEX`` a regular expression matched
at the start of the name (``re.match``); ``@FILE`` the names in a file, one a line (a retry file).
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from .model import HostConfig, Inventory, InventoryError


def select(inventory: Inventory, pattern: str) -> list[HostConfig]:
    """`--limit`: comma-separated host or group names or patterns; `!x` leaves out, `&x` intersects.

    A part that matches nothing is an error: a mistyped exclusion must not pass silently.
    """
    parts = _parts(pattern)
    if not parts:
        raise InventoryError("--limit: empty; give host or group names or patterns, e.g. --limit 'web*,!web03'")
    include: set[str] | None = None
    narrow: list[set[str]] = []
    exclude: set[str] = set()
    for part in parts:
        sign, body = (part[0], part[1:]) if part[0] in "!&" else ("", part)
        names = _matching(inventory, body, pattern)
        if not names:
            raise InventoryError(f"--limit {pattern!r}: {body!r} {_why_nothing(inventory, body, pattern)}")
        if sign == "!":
            exclude |= names
        elif sign == "&":
            narrow.append(names)
        else:
            include = names if include is None else include | names
    return [host for host in inventory.hosts
            if (include is None or host.name in include) and all(host.name in s for s in narrow)
            and host.name not in exclude]


def _parts(pattern: str) -> list[str]:
    """The comma-separated parts, each ``@FILE`` replaced by the names in that file (blank lines skipped)."""
    parts: list[str] = []
    for part in (p.strip() for p in pattern.split(",")):
        if part.startswith("@"):
            path = Path(part[1:])
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise InventoryError(f"--limit {part}: cannot read {path} ({exc.strerror}); give a file of host "
                                     "names, one a line (an Ansible .retry file)") from None
            parts += [line.strip() for line in lines if line.strip()]
        elif part:
            parts.append(part)
    return parts


def _matcher(body: str, pattern: str) -> re.Pattern[str]:
    if body.startswith("~"):
        try:
            return re.compile(body[1:])
        except re.error as exc:
            raise InventoryError(f"--limit {pattern!r}: {body!r} is not a regular expression ({exc}); "
                                 "fix it, or drop the ~ for a shell pattern") from None
    return re.compile(fnmatch.translate(body.lower()))


def _name(text: str, body: str) -> str:
    return text if body.startswith("~") else text.lower()  # a regex is the user's own: case as written


def _matching(inventory: Inventory, body: str, pattern: str) -> set[str]:
    if body in ("all", "*"):
        return {host.name for host in inventory.hosts}
    matcher = _matcher(body, pattern)
    found = {host.name for host in inventory.hosts if matcher.match(_name(host.name, body))}
    for group, members in inventory.groups.items():
        if matcher.match(_name(group, body)):
            found.update(members)
    return found


def _why_nothing(inventory: Inventory, body: str, pattern: str) -> str:
    """Why a part chose no host: it names only hosts wuremote leaves out (Linux, ssh...), or nothing at all."""
    matcher = _matcher(body, pattern)
    left = [name for name in inventory.left_out if matcher.match(_name(name, body))]
    for group, members in inventory.left_out_groups.items():
        if matcher.match(_name(group, body)):
            left += members
    if left:
        return (f"names only hosts wuremote leaves out ({len(left)}: {inventory.left_out[left[0]]}); "
                "choose Windows hosts")
    return f"matches no host or group; groups: {', '.join(inventory.groups) or 'none'}"
