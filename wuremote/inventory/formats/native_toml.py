"""The native format: TOML with [vars], [hosts."NAME"] and [groups.NAME] tables."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from ..model import InventoryError
from ..ranges import expand
from ..source import Source
from ..vars import read_var, unknown_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_KEY = r'(?:"(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)'
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")


def _parts(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_KEY, dotted)
    return tuple(json.loads(p) if p.startswith('"') else p.strip("'") for p in parts)


class _Lines:
    """Where each table and key is written: tomllib gives no positions, so one pass finds them."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                table = _parts(header.group(1))
                self.lines.setdefault(table, number)
                continue
            assign = _ASSIGN.match(line)
            if assign:
                self.lines.setdefault(table + _parts(assign.group(1)), number)

    def at(self, *key: str) -> str:
        for end in range(len(key), 0, -1):
            if key[:end] in self.lines:
                return f"{self.path}:{self.lines[key[:end]]}"
        return f"{self.path}:1"


def _table(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InventoryError(f"{where}: {what} must be a table")
    return value


def read_toml(path: str, text: str) -> Source:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise InventoryError(f"{path}:{line.group(1) if line else 1}: {str(exc).split(' (at')[0]}; "
                             "fix the TOML syntax") from None
    at = _Lines(path, text).at
    src = Source(path, paths_beside_file=True)
    for key in data:
        if key not in ("vars", "hosts", "groups"):
            raise unknown_name(key, at(key), ("groups", "hosts", "vars"), "table")
    for name, value in _table(data.get("vars", {}), at("vars"), "[vars]").items():
        src.vars[name] = read_var(name, value, at("vars", name))
    for pattern, table in _table(data.get("hosts", {}), at("hosts"), "hosts").items():
        where = at("hosts", pattern)
        for name in expand(pattern, where):
            host = src.host(name, where)
            for key, value in _table(table, where, f'[hosts."{pattern}"]').items():
                host.vars[key] = read_var(key, value, at("hosts", pattern, key))
    for group_name, table in _table(data.get("groups", {}), at("groups"), "groups").items():
        where = at("groups", group_name)
        group = src.group(group_name, where)
        for key, value in _table(table, where, f"[groups.{group_name}]").items():
            key_where = at("groups", group_name, key)
            if key not in ("hosts", "children", "vars"):
                raise unknown_name(key, key_where, ("children", "hosts", "vars"), "group key")
            if key == "vars":
                for name, var in _table(value, key_where, "a group's vars").items():
                    group.vars[name] = read_var(name, var, at("groups", group_name, "vars", name))
                continue
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise InventoryError(f'{key_where}: {key} must be a list of names, e.g. {key} = ["web01", "web02"]')
            if key == "children":
                group.children += [(child, key_where) for child in value]
            else:
                for pattern in value:
                    for name in expand(pattern, key_where):
                        src.host(name, key_where)
                        group.hosts.append(name)
    return src
