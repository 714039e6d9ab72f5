"""Hosts without an inventory file: named on the command line, or as a run's journal recorded them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from .model import HostConfig, Inventory, InventoryError
from .passwords import PASSWORD_ENV
from .ranges import expand
from .resolve import build
from .source import Source
from .vars import Var, read_var


def hosts_from_names(names: list[str], defaults: dict[str, Any], *, environ: Mapping[str, str] | None = None,
                     prompt: Callable[[str], str] | None = None, passwords: bool = True,
                     low: Mapping[str, Var] | None = None) -> Inventory:
    """Hosts named on the command line (`wuremote repair HOST HOST`), `defaults` being their vars."""
    where = "command line"
    src = Source(where)
    if "password" in defaults:
        raise InventoryError(f"{where}: a password is never taken from the command line; set {PASSWORD_ENV} "
                             "or password_env, or enter it at the prompt")
    src.vars = {name: read_var(name, value, where) for name, value in defaults.items() if value is not None}
    for pattern in names:
        for name in expand(pattern, where):
            if name in src.hosts:
                raise InventoryError(f"{where}: host {name!r} is named twice; name each host once")
            src.host(name, where)
    return build(src, environ, prompt, passwords=passwords, defaults=low)


def host_snapshot(host: HostConfig) -> dict[str, Any]:
    """A host's settings for the journal, so `resume` reconnects without the inventory: no password."""
    return {f.name: (list(v) if isinstance(v, tuple) else v)
            for f in fields(host) if f.name != "password" for v in [getattr(host, f.name)]}


def hosts_from_snapshot(snapshot: list[dict[str, Any]], *, environ: Mapping[str, str] | None = None,
                        prompt: Callable[[str], str] | None = None) -> list[HostConfig]:
    """Hosts as a run's journal recorded them (every field but the password), for `wuremote resume`.

    The values are checked again (a journal is a file too) and passwords found as load_inventory does.
    """
    src = Source("run journal")
    groups: dict[str, tuple[str, ...]] = {}
    for record in snapshot:
        values = dict(record)
        name, where = str(values.pop("name", "")), str(values.pop("source", "") or "run journal")
        groups[name] = tuple(values.pop("groups", ()))
        src.host(name, where).vars = {key: read_var(key, value, where) for key, value in values.items()
                                      if value is not None}
    hosts = build(src, environ, prompt).hosts
    for host in hosts:
        host.groups = groups[host.name]
    return hosts
