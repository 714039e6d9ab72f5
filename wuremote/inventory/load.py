"""load_inventory: an inventory file, its format chosen by its extension."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from .formats import READERS
from .formats.group_vars import read_vars_folders
from .model import Inventory, InventoryError
from .resolve import build
from .source import read_text


def load_inventory(path: str | Path, *, environ: Mapping[str, str] | None = None,
                   prompt: Callable[[str], str] | None = None, passwords: bool = True) -> Inventory:
    """Read an inventory, its format chosen by the file's extension.

    Each host's password comes from its password_env variable, a password written in the
    inventory (a warning), WUREMOTE_PASSWORD, or `prompt(username)` (once per username), in
    that order; variables are looked up in `environ` (os.environ when None).  With
    `passwords=False` none is looked up yet: `find_passwords` does it for the hosts a run takes.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise InventoryError(f"{path}: unknown inventory format {path.suffix!r}; use .toml, .csv, .yml/.yaml "
                             "(Ansible), or .ini/.cfg/no extension (Ansible INI)")
    src = reader(str(path), read_text(path))
    if src.ansible:
        read_vars_folders(src, path.parent)
    return build(src, environ, prompt, passwords=passwords)
