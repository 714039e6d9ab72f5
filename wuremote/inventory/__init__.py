"""Inventories -> HostConfig records: native TOML, CSV, Ansible YAML and INI.

Every format is read into one intermediate shape and resolved by one function, so precedence,
validation and password handling cannot drift between formats.  Values are checked where they
are written, once, so an error names the line to edit.  inventory/README.md describes the
formats for users.  Where each change goes:

    model.py        HostConfig (its .connection and .policy), RepairPolicy, Inventory, InventoryError
    vars.py         the vars a host may set and the converter checking each one
    formats/        one reader per format (native_toml, csv_rows, ansible_yaml, ansible_ini,
                    group_vars for Ansible's group_vars/ and host_vars/ folders)
    ansible.py      Ansible's var names and values -> ours; vault values refused
    ranges.py       host-name ranges (web[01:20]) and their limit
    source.py       the shape every reader fills: vars, hosts and groups with file:line
    resolve.py      that shape -> HostConfig records: precedence, the checks, left-out hosts
    passwords.py    where each host's password comes from
    load.py         load_inventory: pick the reader by the file's extension
    names.py        hosts named on the command line, or recorded in a run's journal
    limit.py        --limit: choosing among the loaded hosts
    targets.py      the hosts a run takes: connection flags over the inventory, inputs checked before connecting
"""

from __future__ import annotations

from ..transport.connection import AUTHS, SCHEMES, TRANSPORTS
from .limit import select
from .load import load_inventory
from .model import (
    OPT_INS,
    REBOOT_POLICIES,
    REBOOT_ROLES,
    HostConfig,
    Inventory,
    InventoryError,
    RepairPolicy,
)
from .names import host_snapshot, hosts_from_names, hosts_from_snapshot
from .passwords import PASSWORD_ENV
from .ranges import MAX_RANGE
from .resolve import find_passwords
from .vars import VAR_NAMES

__all__ = [
    "AUTHS",
    "MAX_RANGE",
    "OPT_INS",
    "PASSWORD_ENV",
    "REBOOT_POLICIES",
    "REBOOT_ROLES",
    "SCHEMES",
    "TRANSPORTS",
    "VAR_NAMES",
    "HostConfig",
    "Inventory",
    "InventoryError",
    "RepairPolicy",
    "find_passwords",
    "host_snapshot",
    "hosts_from_names",
    "hosts_from_snapshot",
    "load_inventory",
    "select",
]
