"""Inventories -> HostConfig records: native TOML, CSV, Ansible YAML and INI.

Every format is read into one intermediate shape (top-level vars, hosts, groups with
hosts/children/vars, each value carrying the file:line it came from) and resolved by one
function, so precedence, validation and password handling cannot drift between formats.
Values are checked where they are written, once, so an error names the line to edit and a
1,000-host inventory costs one pass.  inventory/README.md describes the formats for users.
"""

from __future__ import annotations

import ast
import csv
import difflib
import fnmatch
import io
import json
import os
import re
import shlex
import string
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .secret import Secret

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TRANSPORTS = ("psrp", "winrm")
AUTHS = ("basic", "ntlm", "negotiate", "kerberos", "credssp", "certificate")
REBOOT_POLICIES = ("never", "allowed", "window")
SCHEMES = ("https", "http")
OPT_INS = ("av-pause", "clean-boot")
REBOOT_ROLES = ("domain-controller", "cluster-node", "hyperv-host")
PASSWORD_ENV = "WUREMOTE_PASSWORD"
MAX_RANGE = 100_000  # hosts one range may expand to; a typo like [1:1000000000] fails fast


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
    """The hosts to repair, in inventory order, with what the loader wants the user to see."""

    hosts: list[HostConfig]
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> member names, children's included
    warnings: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # non-Windows hosts (ansible_connection ssh...) -> why


# --- values: one converter per var, each raising _Bad with the problem and the fix ----------
class _Bad(Exception):
    """A var's value is unusable; the text says why and what to write instead."""


def _control_char(text: str) -> str | None:
    """The first control character or line separator in ``text``, which no name, address or path holds.

    One in a user name or host name would otherwise reach a terminal line, a log or a header
    as a second line of its own (``admin\n12:00 web02 HEALTHY``)."""
    return next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp")), None)


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Bad("must be text")
    text = str(value).strip()
    bad = _control_char(text)
    if bad is not None:
        raise _Bad(f"holds the control character {bad!r} (a line break or tab?); remove it")
    return text


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = _text(value).lower()
        if text not in options:
            raise _Bad(f"{value!r} is not one of {', '.join(options)}")
        return text

    return convert


def _whole(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(f"{value!r} is not {what}; use a whole number from {low} to {high}")
    return value


def _port(value: Any) -> int:
    return _whole(value, 1, 65535, "a port")


def _count(low: int) -> Callable[[Any], int]:
    return lambda value: _whole(value, low, 10_000, "a count")


_TRUE = ("true", "yes", "on", "1", "validate")
_FALSE = ("false", "no", "off", "0", "ignore")


def _flag(value: Any) -> bool:
    """Booleans as TOML/YAML write them, and as text from CSV cells and INI lines."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Bad(f"{value!r} is not true or false")


def _items(options: tuple[str, ...] | None = None) -> Callable[[Any], tuple[str, ...]]:
    """A list, or one text of names separated by commas, semicolons or spaces (CSV cells)."""

    def convert(value: Any) -> tuple[str, ...]:
        raw = re.split(r"[,;\s]+", value) if isinstance(value, str) else value
        if not isinstance(raw, (list, tuple)):
            raise _Bad("must be a list of names")
        items = tuple(_text(item) for item in raw if _text(item))
        if options is not None:
            items = tuple(item.lower() for item in items)
            wrong = [item for item in items if item not in options]
            if wrong:
                raise _Bad(f"{wrong[0]!r} is not one of {', '.join(options)}")
        return items

    return convert


def _kb(value: Any) -> str:
    text = _text(value).upper()
    if not re.fullmatch(r"KB\d{6,8}", text):
        raise _Bad(f"{value!r} is not a KB id; write it as KB followed by 6 to 8 digits, e.g. KB5034441")
    return text


def _sha256(value: Any) -> str:
    text = _text(value).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise _Bad("is not a SHA-256 digest; give the 64 hex digits")
    return text


_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_WINDOW = re.compile(rf"(?:{_DAY}(?:-{_DAY})?(?:,{_DAY}(?:-{_DAY})?)*\s+)?([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d",
                     re.IGNORECASE)


def _window(value: Any) -> str:
    text = _text(value)
    if not _WINDOW.fullmatch(text):
        raise _Bad(f"{value!r} is not a window; write DAYS HH:MM-HH:MM, e.g. 'Sat 01:00-05:00' or 'Mon-Fri 22:00-02:00'")
    return text


def _table(value: Any) -> dict[str, Any]:
    """A table; CSV cells and INI lines give it as JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _Bad("must be a table (a JSON object in CSV and INI)") from None
    if not isinstance(value, dict):
        raise _Bad("must be a table (a JSON object in CSV and INI)")
    return value


_PARAMETER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_CONTROLLER_PARAMETERS = ("runid", "resultmarker")  # set by the controller for every step, never by an inventory


def _step_options(value: Any) -> dict[str, dict[str, Any]]:
    """Per-step script parameters: each name a plain PowerShell parameter name, each value data."""
    table = _table(value)
    for step, options in table.items():
        if not isinstance(options, dict):
            raise _Bad(f"entry {step!r} must be a table of that step's options, e.g. {{cleanup = {{ResetBase = true}}}}")
        for name in options:
            if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name):
                raise _Bad(f"entry {step!r}: {name!r} is not a parameter name; use the script's parameter name "
                           "(letters and digits), e.g. ResetBase")
            if name.lower() in _CONTROLLER_PARAMETERS:
                raise _Bad(f"entry {step!r}: {name} is set by wuremote for every step; remove it")
    return table


_VENDOR_AV_KEYS = ("pause_command", "pause_arguments", "resume_command", "resume_arguments")


def _vendor_av(value: Any) -> dict[str, Any]:
    """The av-pause step's vendor commands: both or neither, each a full path, arguments as a list."""
    table = _table(value)
    unknown = sorted(set(table) - set(_VENDOR_AV_KEYS))
    if unknown:
        raise _Bad(f"has unknown key {unknown[0]!r}; use {', '.join(_VENDOR_AV_KEYS)}")
    if table and not ("pause_command" in table and "resume_command" in table):
        raise _Bad("needs both pause_command and resume_command")
    for key in ("pause_command", "resume_command"):
        if key in table and not (isinstance(table[key], str) and re.match(r"^(?:[A-Za-z]:\\|\\\\)", table[key])):
            raise _Bad(f"{key} must be the executable's full Windows path, e.g. 'C:\\Program Files\\Vendor\\avctl.exe'")
    for key in ("pause_arguments", "resume_arguments"):
        if key in table and not (isinstance(table[key], list) and all(isinstance(a, str) for a in table[key])):
            raise _Bad(f"{key} must be a list of texts, e.g. [\"--pause\"]")
    return table


def _secret(value: Any) -> Secret:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Bad("must be text")  # never echo the value: it is a password
    return Secret(str(value))


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None or value == "" else convert(value)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "address": _optional(_text),
    "transport": _choice(TRANSPORTS),
    "port": _port,
    "scheme": _choice(SCHEMES),
    "auth": _choice(AUTHS),
    "cert_validation": _flag,
    "ca_file": _optional(_text),
    "username": _optional(_text),
    "password": _secret,
    "password_env": _optional(_text),
    "allow_unencrypted_basic": _flag,
    "proxy": _optional(_text),
    "cert_pem": _optional(_text),
    "cert_key_pem": _optional(_text),
    "reboot": _choice(REBOOT_POLICIES),
    "maintenance_window": _optional(_window),
    "reboot_group_cap": _optional(_count(1)),
    "allow_reboot_roles": _items(REBOOT_ROLES),
    "max_reboots": _count(0),
    "opt_in": _items(OPT_INS),
    "kb": _optional(_kb),
    "kb_url": _optional(_text),
    "kb_sha256": _optional(_sha256),
    "dism_source": _optional(_text),
    "exclude_services": _items(),
    "vendor_av": _vendor_av,
    "step_options": _step_options,
    "site": _optional(_text),
}
VAR_NAMES = tuple(sorted(_CONVERTERS))


@dataclass(frozen=True)
class _Var:
    value: Any  # already converted to the HostConfig field's type
    where: str  # "file:line"
    written: str  # the name as the file spells it (ansible_port), for messages


def _unknown(name: str, where: str, known: tuple[str, ...], what: str = "var") -> InventoryError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return InventoryError(f"{where}: unknown {what} {name!r}{hint}; known {what}s: {', '.join(known)}")


def _var(name: str, value: Any, where: str, written: str | None = None) -> _Var:
    written = written or name
    convert = _CONVERTERS.get(name)
    if convert is None:
        raise _unknown(name, where, VAR_NAMES)
    try:
        return _Var(convert(value), where, written)
    except _Bad as exc:
        raise InventoryError(f"{where}: {written} {exc}") from None


# --- Ansible var names -> native names ---------------------------------------------------------
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


@dataclass(frozen=True)
class _Foreign:
    """An ansible_connection that is not Windows remoting (ssh, local...): the host is left out."""

    connection: str


_SKIP = object()  # an Ansible value that sets nothing here (message_encryption auto/always)


def _ansible_value(native: str, value: Any) -> Any:
    """Ansible's spelling of a value -> ours, before the native converter checks it."""
    if native == "transport":
        connection = _text(value).lower().rsplit(".", 1)[-1]  # ansible.builtin.psrp -> psrp
        return connection if connection in TRANSPORTS else _Foreign(connection)
    if native == "auth":
        first = value[0] if isinstance(value, list) and value else value  # a list of transports: the first
        return {"plaintext": "basic", "ssl": "basic"}.get(str(first).lower(), first)
    if native == "allow_unencrypted_basic":  # message_encryption never = the opt-in to basic over http
        return True if str(value).lower() == "never" else _SKIP
    return value


def _ansible_var(name: str, value: Any, where: str) -> tuple[str, _Var] | None:
    """An Ansible inventory var as (key, value); None for vars wuremote does not read.

    The key of an ansible_winrm_*/ansible_psrp_* var is "NATIVE@winrm"/"NATIVE@psrp": as in
    Ansible, it applies only to hosts of that connection and beats the generic name there.
    """
    if isinstance(value, str) and value.startswith("$ANSIBLE_VAULT;"):
        raise _vault_error(where, name)
    native = _FROM_ANSIBLE.get(name)
    if native is None and name.startswith("wuremote_"):
        native = name[len("wuremote_"):]
        if native not in _CONVERTERS:
            raise _unknown(name, where, _WUREMOTE_NAMES)
    if native is None:
        return None  # other ansible_* and the user's own vars belong to their playbooks
    try:
        value = _ansible_value(native, value)
    except _Bad as exc:
        raise InventoryError(f"{where}: {name} {exc}") from None
    if value is _SKIP:
        return None
    if isinstance(value, _Foreign):
        return native, _Var(value, where, name)
    only = next((f"@{t}" for t in TRANSPORTS if name.startswith(f"ansible_{t}_")), "")
    return native + only, _var(native, value, where, name)


def _vault_error(where: str, name: str) -> InventoryError:
    return InventoryError(f"{where}: ansible vault value for {name}: wuremote does not decrypt vault; "
                          f"set password_env/{PASSWORD_ENV} or enter it at the prompt")


# --- the intermediate shape every format is read into ------------------------------------------
@dataclass
class _HostDef:
    name: str
    where: str
    vars: dict[str, _Var] = field(default_factory=dict)
    file_vars: dict[str, _Var] = field(default_factory=dict)  # host_vars/ (Ansible): above vars


@dataclass
class _GroupDef:
    name: str
    where: str
    hosts: list[str] = field(default_factory=list)
    children: list[tuple[str, str]] = field(default_factory=list)  # (child, where it is named)
    vars: dict[str, _Var] = field(default_factory=dict)
    file_vars: dict[str, _Var] = field(default_factory=dict)  # group_vars/ (Ansible)


@dataclass
class _Source:
    path: str
    ansible: bool = False
    paths_beside_file: bool = False  # relative ca_file etc. from the file's folder; Ansible's: from the cwd
    vars: dict[str, _Var] = field(default_factory=dict)
    file_vars: dict[str, _Var] = field(default_factory=dict)  # group_vars/all
    hosts: dict[str, _HostDef] = field(default_factory=dict)
    groups: dict[str, _GroupDef] = field(default_factory=dict)

    def host(self, name: str, where: str) -> _HostDef:
        found = self.hosts.get(name)
        if found is None:
            found = self.hosts[name] = _HostDef(name, where)
        return found

    def group(self, name: str, where: str) -> _GroupDef:
        found = self.groups.get(name)
        if found is None:
            found = self.groups[name] = _GroupDef(name, where)
        return found


def _expand(name: str, where: str) -> list[str]:
    """Ansible host ranges: web[01:20], db-[a:c], node[0:10:2]; several ranges multiply."""
    match = re.search(r"\[([^\]]*:[^\]]*)\]", name)
    if match is None:
        return [name]
    head, tail = name[:match.start()], name[match.end():]
    bounds = match.group(1).split(":")

    def bad(problem: str) -> InventoryError:
        return InventoryError(f"{where}: host range {name!r}: {problem}; write NAME[START:END] or "
                              "NAME[START:END:STEP], e.g. web[01:20] or db-[a:c]")

    if len(bounds) not in (2, 3) or not bounds[1]:
        raise bad("needs a start and an end")
    begin, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not step_text.isdigit() or int(step_text) == 0:
        raise bad("the step must be a whole number above 0")
    step = int(step_text)
    if begin.isdigit() and end.isdigit():
        width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
        if width and len(end) != width:
            raise bad("a zero-padded start and its end need the same number of digits")
        if int(begin) > int(end):
            raise bad("the start is after the end")
        if (int(end) - int(begin)) // step >= MAX_RANGE:
            raise bad(f"it expands to more than {MAX_RANGE} hosts")
        parts = [str(i).zfill(width) for i in range(int(begin), int(end) + 1, step)]
    elif len(begin) == 1 and len(end) == 1 and begin in string.ascii_letters and end in string.ascii_letters:
        first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
        if first > last:
            raise bad("the start is after the end")
        parts = list(string.ascii_letters[first:last + 1:step])
    else:
        raise bad("the bounds must be both numbers or both single letters")
    return [host for part in parts for host in _expand(head + part + tail, where)]


# --- resolution: the same for every format ----------------------------------------------------
def _group_order(src: _Source) -> list[str]:
    """Groups parents-first then alphabetical (Ansible's order); unknown children and cycles fail."""
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
    return sorted(src.groups, key=lambda name: (depth[name], name))


def _check_names(src: _Source) -> None:
    seen: dict[str, _HostDef] = {}
    for host in src.hosts.values():
        if not host.name.strip():
            raise InventoryError(f"{host.where}: a host without a name; give every host a name")
        bad = _control_char(host.name)
        if bad is not None:
            raise InventoryError(f"{host.where}: host name {host.name!r} holds the control character {bad!r} "
                                 "(a line break or tab?); remove it")
        other = seen.setdefault(host.name.lower(), host)
        if other is not host:
            raise InventoryError(f"{host.where}: host {host.name!r} is already defined as {other.name!r} at "
                                 f"{other.where}; Windows names ignore case: keep one of them")


_CONTROLLER_PATHS = ("ca_file", "cert_pem", "cert_key_pem")  # files read on this machine, not the host


def _host_config(host: _HostDef, merged: dict[str, _Var], groups: tuple[str, ...], src: _Source) -> HostConfig:
    values = {name: var.value for name, var in merged.items() if name != "password"}
    if src.paths_beside_file:
        for name in _CONTROLLER_PATHS:
            if name in merged and not Path(values[name]).is_absolute():
                values[name] = str(Path(merged[name].where.rpartition(":")[0]).parent / values[name])
    values["address"] = values.get("address") or host.name
    config = HostConfig(name=host.name, groups=groups, source=host.where, **values)
    opt_in_hint = "wuremote_allow_unencrypted_basic: true" if src.ansible else "allow_unencrypted_basic = true"
    if config.auth == "basic" and config.scheme == "http" and not config.allow_unencrypted_basic:
        raise InventoryError(f"{host.where}: host {host.name}: auth basic over scheme http would send the password "
                             f"unencrypted; use scheme https, or set {opt_in_hint} if you accept that")
    if config.auth == "certificate" and not (config.cert_pem and config.cert_key_pem and config.scheme == "https"):
        raise InventoryError(f"{host.where}: host {host.name}: auth certificate needs scheme https, cert_pem and "
                             "cert_key_pem (the client certificate and its key files); set them")
    if config.reboot == "window" and not config.maintenance_window:
        raise InventoryError(f"{host.where}: host {host.name}: reboot window needs maintenance_window, "
                             "e.g. 'Sat 01:00-05:00'; set it or choose reboot never/allowed")
    return config


class _Passwords:
    """password_env, then a password written in the file (warned), WUREMOTE_PASSWORD, the prompt."""

    def __init__(self, environ: Mapping[str, str], prompt: Callable[[str], str] | None) -> None:
        self.environ = environ
        self.prompt = prompt
        self.asked: dict[str, Secret] = {}
        self.plaintext_files: dict[str, str] = {}  # file -> first line holding a password

    def find(self, config: HostConfig, merged: dict[str, _Var]) -> Secret | None:
        written = merged.get("password")
        if written is not None:
            file, _, line = written.where.rpartition(":")
            self.plaintext_files.setdefault(file, line)
        if config.password_env:
            value = self.environ.get(config.password_env)
            if value is None:
                raise InventoryError(f"{merged['password_env'].where}: password_env names {config.password_env}, "
                                     "which is not set; export it before running wuremote")
            return Secret(value)
        if written is not None:
            return written.value
        if PASSWORD_ENV in self.environ:
            return Secret(self.environ[PASSWORD_ENV])
        if self.prompt is None or not config.username or config.auth in ("certificate", "kerberos"):
            return None
        if config.username not in self.asked:
            self.asked[config.username] = Secret(self.prompt(config.username))
        return self.asked[config.username]

    def warnings(self) -> list[str]:
        return [f"{file}:{line}: a plaintext password is stored in this file; remove it and set password_env "
                f"(a variable's name) or {PASSWORD_ENV}, or enter it at the prompt"
                for file, line in self.plaintext_files.items()]


def _for_connection(merged: dict[str, _Var], transport: str) -> dict[str, _Var]:
    """Keep the ansible_<transport>_* vars of the host's own connection, over the generic names."""
    flat = {key: var for key, var in merged.items() if "@" not in key}
    suffix = f"@{transport}"
    flat.update((key[:-len(suffix)], var) for key, var in merged.items() if key.endswith(suffix))
    return flat


def _merged(src: _Source, host: _HostDef, member_of: list[str]) -> dict[str, _Var]:
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


def _build(src: _Source, environ: Mapping[str, str] | None, prompt: Callable[[str], str] | None) -> Inventory:
    _check_names(src)
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
    passwords = _Passwords(os.environ if environ is None else environ, prompt)
    hosts: list[HostConfig] = []
    left_out: dict[str, str] = {}
    foreign: dict[str, list[str]] = {}  # where ansible_connection is set -> hosts it leaves out
    for host in src.hosts.values():
        member_of = [name for name in order if name in direct.get(host.name, ())]
        merged = _merged(src, host, member_of)
        transport = merged.get("transport")
        if transport is not None and isinstance(transport.value, _Foreign):
            left_out[host.name] = (f"{transport.where}: {transport.written} {transport.value.connection} is not "
                                   "winrm or psrp; wuremote repairs Windows hosts only")
            foreign.setdefault(transport.where, []).append(host.name)
            continue
        if src.ansible:
            merged = _for_connection(merged, transport.value if transport else HostConfig.transport)
        config = _host_config(host, merged, tuple(member_of), src)
        config.password = passwords.find(config, merged)
        hosts.append(config)
    if not hosts:
        reason = f" ({next(iter(left_out.values()))})" if left_out else ""
        raise InventoryError(f"{src.path}: no hosts to repair{reason}; define at least one Windows host")
    usable = {config.name for config in hosts}
    groups = {name: [h.name for h in src.hosts.values() if h.name in usable and name in direct.get(h.name, ())]
              for name in src.groups}
    warnings = passwords.warnings()
    for where, names in foreign.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        warnings.append(f"{where}: left out {len(names)} host(s) whose connection is not winrm or psrp: {shown}")
    return Inventory(hosts=hosts, groups=groups, warnings=warnings, left_out=left_out)


# --- native TOML ---------------------------------------------------------------------------
_TOML_KEY = r'(?:"(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)'
_TOML_DOTTED = rf"{_TOML_KEY}(?:\s*\.\s*{_TOML_KEY})*"
_TOML_HEADER = re.compile(rf"^\s*\[\s*({_TOML_DOTTED})\s*\]")
_TOML_ASSIGN = re.compile(rf"^\s*({_TOML_DOTTED})\s*=")


def _toml_parts(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_TOML_KEY, dotted)
    return tuple(json.loads(p) if p.startswith('"') else p.strip("'") for p in parts)


class _TomlLines:
    """Where each table and key is written: tomllib gives no positions, so one pass finds them."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = _TOML_HEADER.match(line)
            if header:
                table = _toml_parts(header.group(1))
                self.lines.setdefault(table, number)
                continue
            assign = _TOML_ASSIGN.match(line)
            if assign:
                self.lines.setdefault(table + _toml_parts(assign.group(1)), number)

    def at(self, *key: str) -> str:
        for end in range(len(key), 0, -1):
            if key[:end] in self.lines:
                return f"{self.path}:{self.lines[key[:end]]}"
        return f"{self.path}:1"


def _toml_table(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InventoryError(f"{where}: {what} must be a table")
    return value


def _read_toml(path: str, text: str) -> _Source:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise InventoryError(f"{path}:{line.group(1) if line else 1}: {str(exc).split(' (at')[0]}; "
                             "fix the TOML syntax") from None
    at = _TomlLines(path, text).at
    src = _Source(path, paths_beside_file=True)
    for key in data:
        if key not in ("vars", "hosts", "groups"):
            raise _unknown(key, at(key), ("groups", "hosts", "vars"), "table")
    for name, value in _toml_table(data.get("vars", {}), at("vars"), "[vars]").items():
        src.vars[name] = _var(name, value, at("vars", name))
    for pattern, table in _toml_table(data.get("hosts", {}), at("hosts"), "hosts").items():
        where = at("hosts", pattern)
        for name in _expand(pattern, where):
            host = src.host(name, where)
            for key, value in _toml_table(table, where, f'[hosts."{pattern}"]').items():
                host.vars[key] = _var(key, value, at("hosts", pattern, key))
    for group_name, table in _toml_table(data.get("groups", {}), at("groups"), "groups").items():
        where = at("groups", group_name)
        group = src.group(group_name, where)
        for key, value in _toml_table(table, where, f"[groups.{group_name}]").items():
            key_where = at("groups", group_name, key)
            if key not in ("hosts", "children", "vars"):
                raise _unknown(key, key_where, ("children", "hosts", "vars"), "group key")
            if key == "vars":
                for name, var in _toml_table(value, key_where, "a group's vars").items():
                    group.vars[name] = _var(name, var, at("groups", group_name, "vars", name))
                continue
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise InventoryError(f'{key_where}: {key} must be a list of names, e.g. {key} = ["web01", "web02"]')
            if key == "children":
                group.children += [(child, key_where) for child in value]
            else:
                for pattern in value:
                    for name in _expand(pattern, key_where):
                        src.host(name, key_where)
                        group.hosts.append(name)
    return src


# --- CSV -------------------------------------------------------------------------------------
def _read_csv(path: str, text: str) -> _Source:
    src = _Source(path, paths_beside_file=True)
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 1
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header, header_line = [cell.strip().lower() for cell in row], reader.line_num
            if "name" not in header:
                raise InventoryError(f"{where}: no 'name' column; the first row names the columns: name, then "
                                     "var names such as address, port, transport, groups")
            for column in header:
                if column not in ("name", "groups") and column not in _CONVERTERS:
                    raise _unknown(column, where, VAR_NAMES, "column")
            continue
        if len(row) > len(header):
            raise InventoryError(f"{where}: {len(row)} cells but {len(header)} columns (line {header_line}); "
                                 "quote cells that hold commas")
        cells = dict(zip(header, (cell.strip() for cell in row)))
        name = cells.pop("name", "")
        if not name:
            raise InventoryError(f"{where}: the name cell is empty; give every host a name")
        group_names = re.split(r"[,;\s]+", cells.pop("groups", "") or "")
        for host_name in _expand(name, where):
            if host_name in src.hosts:
                raise InventoryError(f"{where}: host {host_name!r} is already defined at "
                                     f"{src.hosts[host_name].where}; keep one row per host")
            host = src.host(host_name, where)
            host.vars = {column: _var(column, cell, where) for column, cell in cells.items() if cell}
            for group_name in filter(None, group_names):
                src.group(group_name, where).hosts.append(host_name)
    if header is None:
        raise InventoryError(f"{path}:1: empty CSV; the first row names the columns: name, then var names")
    return src


# --- Ansible YAML ----------------------------------------------------------------------------
class _YamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML with positions; Ansible's !unsafe is text and !vault a clear error."""

    path = ""


def _construct_vault(loader: _YamlLoader, node: yaml.Node) -> Any:
    raise InventoryError(f"{loader.path}:{node.start_mark.line + 1}: ansible vault value: wuremote does not decrypt "
                         f"vault; set password_env/{PASSWORD_ENV} or enter it at the prompt")


_YamlLoader.add_constructor("!vault", _construct_vault)
_YamlLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


class _Yaml:
    """One YAML file's node tree, walked with the file:line of every key at hand."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        if text.lstrip().startswith("$ANSIBLE_VAULT;"):
            raise InventoryError(f"{path}:1: this file is ansible-vault encrypted; wuremote does not decrypt "
                                 f"vault; set password_env/{PASSWORD_ENV} or enter it at the prompt")
        self.loader = _YamlLoader(text)
        self.loader.path = path
        try:
            self.root = self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:  # its own text quotes the line, which may hold a password
            mark = exc.problem_mark or exc.context_mark
            raise InventoryError(f"{path}:{mark.line + 1 if mark else 1}: {exc.problem or exc.context}; "
                                 "fix the YAML syntax") from None
        except yaml.YAMLError as exc:
            raise InventoryError(f"{path}:1: {exc.__class__.__name__}; fix the YAML syntax") from None

    def where(self, node: yaml.Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"

    def items(self, node: yaml.Node | None, what: str) -> Iterator[tuple[str, yaml.Node, str]]:
        """(key, value node, where) of a mapping; an empty value is an empty mapping."""
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            return
        if not isinstance(node, yaml.MappingNode):
            raise InventoryError(f"{self.where(node)}: {what} must be a mapping of names")
        self.loader.flatten_mapping(node)  # YAML merge keys (<<: *defaults)
        for key, value in node.value:
            yield str(self.loader.construct_object(key)), value, self.where(key)

    def ansible_vars(self, node: yaml.Node | None, what: str) -> dict[str, _Var]:
        found: dict[str, _Var] = {}
        for name, value, where in self.items(node, what):
            if value.tag == "!vault":
                raise _vault_error(where, name)
            pair = _ansible_var(name, self.loader.construct_object(value, deep=True), where)
            if pair is not None:
                found[pair[0]] = pair[1]
        return found


def _read_yaml(path: str, text: str) -> _Source:
    doc = _Yaml(path, text)
    src = _Source(path, ansible=True)

    def read_group(name: str, node: yaml.Node, where: str) -> None:
        group = None if name == "all" else src.group(name, where)
        for key, value, key_where in doc.items(node, f"group {name}"):
            if key == "vars":
                target = src.vars if group is None else group.vars
                target.update(doc.ansible_vars(value, f"{name}'s vars"))
            elif key == "hosts":
                for pattern, host_vars, host_where in doc.items(value, f"{name}'s hosts"):
                    for host_name in _expand(pattern, host_where):
                        src.host(host_name, host_where).vars.update(doc.ansible_vars(host_vars, f"host {host_name}"))
                        if group is not None:
                            group.hosts.append(host_name)
            elif key == "children":
                for child, child_node, child_where in doc.items(value, f"{name}'s children"):
                    if group is not None:
                        group.children.append((child, child_where))
                    read_group(child, child_node, child_where)
            else:
                raise _unknown(key, key_where, ("children", "hosts", "vars"), "group key")

    for name, node, where in doc.items(doc.root, "an Ansible YAML inventory"):
        read_group(name, node, where)
    return src


# --- Ansible INI -----------------------------------------------------------------------------
def _ini_value(text: str) -> Any:
    """Ansible's reading of an INI value: a Python literal when it is one (5986, True), else text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


_INI_HOST = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])+)(?::(\d+))?$")  # name, name:port, web[01:20]:5986


def _read_ini(path: str, text: str) -> _Source:
    src = _Source(path, ansible=True)
    kind, group = "hosts", None  # before any section: ungrouped hosts
    referenced: dict[str, str] = {}  # groups named by :vars/:children sections -> first line
    group_vars: dict[str, dict[str, _Var]] = {}  # [GROUP:vars] may come before [GROUP]
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = re.match(r"^\[([^\[\]\s]+)\]\s*(?:[#;].*)?$", line)
            if section is None:
                raise InventoryError(f"{where}: not a section header; write [GROUP], [GROUP:vars] or [GROUP:children]")
            name, _, kind = section.group(1).partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children") or section.group(1).endswith(":hosts"):
                raise InventoryError(f"{where}: unknown section kind {kind!r}; use [GROUP], [GROUP:vars] or "
                                     "[GROUP:children]")
            group = None if name == "all" else name
            if group is not None and kind != "vars":
                src.group(group, where)
            if group is not None:
                referenced.setdefault(group, where)
            continue
        if kind == "vars":
            key, sep, value = (part.strip() for part in line.partition("="))
            if not sep or not key:
                raise InventoryError(f"{where}: expected NAME=VALUE in a :vars section")
            pair = _ansible_var(key, _ini_value(value), where)
            if pair is not None:
                (src.vars if group is None else group_vars.setdefault(group, {}))[pair[0]] = pair[1]
        elif kind == "children":
            child = line.split()[0]
            referenced.setdefault(child, where)
            if group is not None:
                src.groups[group].children.append((child, where))
        else:
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                raise InventoryError(f"{where}: unbalanced quotes or a trailing backslash in a host line; close the "
                                     "quote (a backslash escapes the next character: write CORP\\\\user)") from None
            match = _INI_HOST.match(tokens[0])
            if match is None:
                raise InventoryError(f"{where}: {tokens[0]!r} is not a host name or range; write NAME, NAME:PORT or "
                                     "NAME[01:20]")
            for host_name in _expand(match.group(1), where):
                host = src.host(host_name, where)
                if match.group(2):
                    host.vars["port"] = _var("port", match.group(2), where, "port")
                for index, token in enumerate(tokens[1:], start=2):
                    key, sep, value = token.partition("=")
                    if not sep:  # the word itself is not shown: it may be a password
                        raise InventoryError(f"{where}: expected NAME=VALUE after the host name; word {index} "
                                             "has no '='")
                    pair = _ansible_var(key, _ini_value(value), where)
                    if pair is not None:
                        host.vars[pair[0]] = pair[1]
                if group is not None:
                    src.groups[group].hosts.append(host_name)
    for name, where in referenced.items():
        if name not in src.groups:
            raise InventoryError(f"{where}: group {name!r} is used but never defined; add a [{name}] section "
                                 "or remove the reference")
    for name, found in group_vars.items():
        src.groups[name].vars.update(found)
    return src


# --- group_vars/ and host_vars/ beside an Ansible inventory ------------------------------------
_VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")


def _vars_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(group or host name, file) as Ansible finds them: NAME[.yml|.yaml|.json] or NAME/ of such files."""
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            for inner in sorted(entry.rglob("*")):
                if inner.is_file() and inner.suffix in _VARS_SUFFIXES and not inner.name.startswith("."):
                    yield entry.name, inner
        elif entry.suffix in _VARS_SUFFIXES:
            yield (entry.stem if entry.suffix else entry.name), entry


def _read_side_vars(src: _Source, base: Path) -> None:
    for name, file in _vars_files(base / "group_vars"):
        target = src.file_vars if name == "all" else src.groups[name].file_vars if name in src.groups else None
        if target is not None:
            doc = _Yaml(str(file), _read_text(file))
            target.update(doc.ansible_vars(doc.root, "a group_vars file"))
    for name, file in _vars_files(base / "host_vars"):
        if name in src.hosts:
            doc = _Yaml(str(file), _read_text(file))
            src.hosts[name].file_vars.update(doc.ansible_vars(doc.root, "a host_vars file"))


# --- entry points ------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: CSV saved by Excel starts with a BOM
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read the inventory ({exc.strerror}); check the path") from None
    except UnicodeDecodeError as exc:
        raise InventoryError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


_READERS: dict[str, Callable[[str, str], _Source]] = {
    ".toml": _read_toml, ".csv": _read_csv, ".yml": _read_yaml, ".yaml": _read_yaml, ".json": _read_yaml,
    ".ini": _read_ini, ".cfg": _read_ini, "": _read_ini,
}


def load_inventory(path: str | Path, *, environ: Mapping[str, str] | None = None,
                   prompt: Callable[[str], str] | None = None) -> Inventory:
    """Read an inventory, its format chosen by the file's extension.

    Each host's password comes from its password_env variable, a password written in the
    inventory (a warning), WUREMOTE_PASSWORD, or `prompt(username)` (once per username), in
    that order; variables are looked up in `environ` (os.environ when None).
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise InventoryError(f"{path}: unknown inventory format {path.suffix!r}; use .toml, .csv, .yml/.yaml "
                             "(Ansible), or .ini/.cfg/no extension (Ansible INI)")
    src = reader(str(path), _read_text(path))
    if src.ansible:
        _read_side_vars(src, path.parent)
    return _build(src, environ, prompt)


def hosts_from_names(names: list[str], defaults: dict[str, Any], *, environ: Mapping[str, str] | None = None,
                     prompt: Callable[[str], str] | None = None) -> Inventory:
    """Hosts named on the command line (`wuremote repair HOST HOST`), `defaults` being their vars."""
    where = "command line"
    src = _Source(where)
    if "password" in defaults:
        raise InventoryError(f"{where}: a password is never taken from the command line; set {PASSWORD_ENV} "
                             "or password_env, or enter it at the prompt")
    src.vars = {name: _var(name, value, where) for name, value in defaults.items() if value is not None}
    for pattern in names:
        for name in _expand(pattern, where):
            if name in src.hosts:
                raise InventoryError(f"{where}: host {name!r} is named twice; name each host once")
            src.host(name, where)
    return _build(src, environ, prompt)


def hosts_from_snapshot(snapshot: list[dict[str, Any]], *, environ: Mapping[str, str] | None = None,
                        prompt: Callable[[str], str] | None = None) -> list[HostConfig]:
    """Hosts as a run's journal recorded them (every field but the password), for `wuremote resume`.

    The values are checked again (a journal is a file too) and passwords found as load_inventory does.
    """
    src = _Source("run journal")
    groups: dict[str, tuple[str, ...]] = {}
    for record in snapshot:
        values = dict(record)
        name, where = str(values.pop("name", "")), str(values.pop("source", "") or "run journal")
        groups[name] = tuple(values.pop("groups", ()))
        src.host(name, where).vars = {key: _var(key, value, where) for key, value in values.items() if value is not None}
    hosts = _build(src, environ, prompt).hosts
    for host in hosts:
        host.groups = groups[host.name]
    return hosts


def select(inventory: Inventory, pattern: str) -> list[HostConfig]:
    """`--limit`: comma-separated host or group names or fnmatch patterns; `!x` leaves out, `&x` intersects.

    A part that matches nothing is an error: a mistyped exclusion must not pass silently.
    """
    parts = [part.strip() for part in pattern.split(",") if part.strip()]
    if not parts:
        raise InventoryError("--limit: empty; give host or group names or patterns, e.g. --limit 'web*,!web03'")
    include: set[str] | None = None
    narrow: list[set[str]] = []
    exclude: set[str] = set()
    for part in parts:
        sign, body = (part[0], part[1:]) if part[0] in "!&" else ("", part)
        names = _matching(inventory, body)
        if not names:
            left = [name for name in inventory.left_out if fnmatch.fnmatchcase(name.lower(), body.lower())]
            why = f" ({inventory.left_out[left[0]]})" if left else ""
            raise InventoryError(f"--limit {pattern!r}: {body!r} matches no host or group{why}; "
                                 f"groups: {', '.join(inventory.groups) or 'none'}")
        if sign == "!":
            exclude |= names
        elif sign == "&":
            narrow.append(names)
        else:
            include = names if include is None else include | names
    return [host for host in inventory.hosts
            if (include is None or host.name in include) and all(host.name in s for s in narrow)
            and host.name not in exclude]


def _matching(inventory: Inventory, pattern: str) -> set[str]:
    if pattern in ("all", "*"):
        return {host.name for host in inventory.hosts}
    wanted = pattern.lower()
    found = {host.name for host in inventory.hosts if fnmatch.fnmatchcase(host.name.lower(), wanted)}
    for group, members in inventory.groups.items():
        if fnmatch.fnmatchcase(group.lower(), wanted):
            found.update(members)
    return found
