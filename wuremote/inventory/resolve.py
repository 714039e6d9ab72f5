"""A Source -> an Inventory, the same for every format: group order and precedence, the checks
that need a host's merged vars, HostConfig records, passwords, and the hosts left out."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from .ansible import DEFAULT_CONNECTION, GROUP_PRIORITY, OPT_IN_HINT, Foreign, for_connection, scheme_from_port
from .model import HostConfig, Inventory, InventoryError
from .passwords import Passwords, PasswordVars, plaintext_warnings
from .source import HostDef, Source
from .vars import Var, control_char

_CONTROLLER_PATHS = ("ca_file", "cert_pem", "cert_key_pem", "kb_file")  # files read on this machine, not the host


def build(src: Source, environ: Mapping[str, str] | None, prompt: Callable[[str], str] | None, *,
          passwords: bool = True, defaults: Mapping[str, Var] | None = None) -> Inventory:
    """The hosts ``src`` defines, checked, with their passwords (see passwords.py).

    ``passwords=False`` leaves them to ``find_passwords`` for the hosts a run takes; ``defaults`` are
    vars below everything the inventory sets (the config file's and WUREMOTE_* connection settings)."""
    _check_names(src)
    _take_priorities(src)
    order = _group_order(src)
    ancestors: dict[str, set[str]] = {}

    def lineage(name: str) -> set[str]:
        if name not in ancestors:
            found = {name}
            for parent in (g.name for g in src.groups.values() if any(c == name for c, _ in g.children)):
                found |= lineage(parent)
            ancestors[name] = found
        return ancestors[name]

    direct: dict[str, set[str]] = {}
    for group in src.groups.values():
        for member in group.hosts:
            direct.setdefault(member, set()).update(lineage(group.name))
    hosts: list[HostConfig] = []
    left_out: dict[str, str] = {}
    password_vars: dict[str, PasswordVars] = {}
    foreign: dict[str, list[str]] = {}  # where ansible_connection is set -> hosts it leaves out
    for host in src.hosts.values():
        member_of = [name for name in order if name in direct.get(host.name, ())]
        merged = {**(defaults or {}), **_merged(src, host, member_of)}
        transport = merged.get("transport")
        if transport is None and src.ansible:
            left_out[host.name] = (f"{host.where}: no ansible_connection, and Ansible's default is "
                                   f"{DEFAULT_CONNECTION}; set ansible_connection: psrp (or winrm) for Windows hosts")
            foreign.setdefault(f"{src.path} (no ansible_connection: {DEFAULT_CONNECTION})", []).append(host.name)
            continue
        if transport is not None and isinstance(transport.value, Foreign):
            # the value is not shown: a password slipped into this line must not reach a message
            left_out[host.name] = (f"{transport.where}: {transport.written} is not winrm or psrp; "
                                   "wuremote repairs Windows hosts only")
            foreign.setdefault(transport.where, []).append(host.name)
            continue
        if src.ansible:
            merged = scheme_from_port(for_connection(merged, transport.value if transport else HostConfig.transport))
        config = _host_config(host, merged, tuple(member_of), src)
        password_vars[config.name] = PasswordVars.of(merged)
        hosts.append(config)
    if not hosts:
        reason = f" ({next(iter(left_out.values()))})" if left_out else ""
        raise InventoryError(f"{src.path}: no hosts to repair{reason}; define at least one Windows host")
    usable = {config.name for config in hosts}
    groups = {name: [h.name for h in src.hosts.values() if h.name in usable and name in direct.get(h.name, ())]
              for name in src.groups}
    left_out_groups = {name: [h for h in left_out if name in direct.get(h, ())] for name in src.groups}
    warnings = src.warnings + plaintext_warnings(password_vars)
    for where, names in foreign.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        warnings.append(f"{where}: left out {len(names)} host(s) whose connection is not winrm or psrp "
                        f"(not Windows): {shown}")
    inventory = Inventory(hosts=hosts, groups=groups, warnings=warnings, left_out=left_out,
                          left_out_groups={k: v for k, v in left_out_groups.items() if v}, password_vars=password_vars)
    if passwords:
        find_passwords(inventory, hosts, environ, prompt)
    return inventory


def find_passwords(inventory: Inventory, hosts: list[HostConfig], environ: Mapping[str, str] | None,
                   prompt: Callable[[str], str] | None) -> None:
    """Set the password of each of ``hosts`` (an inventory's, after --limit and any overrides)."""
    passwords = Passwords(os.environ if environ is None else environ, prompt)
    for config in hosts:
        config.password = passwords.find(config, inventory.password_vars.get(config.name, PasswordVars()))
    inventory.warnings.extend(passwords.warnings())


def _check_names(src: Source) -> None:
    seen: dict[str, HostDef] = {}
    for host in src.hosts.values():
        if not host.name.strip():
            raise InventoryError(f"{host.where}: a host without a name; give every host a name")
        bad = control_char(host.name)
        if bad is not None:
            raise InventoryError(f"{host.where}: host name {host.name!r} holds the control character {bad!r} "
                                 "(a line break or tab?); remove it")
        other = seen.setdefault(host.name.lower(), host)
        if other is not host:
            raise InventoryError(f"{host.where}: host {host.name!r} is already defined as {other.name!r} at "
                                 f"{other.where}; Windows names ignore case: keep one of them")


def _take_priorities(src: Source) -> None:
    """ansible_group_priority is a group's own setting, not a var: set in a group's inventory vars it orders
    that group (Ansible's Group.set_variable, lib/ansible/inventory/group.py); anywhere else it sets nothing."""
    for group in src.groups.values():
        found = group.vars.pop(GROUP_PRIORITY, None)
        if found is not None:
            group.priority = found.value
        group.file_vars.pop(GROUP_PRIORITY, None)
    for table in [src.vars, src.file_vars] + [h.vars for h in src.hosts.values()] + [h.file_vars for h in src.hosts.values()]:
        table.pop(GROUP_PRIORITY, None)


def _group_order(src: Source) -> list[str]:
    """Groups parents-first, then by ansible_group_priority, then alphabetical; unknown children and cycles fail.

    Ansible's order: lib/ansible/inventory/helpers.py ``sort_groups``, ``(g.depth, g.priority, g.name)``."""
    parents: dict[str, list[str]] = {name: [] for name in src.groups}
    for group in src.groups.values():
        for child, where in group.children:
            if child not in src.groups:
                raise InventoryError(f"{where}: group {group.name!r} names child group {child!r}, which is not "
                                     "defined; define that group or remove it from children")
            parents[child].append(group.name)
    depth: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> int:
        if name in path:
            cycle = " -> ".join(path[path.index(name):] + [name])
            where = src.groups[name].where
            raise InventoryError(f"{where}: group cycle {cycle}; a group cannot contain itself: remove one of "
                                 "those children entries")
        if name not in depth:
            depth[name] = 1 + max((visit(parent, path + [name]) for parent in parents[name]), default=-1)
        return depth[name]

    for name in src.groups:
        visit(name, [])
    return sorted(src.groups, key=lambda name: (depth[name], src.groups[name].priority, name))


def _merged(src: Source, host: HostDef, member_of: list[str]) -> dict[str, Var]:
    """Ansible's precedence: inventory group vars, then group_vars/ files, then the host's own.

    The native formats have no vars files, so for them it is [vars] < groups < host.
    """
    merged = dict(src.vars)
    for name in member_of:
        merged.update(src.groups[name].vars)
    merged.update(src.file_vars)
    for name in member_of:
        merged.update(src.groups[name].file_vars)
    merged.update(host.vars)
    merged.update(host.file_vars)
    return merged


def _host_config(host: HostDef, merged: dict[str, Var], groups: tuple[str, ...], src: Source) -> HostConfig:
    values = {name: var.value for name, var in merged.items() if name != "password"}
    if src.paths_beside_file:
        for name in _CONTROLLER_PATHS:
            if name in merged and not Path(values[name]).is_absolute():
                values[name] = str(Path(merged[name].where.rpartition(":")[0]).parent / values[name])
    values["address"] = values.get("address") or host.name
    config = HostConfig(name=host.name, groups=groups, source=host.where, **values)
    # The transport's own rules (basic over http, certificate files), with the opt-in as this file spells
    # it (the native spelling is the default); passwords are found later.
    connection = config.connection
    problem = (connection.problem(credentials=False, opt_in_hint=OPT_IN_HINT) if src.ansible
               else connection.problem(credentials=False))
    if problem is not None:
        raise InventoryError(f"{host.where}: host {host.name}: {problem}")
    sources = [name for name in ("kb_file", "kb_url", "msu_path") if getattr(config, name)]
    if len(sources) > 1:
        raise InventoryError(f"{host.where}: host {host.name}: {' and '.join(sources)} both say where the .msu is; "
                             "keep one")
    if config.kb_file and not config.kb:
        named = re.search(r"kb(\d{6,8})(\D|$)", Path(config.kb_file).name, re.IGNORECASE)
        if named is None:
            raise InventoryError(f"{host.where}: host {host.name}: kb_file {Path(config.kb_file).name} names no KB; "
                                 "set kb = \"KB...\" or use the file's Update Catalog name")
        config = dataclasses.replace(config, kb=f"KB{named.group(1)}")
    if config.reboot == "window" and not config.maintenance_window:
        raise InventoryError(f"{host.where}: host {host.name}: reboot window needs maintenance_window, "
                             "e.g. 'Sat 01:00-05:00'; set it or choose reboot never/allowed")
    return config
