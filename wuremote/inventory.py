"""Inventories -> HostConfig records: native TOML, CSV, Ansible YAML and INI.

(Loader to be written: see load_inventory.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .secret import Secret

TRANSPORTS = ("psrp", "winrm")
AUTHS = ("basic", "ntlm", "negotiate", "kerberos", "credssp", "certificate")
REBOOT_POLICIES = ("never", "allowed", "window")


class InventoryError(ValueError):
    """An inventory the tool cannot use; the message names file:line and the fix."""


@dataclass
class HostConfig:
    """Everything needed to reach and repair one host; built from inventory vars."""

    name: str
    address: str
    port: int | None = None  # None: 5986 for https, 5985 for http
    scheme: str = "https"
    transport: str = "psrp"
    auth: str = "negotiate"
    cert_validation: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: Secret | None = None
    password_env: str | None = None
    allow_unencrypted_basic: bool = False  # Basic over plain HTTP only when opted in by name
    proxy: str | None = None  # environment proxies are ignored unless set here
    cert_pem: str | None = None  # certificate auth
    cert_key_pem: str | None = None
    reboot: str = "allowed"  # never | allowed | window
    maintenance_window: str | None = None  # "Sat 01:00-05:00" (local time of the controller)
    reboot_group_cap: int | None = None  # most hosts of one group rebooting at once
    allow_reboot_roles: tuple[str, ...] = ()  # domain-controller, cluster-node, hyperv-host
    max_reboots: int = 3
    opt_in: tuple[str, ...] = ()  # av-pause, clean-boot
    kb: str | None = None
    kb_url: str | None = None
    kb_sha256: str | None = None
    dism_source: str | None = None
    exclude_services: tuple[str, ...] = ()
    vendor_av: dict[str, Any] = field(default_factory=dict)  # pause/resume command + arguments
    step_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    site: str | None = None
    source: str = ""  # "file:line" where the host was defined, for error messages

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (5986 if self.scheme == "https" else 5985)


@dataclass
class Inventory:
    hosts: list[HostConfig]
    groups: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
