"""The vars a host may set: one converter per var, checking and converting what a file wrote.

To add a var: a HostConfig field (model.py), a converter in CONVERTERS below, a line in
inventory/README.md, and an Ansible alias in ansible.py if Ansible has one.

A converter's error never quotes the value: a misaligned CSV row or a slip in an Ansible
line can put a password in any column, so the message names the var and what it expects.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..contract.updates import CATEGORIES, DEFAULT_CATEGORIES, UnknownCategory, category_key
from ..secret import Secret
from ..transport.connection import AUTHS, SCHEMES, TRANSPORTS
from .model import OPT_INS, REBOOT_POLICIES, REBOOT_ROLES, InventoryError


class BadValue(Exception):
    """A var's value is unusable; the text says what to write instead (and never quotes the value)."""


def control_char(text: str) -> str | None:
    """The first control character or line separator in ``text``, which no name, address or path holds.

    One in a user name or host name would otherwise reach a terminal line, a log or a header
    as a second line of its own (``admin\\n12:00 web02 HEALTHY``)."""
    return next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp")), None)


def as_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadValue("must be text")
    text = str(value).strip()
    bad = control_char(text)
    if bad is not None:
        raise BadValue(f"holds the control character {bad!r} (a line break or tab?); remove it")
    return text


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = as_text(value).lower()
        if text not in options:
            raise BadValue(f"must be one of {', '.join(options)}")
        return text

    return convert


def _whole(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value.strip()):  # CSV cells, INI values
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise BadValue(f"must be a whole number from {low} to {high}")
        return value

    return convert


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
    raise BadValue("must be true or false")


def _items(options: tuple[str, ...] | None = None) -> Callable[[Any], tuple[str, ...]]:
    """A list, or one text of names separated by commas, semicolons or spaces (CSV cells)."""

    def convert(value: Any) -> tuple[str, ...]:
        raw = re.split(r"[,;\s]+", value) if isinstance(value, str) else value
        if not isinstance(raw, (list, tuple)):
            raise BadValue("must be a list of names")
        items = tuple(text for text in map(as_text, raw) if text)
        if options is not None:
            items = tuple(item.lower() for item in items)
            wrong = next((index for index, item in enumerate(items, start=1) if item not in options), None)
            if wrong is not None:
                raise BadValue(f"item {wrong} is not one of {', '.join(options)}")
        return items

    return convert


def _kb(value: Any) -> str:
    text = as_text(value).upper()
    if not re.fullmatch(r"KB\d{6,8}", text):
        raise BadValue("is not a KB id; write it as KB followed by 6 to 8 digits, e.g. KB5034441")
    return text


def _sha256(value: Any) -> str:
    text = as_text(value).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise BadValue("is not a SHA-256 digest; give the 64 hex digits")
    return text


def _kbs(value: Any) -> tuple[str, ...]:
    """A list of KB ids (or one text of them separated by commas or spaces)."""
    return tuple(_kb(item) for item in _items()(value))


def _install(value: Any) -> tuple[str, ...]:
    """Update categories to install: a list of Windows Update's names, or true for the default ones."""
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE):
        return DEFAULT_CATEGORIES if _flag(value) else ()
    keys: list[str] = []
    items = [part.strip() for part in re.split(r"[,;]", value)] if isinstance(value, str) else _items()(value)
    for index, item in enumerate((item for item in items if item), start=1):
        try:
            key = category_key(item)
        except UnknownCategory:
            raise BadValue(f"item {index} is not a Windows Update category; use * or any of "
                           f"{', '.join(CATEGORIES)}") from None
        if key not in keys:
            keys.append(key)
    return tuple(keys)


_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_WINDOW = re.compile(rf"(?:{_DAY}(?:-{_DAY})?(?:,{_DAY}(?:-{_DAY})?)*\s+)?([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d",
                     re.IGNORECASE)


def _window(value: Any) -> str:
    text = as_text(value)
    if not _WINDOW.fullmatch(text):
        raise BadValue("is not a window; write DAYS HH:MM-HH:MM, e.g. 'Sat 01:00-05:00' or 'Mon-Fri 22:00-02:00'")
    return text


def _table(value: Any) -> dict[str, Any]:
    """A table; CSV cells and INI lines give it as JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadValue("must be a table (a JSON object in CSV and INI)") from None
    if not isinstance(value, dict):
        raise BadValue("must be a table (a JSON object in CSV and INI)")
    return value


_PARAMETER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_CONTROLLER_PARAMETERS = ("runid", "resultmarker")  # set by the controller for every step, never by an inventory


def _step_options(value: Any) -> dict[str, dict[str, Any]]:
    """Per-step script parameters: each name a plain PowerShell parameter name, each value data.

    Its keys (step and parameter names) are quoted back: they are names, written where names go."""
    table = _table(value)
    for step, options in table.items():
        if not isinstance(options, dict):
            raise BadValue(f"entry {step!r} must be a table of that step's options, "
                           "e.g. {cleanup = {ResetBase = true}}")
        for name in options:
            if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name):
                raise BadValue(f"entry {step!r}: {name!r} is not a parameter name; use the script's parameter name "
                               "(letters and digits), e.g. ResetBase")
            if name.lower() in _CONTROLLER_PARAMETERS:
                raise BadValue(f"entry {step!r}: {name} is set by wuremote for every step; remove it")
    return table


_VENDOR_AV_KEYS = ("pause_command", "pause_arguments", "resume_command", "resume_arguments")


def _vendor_av(value: Any) -> dict[str, Any]:
    """The av-pause step's vendor commands: both or neither, each a full path, arguments as a list."""
    table = _table(value)
    unknown = sorted(set(table) - set(_VENDOR_AV_KEYS))
    if unknown:
        raise BadValue(f"has unknown key {unknown[0]!r}; use {', '.join(_VENDOR_AV_KEYS)}")
    if table and not ("pause_command" in table and "resume_command" in table):
        raise BadValue("needs both pause_command and resume_command")
    for key in ("pause_command", "resume_command"):
        if key in table and not (isinstance(table[key], str) and re.match(r"^(?:[A-Za-z]:\\|\\\\)", table[key])):
            raise BadValue(f"{key} must be the executable's full Windows path, "
                           "e.g. 'C:\\Program Files\\Vendor\\avctl.exe'")
    for key in ("pause_arguments", "resume_arguments"):
        if key in table and not (isinstance(table[key], list) and all(isinstance(a, str) for a in table[key])):
            raise BadValue(f"{key} must be a list of texts, e.g. [\"--pause\"]")
    return table


def _secret(value: Any) -> Secret:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadValue("must be text")
    return Secret(str(value))


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None or value == "" else convert(value)


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "address": _optional(as_text),
    "transport": _choice(TRANSPORTS),
    "port": _whole(1, 65535),
    "scheme": _choice(SCHEMES),
    "auth": _choice(AUTHS),
    "cert_validation": _flag,
    "ca_file": _optional(as_text),
    "username": _optional(as_text),
    "password": _secret,
    "password_env": _optional(as_text),
    "allow_unencrypted_basic": _flag,
    "proxy": _optional(as_text),
    "cert_pem": _optional(as_text),
    "cert_key_pem": _optional(as_text),
    "reboot": _choice(REBOOT_POLICIES),
    "maintenance_window": _optional(_window),
    "reboot_group_cap": _optional(_whole(1, 10_000)),
    "allow_reboot_roles": _items(REBOOT_ROLES),
    "max_reboots": _whole(0, 10_000),
    "opt_in": _items(OPT_INS),
    "kb": _optional(_kb),
    "kb_url": _optional(as_text),
    "kb_sha256": _optional(_sha256),
    "kb_file": _optional(as_text),
    "msu_path": _optional(as_text),
    "dism_source": _optional(as_text),
    "install": _install,
    "install_accept": _kbs,
    "install_reject": _kbs,
    "install_optional": _flag,
    "exclude_services": _items(),
    "vendor_av": _vendor_av,
    "step_options": _step_options,
    "site": _optional(as_text),
}
VAR_NAMES = tuple(sorted(CONVERTERS))


@dataclass(frozen=True)
class Var:
    """One var as a file set it."""

    value: Any  # already converted to the HostConfig field's type
    where: str  # "file:line"
    written: str  # the name as the file spells it (ansible_port), for messages


def unknown_name(name: str, where: str, known: tuple[str, ...], what: str = "var") -> InventoryError:
    """An unknown var, column, table or key: the closest known name and the list of them."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return InventoryError(f"{where}: unknown {what} {name!r}{hint}; known {what}s: {', '.join(known)}")


def read_var(name: str, value: Any, where: str, written: str | None = None) -> Var:
    """``name = value`` as written at ``where``, checked and converted; InventoryError names the line."""
    written = written or name
    convert = CONVERTERS.get(name)
    if convert is None:
        raise unknown_name(name, where, VAR_NAMES)
    try:
        return Var(convert(value), where, written)
    except BadValue as exc:
        raise InventoryError(f"{where}: {written} {exc}") from None
