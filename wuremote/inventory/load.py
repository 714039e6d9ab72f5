"""load_inventory: an inventory file (its format chosen by its extension), a folder read as Ansible
reads one, or ``ansible-inventory:SOURCE`` (Ansible itself reads SOURCE, wuremote reads its JSON)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from .formats import READERS
from .formats.ansible_ini import read_ini
from .formats.ansible_list import is_ansible_list, read_ansible_list
from .formats.ansible_yaml import read_yaml
from .formats.group_vars import read_vars_folders
from .model import Inventory, InventoryError
from .resolve import build
from .source import Source, read_text
from .vars import Var

ANSIBLE_INVENTORY = "ansible-inventory:"  # -i ansible-inventory:SOURCE
# What Ansible skips in an inventory folder (lib/ansible/inventory/manager.py IGNORED_ALWAYS, and
# INVENTORY_IGNORE_EXTS in lib/ansible/config/base.yml: REJECT_EXTS + .orig, .cfg, .retry).
_SKIPPED_NAMES = re.compile(r"^\.|^host_vars$|^group_vars$|^vars_plugins$")
_SKIPPED_EXTS = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")
_YAML_EXTS = (".yml", ".yaml", ".json")  # Ansible's yaml plugin takes these; the ini plugin takes the rest


def load_inventory(path: str | Path, *, environ: Mapping[str, str] | None = None,
                   prompt: Callable[[str], str] | None = None, passwords: bool = True,
                   defaults: Mapping[str, Var] | None = None) -> Inventory:
    """Read an inventory: a file (format by extension), a folder, or ``ansible-inventory:SOURCE``.

    Each host's password comes from its password_env variable, a password written in the
    inventory (a warning), WUREMOTE_PASSWORD, or `prompt(username)` (once per username), in
    that order; variables are looked up in `environ` (os.environ when None).  With
    `passwords=False` none is looked up yet: `find_passwords` does it for the hosts a run takes.
    """
    text = str(path)
    if text.startswith(ANSIBLE_INVENTORY):
        src = _from_ansible_inventory(text[len(ANSIBLE_INVENTORY):], environ)
    elif Path(path).is_dir():
        src = _read_folder(Path(path))
        read_vars_folders(src, Path(path))
    else:
        src = _read_file(Path(path))
        if src.ansible and not src.merged_by_ansible:
            read_vars_folders(src, Path(path).parent)
    return build(src, environ, prompt, passwords=passwords, defaults=defaults)


def _read_file(path: Path) -> Source:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise InventoryError(f"{path}: unknown inventory format {path.suffix!r}; use .toml, .csv, .yml/.yaml "
                             "(Ansible), .json (Ansible, or the output of `ansible-inventory --list`), "
                             ".ini/.cfg/no extension (Ansible INI), or a folder of Ansible inventory files")
    text = read_text(path)
    if path.suffix.lower() == ".json" and _looks_like_list(text):
        return read_ansible_list(str(path), text)
    return reader(str(path), text)


def _looks_like_list(text: str) -> bool:
    try:
        return is_ansible_list(json.loads(text))
    except ValueError:
        return False


def _read_folder(folder: Path) -> Source:
    """Every inventory file in ``folder`` (and its subfolders), in name order, as one source, as Ansible
    reads a folder (lib/ansible/inventory/manager.py ``parse_source``): later files add hosts, groups
    and vars to the earlier ones."""
    merged = Source(str(folder), ansible=True)
    found = False
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if _SKIPPED_NAMES.search(entry.name) or entry.name.endswith(_SKIPPED_EXTS):
            continue
        if entry.is_dir():
            part = _read_folder(entry)
        else:
            text = read_text(entry)
            if text.startswith("#!") and os.access(entry, os.X_OK):
                raise InventoryError(f"{entry}:1: an inventory script; wuremote does not run scripts itself: "
                                     f"use -i {ANSIBLE_INVENTORY}{folder} (Ansible runs it)")
            if entry.suffix.lower() == ".json" and _looks_like_list(text):
                part = read_ansible_list(str(entry), text)
            elif entry.suffix.lower() in _YAML_EXTS:
                part = read_yaml(str(entry), text)
            else:
                part = read_ini(str(entry), text)
        found = found or bool(part.hosts or part.groups)
        _merge(merged, part)
    if not found:
        raise InventoryError(f"{folder}: no inventory file in this folder; give a file or a folder of "
                             "Ansible inventory files")
    return merged


def _merge(into: Source, part: Source) -> None:
    into.vars.update(part.vars)
    into.warnings += part.warnings
    for host in part.hosts.values():
        into.host(host.name, host.where).vars.update(host.vars)
    for group in part.groups.values():
        target = into.group(group.name, group.where)
        target.hosts += [h for h in group.hosts if h not in target.hosts]
        target.children += [c for c in group.children if c[0] not in {n for n, _ in target.children}]
        target.vars.update(group.vars)


def _from_ansible_inventory(source: str, environ: Mapping[str, str] | None) -> Source:
    """``ansible-inventory -i SOURCE --list`` run here, its JSON read: plugins, scripts and vault work
    through Ansible itself (with its own configuration: ansible.cfg, ANSIBLE_VAULT_PASSWORD_FILE...)."""
    where = f"{ANSIBLE_INVENTORY}{source}"
    command = shutil.which("ansible-inventory")
    if command is None:
        raise InventoryError(f"{where}: ansible-inventory is not installed here; install ansible-core, or "
                             "run `ansible-inventory -i SOURCE --list > hosts.json` where it is and give -i hosts.json")
    env = dict(os.environ if environ is None else environ)
    try:
        done = subprocess.run([command, "-i", source, "--list"], capture_output=True, text=True, env=env,
                              timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InventoryError(f"{where}: ansible-inventory could not run ({exc.__class__.__name__}); "
                             "run it by hand to see why") from None
    if done.returncode != 0:  # its message is not repeated: Ansible quotes inventory lines, which may hold a password
        raise InventoryError(f"{where}: ansible-inventory failed (exit {done.returncode}); "
                             f"run `ansible-inventory -i {source} --list` to see why")
    return read_ansible_list(where, done.stdout)
