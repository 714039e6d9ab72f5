"""CSV: one row per host; the first row names the columns (name, var names, groups)."""

from __future__ import annotations

import csv
import io
import re

from ..model import InventoryError
from ..ranges import expand
from ..source import Source
from ..vars import CONVERTERS, VAR_NAMES, read_var, unknown_name


def read_csv(path: str, text: str) -> Source:
    """A cell's value is never quoted back in an error: a row with a cell too few shifts a password
    into another column (the converters name the column and what it expects instead)."""
    src = Source(path, paths_beside_file=True)
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
                if column not in ("name", "groups") and column not in CONVERTERS:
                    raise unknown_name(column, where, VAR_NAMES, "column")
            continue
        if len(row) > len(header):
            raise InventoryError(f"{where}: {len(row)} cells but {len(header)} columns (line {header_line}); "
                                 "quote cells that hold commas")
        cells = dict(zip(header, (cell.strip() for cell in row)))
        name = cells.pop("name", "")
        if not name:
            raise InventoryError(f"{where}: the name cell is empty; give every host a name")
        group_names = re.split(r"[,;\s]+", cells.pop("groups", "") or "")
        for host_name in expand(name, where):
            if host_name in src.hosts:
                raise InventoryError(f"{where}: host {host_name!r} is already defined at "
                                     f"{src.hosts[host_name].where}; keep one row per host")
            host = src.host(host_name, where)
            host.vars = {column: read_var(column, cell, where) for column, cell in cells.items() if cell}
            for group_name in filter(None, group_names):
                src.group(group_name, where).hosts.append(host_name)
    if header is None:
        raise InventoryError(f"{path}:1: empty CSV; the first row names the columns: name, then var names")
    return src
