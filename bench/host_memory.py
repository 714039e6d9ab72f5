"""What one open host costs the controller's memory: the part of the fleet's RSS that grows with hosts.

    python bench/host_memory.py [--hosts 300] [--json FILE]

One thread opens a PSRP pool on each lab host in turn (one `hostname` each) and keeps it open,
as a fleet's host does between steps; the controller's RSS before and after, divided by the
hosts, is the memory one open host holds.  Measured three times, each against a fresh lab in its
own process: over HTTPS, over plain HTTP (the difference is the TLS connection's native memory:
OpenSSL's SSL object and buffers), and over HTTPS with tracemalloc (the Python objects' share:
pool, pipeline, requests session, urllib3 pool).  Threads are left out: fleet.py reports their
stacks (about 20 kB a host thread).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from benchlib import info, parser, raise_open_files, report

ONE_RUN = """
import dataclasses, sys, tracemalloc
sys.path.insert(0, {bench!r})
from benchlib import lab_hosts, lab_process
from wuremote.transport import TransportSettings, open_transport

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

hosts, http, trace = int(sys.argv[1]), sys.argv[2] == "http", sys.argv[3] == "trace"
with lab_process(hosts, "healthy", 0.01, http=http) as lab:
    configs = [dataclasses.replace(config, allow_unencrypted_basic=http) for config in lab_hosts(lab.state)]
    first = open_transport(configs[0], TransportSettings())  # imports and the first pool out of the way
    first.run_command("hostname", timeout=60)
    if trace:
        tracemalloc.start(1)
    before, python_before = rss_kb(), tracemalloc.get_traced_memory()[0]
    kept = []
    for config in configs[1:]:
        transport = open_transport(config, TransportSettings())
        transport.run_command("hostname", timeout=60)
        kept.append(transport)
    after, python_after = rss_kb(), tracemalloc.get_traced_memory()[0]
    print((after - before) / len(kept), (python_after - python_before) / 1024 / len(kept))
    for transport in kept + [first]:
        transport.close()
"""


def one_run(hosts: int, scheme: str, trace: bool) -> tuple[float, float]:
    """kB of RSS and of Python objects per open host, in a fresh interpreter."""
    bench = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, "-c", ONE_RUN.format(bench=bench), str(hosts), scheme,
                           "trace" if trace else "plain"], capture_output=True, text=True, check=True, timeout=1800)
    rss, python = done.stdout.split()
    return float(rss), float(python)


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--hosts", type=int, default=300, help="lab hosts, each with a pool kept open")
    args = cli.parse_args()
    raise_open_files(args.hosts * 4 + 200)
    https, _ = one_run(args.hosts, "https", False)
    http, _ = one_run(args.hosts, "http", False)
    _, python = one_run(args.hosts, "https", True)
    figures: list[Any] = [
        info("RSS per open host, HTTPS", https, "kB"),
        info("RSS per open host, plain HTTP", http, "kB", f"so the TLS connection holds about {https - http:.0f} kB"),
        info("Python objects per open host (tracemalloc)", python, "kB", "pool, pipeline, requests session, urllib3 pool"),
        info("1,000 open hosts, HTTPS", https * 1000 / 1024, "MB"),
    ]
    report("host_memory", {"hosts": args.hosts, "transport": "psrp, basic", "thread": "one, hosts opened in turn"},
           figures, args.json)


if __name__ == "__main__":
    main()
