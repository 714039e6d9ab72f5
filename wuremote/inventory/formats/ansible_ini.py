"""Ansible's INI inventory: [GROUP], [GROUP:vars] and [GROUP:children] sections, NAME:PORT host lines."""

from __future__ import annotations

import ast
import re
import shlex
from typing import Any

from ..ansible import ansible_var
from ..model import InventoryError
from ..ranges import expand
from ..source import Source
from ..vars import Var, read_var


def _value(text: str) -> Any:
    """Ansible's reading of an INI value: a Python literal when it is one (5986, True), else text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _warn_lost_backslashes(src: Source, line: str, tokens: list[str], where: str) -> None:
    """A backslash outside quotes in a host line escapes the next character and is dropped: Ansible splits
    host lines with shlex (lib/ansible/plugins/inventory/ini.py, ``_parse_host_definition``), so
    ``ansible_user=CORP\\dbadmin`` reads as ``CORPdbadmin``.  wuremote reads it the same way, and says so
    (naming the var, never the value: it may be a password)."""
    if "\\" not in line:
        return
    try:
        kept = shlex.split(line.replace("\\", "\\\\"), comments=True)
    except ValueError:
        return
    for token, whole in zip(tokens[1:], kept[1:]):
        if token.count("\\") < whole.count("\\") / 2:  # quoted backslashes survive; bare ones are halved or lost
            name = token.partition("=")[0]
            src.warnings.append(f"{where}: {name}: a backslash outside quotes in a host line is dropped, as "
                                "Ansible drops it (CORP\\user reads as CORPuser); write CORP\\\\user, quote the "
                                "value, or set it in a [group:vars] section or host_vars/")


_HOST = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])+)(?::(\d+))?$")  # name, name:port, web[01:20]:5986


def read_ini(path: str, text: str) -> Source:
    src = Source(path, ansible=True)
    kind, group = "hosts", None  # before any section: ungrouped hosts
    referenced: dict[str, str] = {}  # groups named by :vars/:children sections -> first line
    group_vars: dict[str, dict[str, Var]] = {}  # [GROUP:vars] may come before [GROUP]
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
            pair = ansible_var(key, _value(value), where)
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
            _warn_lost_backslashes(src, line, tokens, where)
            match = _HOST.match(tokens[0])
            if match is None:
                raise InventoryError(f"{where}: {tokens[0]!r} is not a host name or range; write NAME, NAME:PORT or "
                                     "NAME[01:20]")
            for host_name in expand(match.group(1), where):
                host = src.host(host_name, where)
                if match.group(2):
                    host.vars["port"] = read_var("port", match.group(2), where, "port")
                for index, token in enumerate(tokens[1:], start=2):
                    key, sep, value = token.partition("=")
                    if not sep:  # the word itself is not shown: it may be a password
                        raise InventoryError(f"{where}: expected NAME=VALUE after the host name; word {index} "
                                             "has no '='")
                    pair = ansible_var(key, _value(value), where)
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
