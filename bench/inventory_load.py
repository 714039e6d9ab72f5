"""Load time of a 1,000-host inventory in each format (the promise: well under a second).

    python bench/inventory_load.py [HOSTS]

Writes the inventories to a temporary folder, loads each a few times and prints the best time;
timing lives here, not in the tests, so a slow machine cannot fail the suite.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from wuremote.inventory import load_inventory

GROUPS = ("web", "app", "db", "file", "print")


def toml_text(count: int) -> str:
    lines = ['[vars]', 'transport = "psrp"', 'username = "CORP\\\\svc"', 'password_env = "BENCH_PW"', ""]
    for i in range(count):
        lines += [f'[hosts."srv{i:04d}"]', f'address = "10.0.{i // 250}.{i % 250 + 1}"', f'site = "site{i % 7}"', ""]
    for n, group in enumerate(GROUPS):
        members = ", ".join(f'"srv{i:04d}"' for i in range(n, count, len(GROUPS)))
        lines += [f"[groups.{group}]", f"hosts = [{members}]", f'vars = {{ reboot_group_cap = {n + 1} }}', ""]
    return "\n".join(lines)


def csv_text(count: int) -> str:
    rows = ["name,address,groups,site,username,password_env"]
    rows += [f"srv{i:04d},10.0.{i // 250}.{i % 250 + 1},{GROUPS[i % len(GROUPS)]},site{i % 7},CORP\\svc,BENCH_PW"
             for i in range(count)]
    return "\n".join(rows) + "\n"


def yaml_text(count: int) -> str:
    lines = ["all:", "  vars:", "    ansible_connection: psrp", "    ansible_user: CORP\\svc",
             "    wuremote_password_env: BENCH_PW", "  children:"]
    for n, group in enumerate(GROUPS):
        lines += [f"    {group}:", "      vars:", f"        wuremote_reboot_group_cap: {n + 1}", "      hosts:"]
        for i in range(n, count, len(GROUPS)):
            lines += [f"        srv{i:04d}:", f"          ansible_host: 10.0.{i // 250}.{i % 250 + 1}"]
    return "\n".join(lines) + "\n"


def ini_text(count: int) -> str:
    lines = []
    for n, group in enumerate(GROUPS):
        lines.append(f"[{group}]")
        lines += [f"srv{i:04d} ansible_host=10.0.{i // 250}.{i % 250 + 1}" for i in range(n, count, len(GROUPS))]
        lines += [f"[{group}:vars]", f"wuremote_reboot_group_cap={n + 1}", ""]
    lines += ["[all:vars]", "ansible_connection=psrp", "ansible_user=CORP\\svc", "wuremote_password_env=BENCH_PW"]
    return "\n".join(lines) + "\n"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    writers = {"hosts.toml": toml_text, "hosts.csv": csv_text, "hosts.yml": yaml_text, "hosts.ini": ini_text}
    with tempfile.TemporaryDirectory() as folder:
        for name, writer in writers.items():
            path = Path(folder) / name
            path.write_text(writer(count), encoding="utf-8")
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                inventory = load_inventory(path, environ={"BENCH_PW": "bench"})
                best = min(best, time.perf_counter() - start)
            assert len(inventory.hosts) == count, name
            print(f"{name:<11} {count} hosts  {best * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
