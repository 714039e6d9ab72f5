"""How quickly wuremote starts: `wuremote --help`, and loading a 1,000-host inventory.

    python bench/startup.py [--runs 7] [--hosts 1000] [--json FILE]

--help runs in a fresh process each time (median of --runs); the heavy clients (pypsrp,
pywinrm, rich) and the lab must not load for it, and the bench names any that did.
Inventory loads reuse bench/inventory_load.py's writers, best of 5 per format.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import Figure, at_most, info, median, parser, report
from inventory_load import csv_text, ini_text, toml_text, yaml_text

HELP_TARGET_MS = 300.0
INVENTORY_TARGET_MS = 200.0
HEAVY = ("pypsrp", "winrm", "rich", "psrpcore", "wuremote.lab.lab", "wuremote.engine.runner")
# Run in the child: --help as the console script does it, then which heavy modules it loaded.
_PROBE = (
    "import sys\nsys.argv = ['wuremote', '--help']\nfrom wuremote.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    f"print('LOADED', ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
)


def help_command() -> list[str]:
    """The installed console script when it sits beside this interpreter, else `python -m wuremote.cli`."""
    script = Path(sys.executable).with_name("wuremote")
    return [str(script), "--help"] if script.exists() else [sys.executable, "-m", "wuremote.cli", "--help"]


def time_help(runs: int) -> list[float]:
    command = help_command()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - start) * 1000)
    return times


def heavy_modules_loaded() -> list[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    line = next(l for l in done.stderr.splitlines() if l.startswith("LOADED"))
    return line.split()[1:]


def inventory_times(count: int) -> dict[str, float]:
    from wuremote.inventory import load_inventory

    writers = {"toml": toml_text, "csv": csv_text, "yml": yaml_text, "ini": ini_text}
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for suffix, writer in writers.items():
            path = Path(folder) / f"hosts.{suffix}"
            path.write_text(writer(count), encoding="utf-8")
            best[suffix] = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                inventory = load_inventory(path, environ={"BENCH_PW": "bench"})
                best[suffix] = min(best[suffix], (time.perf_counter() - start) * 1000)
            assert len(inventory.hosts) == count, suffix
    return best


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--runs", type=int, default=7, help="fresh processes for --help (median reported)")
    cli.add_argument("--hosts", type=int, default=1000, help="hosts in the inventory")
    args = cli.parse_args()
    help_ms = time_help(args.runs)
    loaded = heavy_modules_loaded()
    python_ms = median([_time_bare_python() for _ in range(args.runs)])
    loads = inventory_times(args.hosts)
    figures: list[Figure] = [
        at_most("wuremote --help (median)", median(help_ms), "ms", HELP_TARGET_MS,
                note=("loaded: " + ", ".join(loaded)) if loaded else "no heavy module loaded"),
        info("bare python -c pass (median)", python_ms, "ms"),
    ]
    figures += [at_most(f"{args.hosts}-host inventory load ({fmt})", ms, "ms", INVENTORY_TARGET_MS)
                for fmt, ms in loads.items()]
    report("startup", {"help_runs": args.runs, "inventory_hosts": args.hosts, "inventory_best_of": 5}, figures, args.json)


def _time_bare_python() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    main()
