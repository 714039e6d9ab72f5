"""The hosts a run takes, made ready before any connection: connection flags applied over the
inventory, then every input a connection needs checked, so bad input stops the run (exit 2)
before a host is touched.

Order (the CLI's `_hosts`): load without passwords -> `--limit` -> `--shard` -> `apply_flags`
-> `find_passwords` (only the chosen hosts' variables must be set) -> `preflight`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .model import HostConfig, InventoryError
from .passwords import PASSWORD_ENV
from .vars import Var, read_var

FLAG_WHERE = "command line"
# The connection flags and the var each one sets.  As Ansible's -u/-c/-e, a flag given on the
# command line wins over the inventory for every host the run takes
# (docs.ansible.com, "Controlling how Ansible behaves: precedence rules": command-line
# options override inventory variables, except -e which overrides everything).
CONNECTION_FLAGS = {"transport": "transport", "auth": "auth", "user": "username", "scheme": "scheme",
                    "port": "port", "ca_file": "ca_file"}
_CONTROLLER_FILES = ("ca_file", "cert_pem", "cert_key_pem", "kb_file")


def default_vars(values: Mapping[str, Any], origin: Mapping[str, str]) -> dict[str, Var]:
    """Connection settings of the config file or WUREMOTE_* (named as the flags), as vars below the inventory's."""
    return {CONNECTION_FLAGS[flag]: read_var(CONNECTION_FLAGS[flag], value, origin.get(flag, "defaults"), flag)
            for flag, value in values.items() if flag in CONNECTION_FLAGS and value is not None}


def flag_vars(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The vars the given connection flags set (flags left out or None set nothing), checked."""
    found: dict[str, Any] = {}
    for flag, var in CONNECTION_FLAGS.items():
        value = flags.get(flag)
        if value is not None:
            found[var] = read_var(var, value, FLAG_WHERE, "--" + flag.replace("_", "-")).value
    return found


def apply_flags(hosts: list[HostConfig], flags: Mapping[str, Any]) -> list[HostConfig]:
    """``hosts`` with the connection flags given on the command line set over their inventory values."""
    values = flag_vars(flags)
    if not values:
        return hosts
    changed = [dataclasses.replace(host, **values) for host in hosts]
    for host in changed:
        problem = host.connection.problem(credentials=False)
        if problem is not None:
            raise InventoryError(f"{FLAG_WHERE}: host {host.name} (from {host.source}) with these flags: {problem}")
    return changed


def preflight(hosts: list[HostConfig]) -> None:
    """Every input a connection needs, checked for every host before the first connection.

    One InventoryError naming the host, where it was defined, and the fix."""
    for host in hosts:
        for name in _CONTROLLER_FILES:
            path = getattr(host, name)
            if path and not Path(path).is_file():
                raise InventoryError(f"{host.source}: host {host.name}: {name} {path} is not a readable file "
                                     f"on this machine; fix the path{' or --ca-file' if name == 'ca_file' else ''}")
        if host.auth == "certificate":
            continue
        if not host.username:
            fix = ("give --user 'DOMAIN\\user'" if host.source.startswith(FLAG_WHERE)
                   else "set username (ansible_user) in the inventory, or give --user")
            raise InventoryError(f"{host.source}: host {host.name}: auth {host.auth} needs a user name; {fix}")
        if host.password is None:
            raise InventoryError(f"{host.source}: host {host.name}: no password for {host.username}; set "
                                 f"{PASSWORD_ENV} or password_env, or run wuremote in a terminal to be asked")
        problem = host.connection.problem()
        if problem is not None:
            raise InventoryError(f"{host.source}: host {host.name}: {problem}")
