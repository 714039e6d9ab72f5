"""One reader per inventory format, each turning a file's text into a Source (source.py).

To add a format: a module here with ``read_FORMAT(path, text) -> Source`` and its extensions
in READERS; resolution, checks and passwords come for free.
"""

from __future__ import annotations

from collections.abc import Callable

from ..source import Source
from .ansible_ini import read_ini
from .ansible_yaml import read_yaml
from .csv_rows import read_csv
from .native_toml import read_toml

READERS: dict[str, Callable[[str, str], Source]] = {
    ".toml": read_toml, ".csv": read_csv, ".yml": read_yaml, ".yaml": read_yaml, ".json": read_yaml,
    ".ini": read_ini, ".cfg": read_ini, "": read_ini,
}
