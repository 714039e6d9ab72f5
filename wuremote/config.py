"""Defaults for the command line: a config file and WUREMOTE_* environment variables.

Where a setting comes from, first found wins:

    run options (forks, state_dir, inventory, ...):   flag > WUREMOTE_* > config file > built-in default
    connection (transport, auth, user, ...):          flag > inventory > WUREMOTE_* > config file > built-in

The config file is ``wuremote.toml`` in the working directory, else
``$XDG_CONFIG_HOME/wuremote/config.toml`` (``~/.config/wuremote/config.toml``).  Its keys are the
long options with ``_`` for ``-`` (``forks = 50``, ``state_dir = "/var/lib/wuremote"``).  A password is
never a setting here: WUREMOTE_PASSWORD is the password itself (inventory/passwords.py).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "WUREMOTE_"
LOCAL_FILE = "wuremote.toml"


class ConfigError(ValueError):
    """A config file or WUREMOTE_* value that cannot be used; the message names the place and the fix."""


def _whole(low: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\d{1,9}", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"must be a whole number of {low} or more")
        return value

    return convert


def _number(low: float, high: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number from {low:g} to {high:g}") from None
        if isinstance(value, bool) or not low <= number <= high:
            raise ValueError(f"must be a number from {low:g} to {high:g}")
        return number

    return convert


def _choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = str(value).strip().lower()
        if isinstance(value, bool) or text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text

    return convert


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ValueError("must be text")
    return str(value).strip()


def _path(value: Any) -> Path:
    return Path(os.path.expanduser(_text(value)))


@dataclass(frozen=True)
class Setting:
    convert: Callable[[Any], Any]
    default: Any  # the built-in default (None: unset)
    connection: bool = False  # a host's connection setting: below the inventory, above built-in defaults


SETTINGS: dict[str, Setting] = {
    "inventory": Setting(_path, None),
    "forks": Setting(_whole(1), 20),
    "max_requests": Setting(_whole(1), None),
    "max_fail_percent": Setting(_number(0, 100), 100.0),
    "host_timeout": Setting(_number(1, 30 * 24 * 3600), 6 * 3600.0),
    "state_dir": Setting(_path, Path(".wuremote")),
    "executor": Setting(_choice("local", "dask"), "local"),
    "scheduler": Setting(_text, None),
    "transport": Setting(_choice("psrp", "winrm"), None, connection=True),
    "auth": Setting(_choice("basic", "ntlm", "negotiate", "kerberos", "credssp", "certificate"), None,
                    connection=True),
    "user": Setting(_text, None, connection=True),
    "scheme": Setting(_choice("https", "http"), None, connection=True),
    "port": Setting(_whole(1), None, connection=True),
    "ca_file": Setting(_text, None, connection=True),
}


@dataclass(frozen=True)
class Defaults:
    """The defaults found for one invocation, and where each came from (for --list-hosts and errors)."""

    values: dict[str, Any]
    origin: dict[str, str]  # key -> "WUREMOTE_FORKS" or "wuremote.toml:3"
    file: Path | None

    def connection(self) -> dict[str, Any]:
        return {key: value for key, value in self.values.items() if SETTINGS[key].connection}


def config_file(cwd: Path, environ: Mapping[str, str]) -> Path | None:
    local = cwd / LOCAL_FILE
    if local.is_file():
        return local
    base = Path(environ.get("XDG_CONFIG_HOME") or Path(environ.get("HOME") or Path.home()) / ".config")
    user = base / "wuremote" / "config.toml"
    return user if user.is_file() else None


def load_defaults(cwd: Path, environ: Mapping[str, str]) -> Defaults:
    """The config file's values, then WUREMOTE_* over them; ConfigError names the file:line or variable."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    path = config_file(cwd, environ)
    if path is not None:
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}; fix the TOML syntax") from None
        for key, value in data.items():
            where = f"{path}:{_line_of(text, key)}"
            values[key] = _convert(key, value, where)
            origin[key] = where
    for key in SETTINGS:
        name = ENV_PREFIX + key.upper()
        if name in environ and environ[name].strip():
            values[key] = _convert(key, environ[name], name)
            origin[key] = name
    return Defaults(values, origin, path)


def _convert(key: str, value: Any, where: str) -> Any:
    setting = SETTINGS.get(key)
    if setting is None:
        close = difflib.get_close_matches(key, list(SETTINGS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown setting {key!r}{hint}; known settings: {', '.join(SETTINGS)}")
    try:
        return setting.convert(value)
    except ValueError as exc:  # the value is not quoted: a misplaced password must not be shown
        raise ConfigError(f"{where}: {key} {exc}") from None


def _line_of(text: str, key: str) -> int:
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    return next((n for n, line in enumerate(text.splitlines(), start=1) if pattern.match(line)), 1)
