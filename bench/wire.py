"""Requests and bytes each host costs on the wire for the mixed ladder, counted by the lab.

    python bench/wire.py [--rounds 1] [--transport psrp|winrm|both] [--json FILE]

Runs the real Runner on one lab host per mixed scenario (``--rounds`` times as many) over each
transport and reads the lab listener's counters per host: HTTP requests, and request body
bytes as sent (what the controller serialised, sealed or not).  Every host must end as its
scenario should; the figures are per host, mean over the fleet.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchlib import Figure, info, parser, report

from wuremote.demo import check_expected, demo_hosts, demo_options
from wuremote.lab.lab import Lab
from wuremote.lab.scenarios import MIXED

LADDER_TIME_SCALE = 0.002  # the demo's: a 20-minute DISM lasts 2.4 s


def one_transport(transport: str, rounds: int, state_dir: Path) -> tuple[list[Figure], list[str]]:
    from wuremote.engine.runner import Runner

    hosts_count = len(MIXED) * rounds
    with Lab(hosts=hosts_count, scenario="mixed", time_scale=LADDER_TIME_SCALE) as lab:
        hosts = demo_hosts(lab, transport=transport)
        summary = Runner(hosts, demo_options(state_dir)).run()
        requests = {h.name: lab.requests_served(h.name) for h in hosts}
        sent = {h.name: lab.bytes_received(h.name) for h in hosts}
        wrong = check_expected(summary, {h.name: h.groups[0] for h in hosts})
    count = len(hosts)
    mean_requests = sum(requests.values()) / count
    mean_kb = sum(sent.values()) / count / 1024
    lines = [f"{transport}: {count} hosts, {mean_requests:.1f} requests and {mean_kb:.1f} KB sent per host (mean); "
             f"{len(wrong)} ended wrongly"]
    lines += [f"  wrong: {line}" for line in wrong]
    label = "PSRP" if transport == "psrp" else "WinRS"
    figures = [info(f"{label}: requests per host, mixed ladder (mean)", mean_requests, "req"),
               info(f"{label}: KB sent per host, mixed ladder (mean)", mean_kb, "KB"),
               Figure(f"{label}: hosts ending wrongly", len(wrong), "hosts", "0", not wrong)]
    return figures, lines


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=1, help="hosts per mixed scenario")
    cli.add_argument("--transport", choices=("psrp", "winrm", "both"), default="both")
    args = cli.parse_args()
    figures: list[Figure] = []
    lines: list[str] = []
    for transport in (("psrp", "winrm") if args.transport == "both" else (args.transport,)):
        with tempfile.TemporaryDirectory(prefix="wuremote-bench-") as folder:
            more, text = one_transport(transport, args.rounds, Path(folder))
        figures += more
        lines += text
    for line in lines:
        print("  " + line)
    report("wire", {"ladder_time_scale": LADDER_TIME_SCALE, "rounds": args.rounds, "auth": "basic over https",
                    "scenarios": len(MIXED)}, figures, args.json)


if __name__ == "__main__":
    main()
