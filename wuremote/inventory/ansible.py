"""Ansible's var names and values -> ours, and the refusal of vault values.

An Ansible inventory sets connection vars (ansible_host, ansible_psrp_auth...) and
``wuremote_*`` vars; every other var belongs to the user's playbooks and is ignored.
To read one more Ansible var: add its name to _ANSIBLE_NAMES (and its spelling of values to
_ansible_value when it differs from ours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..transport.connection import AUTHS, TRANSPORTS
from .model import InventoryError
from .passwords import Vaulted, vault_error
from .vars import CONVERTERS, VAR_NAMES, BadValue, Var, as_text, read_var, unknown_name

_ANSIBLE_NAMES = {
    "address": ("ansible_host", "ansible_ssh_host", "ansible_winrm_host", "ansible_psrp_host"),
    "port": ("ansible_port", "ansible_ssh_port", "ansible_winrm_port", "ansible_psrp_port"),
    "username": ("ansible_user", "ansible_ssh_user", "ansible_winrm_user", "ansible_psrp_user"),
    "password": ("ansible_password", "ansible_ssh_pass", "ansible_winrm_pass", "ansible_winrm_password",
                 "ansible_psrp_pass", "ansible_psrp_password"),
    "transport": ("ansible_connection",),
    "auth": ("ansible_winrm_transport", "ansible_psrp_auth"),
    "scheme": ("ansible_winrm_scheme", "ansible_psrp_protocol"),
    "cert_validation": ("ansible_winrm_server_cert_validation", "ansible_psrp_cert_validation"),
    "ca_file": ("ansible_winrm_ca_trust_path", "ansible_psrp_ca_cert"),
    "proxy": ("ansible_winrm_proxy", "ansible_psrp_proxy"),
    "cert_pem": ("ansible_winrm_cert_pem", "ansible_psrp_certificate_pem"),
    "cert_key_pem": ("ansible_winrm_cert_key_pem", "ansible_psrp_certificate_key_pem"),
    "allow_unencrypted_basic": ("ansible_winrm_message_encryption", "ansible_psrp_message_encryption"),
}
_FROM_ANSIBLE = {alias: native for native, aliases in _ANSIBLE_NAMES.items() for alias in aliases}
_WUREMOTE_NAMES = tuple(f"wuremote_{name}" for name in VAR_NAMES)
OPT_IN_HINT = "wuremote_allow_unencrypted_basic: true"  # the opt-in to basic over http, as an Ansible var
# A host without ansible_connection is not a Windows host: Ansible's default connection plugin is ssh
# (lib/ansible/config/base.yml, DEFAULT_TRANSPORT: default ssh).
DEFAULT_CONNECTION = "ssh"
GROUP_PRIORITY = "ansible_group_priority"  # a group's own setting, read from the inventory file only
# Ansible's winrm auth names -> ours; plaintext/ssl are Basic (pywinrm's names).
_WINRM_AUTH = {"plaintext": "basic", "ssl": "basic"}


@dataclass(frozen=True)
class Foreign:
    """An ansible_connection that is not Windows remoting (ssh, local...): the host is left out."""

    connection: str


_SKIP = object()  # an Ansible value that sets nothing here (message_encryption auto/always)


def _ansible_value(native: str, value: Any) -> Any:
    """Ansible's spelling of a value -> ours, before the native converter checks it."""
    if native == "transport":
        connection = as_text(value).lower().rsplit(".", 1)[-1]  # ansible.builtin.psrp -> psrp
        return connection if connection in TRANSPORTS else Foreign(connection)
    if native == "auth":
        return _first_usable_auth(value)
    if native == "allow_unencrypted_basic":  # message_encryption never = the opt-in to basic over http
        return True if str(value).lower() == "never" else _SKIP
    return value


def _first_usable_auth(value: Any) -> Any:
    """ansible_winrm_transport is a list (``ntlm,kerberos`` or ``[ntlm, kerberos]``: Ansible's option is
    ``type: list``, lib/ansible/plugins/connection/winrm.py, and a text is split on commas) that the
    winrm plugin tries in order; wuremote authenticates one way, the first item it supports."""
    items = [str(item).strip() for item in (value if isinstance(value, list) else str(value).split(","))]
    names = [_WINRM_AUTH.get(item.lower(), item.lower()) for item in items if item]
    return next((name for name in names if name in AUTHS), names[0] if names else value)


def scheme_from_port(merged: dict[str, Var]) -> dict[str, Var]:
    """No scheme set and port 5985: http, as both of Ansible's Windows connection plugins decide
    (lib/ansible/plugins/connection/winrm.py: "scheme should default to http if not set and the port is
    5985 otherwise https"; ansible.builtin.psrp: protocol "https if port is not defined or is not 5985")."""
    port = merged.get("port")
    if "scheme" in merged or port is None or port.value != 5985:
        return merged
    return {**merged, "scheme": Var("http", port.where, port.written)}


def ansible_var(name: str, value: Any, where: str) -> tuple[str, Var] | None:
    """An Ansible inventory var as (key, value); None for vars wuremote does not read.

    The key of an ansible_winrm_*/ansible_psrp_* var is "NATIVE@winrm"/"NATIVE@psrp": as in
    Ansible, it applies only to hosts of that connection and beats the generic name there.
    """
    if name == GROUP_PRIORITY:
        try:
            return name, Var(int(value), where, name)
        except (TypeError, ValueError):
            raise InventoryError(f"{where}: {name} must be a whole number (a higher one wins over "
                                 "groups of the same depth)") from None
    native = _FROM_ANSIBLE.get(name)
    if native is None and name.startswith("wuremote_"):
        native = name[len("wuremote_"):]
        if native not in CONVERTERS:
            raise unknown_name(name, where, _WUREMOTE_NAMES)
    if native is None:
        return None  # other ansible_* and the user's own vars belong to their playbooks (vaulted or not)
    only = next((f"@{t}" for t in TRANSPORTS if name.startswith(f"ansible_{t}_")), "")
    if is_vaulted(value):
        if native != "password":  # only a password has another source (password_env, WUREMOTE_PASSWORD, prompt)
            raise vault_error(where, name)
        return native + only, Var(Vaulted(name), where, name)
    try:
        value = _ansible_value(native, value)
    except BadValue as exc:
        raise InventoryError(f"{where}: {name} {exc}") from None
    if value is _SKIP:
        return None
    if isinstance(value, Foreign):
        return native, Var(value, where, name)
    return native + only, read_var(native, value, where, name)


def for_connection(merged: dict[str, Var], transport: str) -> dict[str, Var]:
    """Keep the ansible_<transport>_* vars of the host's own connection, over the generic names."""
    flat = {key: var for key, var in merged.items() if "@" not in key}
    suffix = f"@{transport}"
    flat.update((key[:-len(suffix)], var) for key, var in merged.items() if key.endswith(suffix))
    return flat


def is_vaulted(value: Any) -> bool:
    """A vault value as each form gives it: ``!vault`` in YAML, the vault text in INI, and
    ``{"__ansible_vault": ...}`` in the JSON of ``ansible-inventory --list`` (Ansible's
    AnsibleJSONEncoder writes vault values that way: lib/ansible/parsing/ajson.py)."""
    if isinstance(value, Vaulted):
        return True
    if isinstance(value, str):
        return value.lstrip().startswith("$ANSIBLE_VAULT;")
    return isinstance(value, dict) and "__ansible_vault" in value
