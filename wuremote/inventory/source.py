"""The one shape every format is read into: top-level vars, hosts and groups, each value
carrying the file:line it came from.  resolve.py turns it into HostConfig records, the same
way for every format, so precedence, checks and passwords cannot drift between formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .model import InventoryError
from .vars import Var


@dataclass
class HostDef:
    name: str
    where: str
    vars: dict[str, Var] = field(default_factory=dict)
    file_vars: dict[str, Var] = field(default_factory=dict)  # host_vars/ (Ansible): above vars


@dataclass
class GroupDef:
    name: str
    where: str
    hosts: list[str] = field(default_factory=list)
    children: list[tuple[str, str]] = field(default_factory=list)  # (child, where it is named)
    vars: dict[str, Var] = field(default_factory=dict)
    file_vars: dict[str, Var] = field(default_factory=dict)  # group_vars/ (Ansible)
    priority: int = 1  # ansible_group_priority: orders groups of the same depth (Ansible's default 1)


@dataclass
class Source:
    path: str
    ansible: bool = False
    merged_by_ansible: bool = False  # `ansible-inventory --list` JSON: vars already merged, no vars folders
    paths_beside_file: bool = False  # relative ca_file etc. from the file's folder; Ansible's: from the cwd
    vars: dict[str, Var] = field(default_factory=dict)
    file_vars: dict[str, Var] = field(default_factory=dict)  # group_vars/all
    hosts: dict[str, HostDef] = field(default_factory=dict)
    groups: dict[str, GroupDef] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what a reader wants the user to see

    def host(self, name: str, where: str) -> HostDef:
        found = self.hosts.get(name)
        if found is None:
            found = self.hosts[name] = HostDef(name, where)
        return found

    def group(self, name: str, where: str) -> GroupDef:
        found = self.groups.get(name)
        if found is None:
            found = self.groups[name] = GroupDef(name, where)
        return found


def read_text(path: Path) -> str:
    """An inventory file's text (or a vars file's), or an InventoryError naming it."""
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: CSV saved by Excel starts with a BOM
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read the inventory ({exc.strerror}); check the path") from None
    except UnicodeDecodeError as exc:
        raise InventoryError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
