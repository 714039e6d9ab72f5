"""group_vars/ and host_vars/ beside an Ansible inventory (YAML or INI), read as Ansible finds them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..source import Source, read_text
from .ansible_yaml import YamlDoc

_SUFFIXES = ("", ".yml", ".yaml", ".json")


def read_vars_folders(src: Source, base: Path) -> None:
    """Add the vars of ``base``/group_vars and ``base``/host_vars to the groups and hosts of ``src``."""
    for name, file in _vars_files(base / "group_vars"):
        target = src.file_vars if name == "all" else src.groups[name].file_vars if name in src.groups else None
        if target is not None:
            doc = YamlDoc(str(file), read_text(file))
            target.update(doc.ansible_vars(doc.root, "a group_vars file"))
    for name, file in _vars_files(base / "host_vars"):
        if name in src.hosts:
            doc = YamlDoc(str(file), read_text(file))
            src.hosts[name].file_vars.update(doc.ansible_vars(doc.root, "a host_vars file"))


def _vars_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(group or host name, file): NAME[.yml|.yaml|.json] or a folder NAME/ of such files."""
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            for inner in sorted(entry.rglob("*")):
                if inner.is_file() and inner.suffix in _SUFFIXES and not inner.name.startswith("."):
                    yield entry.name, inner
        elif entry.suffix in _SUFFIXES:
            yield (entry.stem if entry.suffix else entry.name), entry
