"""What an inventory produces: HostConfig per host, the Inventory holding them, InventoryError.

HostConfig keeps its flat fields (users build ``HostConfig(name=..., address=..., auth=...)``);
``host.connection`` and ``host.policy`` give each layer its own record: the transport's
Connection (how to reach the host) and the engine's RepairPolicy (what a repair may do there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..contract.steps import OPT_IN_STEPS
from ..secret import Secret
from ..transport.connection import Connection

if TYPE_CHECKING:
    from .passwords import PasswordVars

REBOOT_POLICIES = ("never", "allowed", "window")
OPT_INS = OPT_IN_STEPS  # one place: the step contract
REBOOT_ROLES = ("domain-controller", "cluster-node", "hyperv-host")


class InventoryError(ValueError):
    """An inventory the tool cannot use; the message names file:line and the fix."""


@dataclass(frozen=True)
class RepairPolicy:
    """What a repair may do on one host: its reboots, opt-in steps, KB and step parameters.

    Built by ``HostConfig.policy``; the defaults and the meaning of each field are HostConfig's.
    """

    reboot: str
    maintenance_window: str | None
    reboot_group_cap: int | None
    allow_reboot_roles: tuple[str, ...]
    max_reboots: int
    opt_in: tuple[str, ...]
    kb: str | None
    kb_url: str | None
    kb_sha256: str | None
    kb_file: str | None
    msu_path: str | None
    dism_source: str | None
    install: tuple[str, ...]
    install_accept: tuple[str, ...]
    install_reject: tuple[str, ...]
    install_optional: bool
    exclude_services: tuple[str, ...]
    vendor_av: Mapping[str, Any]
    step_options: Mapping[str, Mapping[str, Any]]


@dataclass
class HostConfig:
    """Everything needed to reach and repair one host; built from inventory vars."""

    name: str
    # --- connection: how to reach the host (self.connection) -------------------------------
    address: str
    port: int | None = None  # None: 5986 for https, 5985 for http
    scheme: str = "https"
    transport: str = "psrp"
    auth: str = "negotiate"
    cert_validation: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: Secret | None = None
    password_env: str | None = None  # where the password came from; the inventory reads it, not the transport
    allow_unencrypted_basic: bool = False  # Basic over plain HTTP only when opted in by name
    proxy: str | None = None  # environment proxies are ignored unless set here
    cert_pem: str | None = None  # certificate auth
    cert_key_pem: str | None = None
    # --- repair policy: what a repair may do there (self.policy) ---------------------------
    reboot: str = "allowed"  # never | allowed | window
    maintenance_window: str | None = None  # "Sat 01:00-05:00" (local time of the controller)
    reboot_group_cap: int | None = None  # most hosts of one group rebooting at once
    allow_reboot_roles: tuple[str, ...] = ()  # domain-controller, cluster-node, hyperv-host
    max_reboots: int = 3
    opt_in: tuple[str, ...] = ()  # av-pause, clean-boot
    kb: str | None = None
    kb_url: str | None = None
    kb_sha256: str | None = None
    kb_file: str | None = None  # a .msu on this machine that the controller pushes to the host
    msu_path: str | None = None  # a .msu (or a folder of them) the host reads itself: local or a UNC share
    dism_source: str | None = None
    # Updates to install once updates work (contract/updates.py category keys; () installs nothing).
    install: tuple[str, ...] = ()
    install_accept: tuple[str, ...] = ()  # only these KBs (win_updates' accept_list)
    install_reject: tuple[str, ...] = ()  # never these KBs (reject_list)
    install_optional: bool = False  # also optional (BrowseOnly) updates (not skip_optional)
    exclude_services: tuple[str, ...] = ()
    vendor_av: dict[str, Any] = field(default_factory=dict)  # pause/resume command + arguments
    step_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # --- the inventory's own: where the host sits and where it was written ----------------
    groups: tuple[str, ...] = ()
    site: str | None = None
    source: str = ""  # "file:line" where the host was defined, for error messages

    @property
    def connection(self) -> Connection:
        # Connection declares which of HostConfig's fields a transport sees (pyinfra's connectors own their host data).
        return Connection(**{f.name: getattr(self, f.name) for f in fields(Connection)})

    @property
    def policy(self) -> RepairPolicy:
        return RepairPolicy(**{f.name: getattr(self, f.name) for f in fields(RepairPolicy)})

    @property
    def effective_port(self) -> int:
        return self.connection.effective_port


@dataclass
class Inventory:
    """The hosts to repair, in inventory order, with what the loader wants the user to see."""

    hosts: list[HostConfig]
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> member names, children's included
    warnings: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # non-Windows hosts (ansible_connection ssh...) -> why
    left_out_groups: dict[str, list[str]] = field(default_factory=dict)  # group -> its left-out members
    password_vars: dict[str, PasswordVars] = field(default_factory=dict)  # host -> where its password comes from
