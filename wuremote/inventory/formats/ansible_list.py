"""The JSON `ansible-inventory --list` prints: what cloud and CMDB plugins, inventory scripts and vault
give once Ansible has read them.

Its shape (lib/ansible/cli/inventory.py, ``json_inventory``): ``_meta.hostvars`` holds each host's vars,
already merged by Ansible (group and host vars, group_vars/ and host_vars/ files); each other top-level
key is a group with ``hosts`` and ``children`` as lists (and ``vars`` with ``--export``).  So the
precedence is Ansible's own, and wuremote only translates the vars.
"""

from __future__ import annotations

import json
from typing import Any

from ..ansible import ansible_var
from ..model import InventoryError
from ..source import Source


def is_ansible_list(data: Any) -> bool:
    """JSON text in the `ansible-inventory --list` shape (not a YAML-style inventory written as JSON)."""
    if not isinstance(data, dict):
        return False
    return "_meta" in data or any(isinstance(group, dict) and isinstance(group.get("hosts"), list)
                                  for group in data.values())


def read_ansible_list(path: str, text: str) -> Source:
    try:
        data = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", 1)
        raise InventoryError(f"{path}:{line}: not the JSON of `ansible-inventory --list`; run "
                             "`ansible-inventory -i SOURCE --list > FILE.json` again") from None
    if not isinstance(data, dict):
        raise InventoryError(f"{path}:1: not the JSON of `ansible-inventory --list` (an object of groups)")
    src = Source(path, ansible=True, merged_by_ansible=True)
    lines = text.splitlines()

    def where(key: str, after: int = 0) -> str:
        quoted = json.dumps(key) + ":"
        found = next((n for n, line in enumerate(lines[after:], start=after + 1) if quoted in line), after + 1)
        return f"{path}:{found}"

    meta = data.get("_meta") or {}
    hostvars = meta.get("hostvars") or {} if isinstance(meta, dict) else {}
    meta_line = int(where("_meta").rpartition(":")[2]) - 1
    for name, group in data.items():
        if name == "_meta" or not isinstance(group, dict):
            continue
        target = None if name in ("all", "ungrouped") else src.group(name, where(name))
        for host in group.get("hosts") or []:
            src.host(str(host), where(name))
            if target is not None:
                target.hosts.append(str(host))
        for child in group.get("children") or []:
            if target is not None and child != "ungrouped":
                target.children.append((str(child), where(name)))
        for key, value in (group.get("vars") or {}).items():
            pair = ansible_var(key, value, where(key))
            if pair is not None:
                (src.vars if target is None else target.vars)[pair[0]] = pair[1]
    for name, host_vars in (hostvars.items() if isinstance(hostvars, dict) else ()):
        at = where(name, meta_line)
        host = src.host(str(name), at)
        for key, value in (host_vars or {}).items():
            pair = ansible_var(key, value, at)
            if pair is not None:
                host.vars[pair[0]] = pair[1]
    for group in src.groups.values():  # a child named but not listed (an empty group) is still a group
        for child, at in group.children:
            src.group(child, at)
    return src
