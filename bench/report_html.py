"""Render time and size of report.html for a 1,000-host run (the promise: usable at 1,000 hosts).

    python bench/report_html.py [REPORT_JSON] [--hosts N]

Without REPORT_JSON it first repairs the demo's mixed lab fleet (one host per scenario, real
HTTPS and scripts) for a real report.json, then clones its hosts up to N (default 1,000) and
renders the page a few times, printing the best time and the file's size.  Timing lives here,
not in the tests, so a slow machine cannot fail the suite.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner
from wuremote.lab.lab import Lab
from wuremote.output.html import render_html

ROUNDS = 3


def lab_report() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state, Lab(scenario="mixed", hosts=13, time_scale=0.002) as lab:
        summary = Runner(demo_hosts(lab), demo_options(Path(state))).run()
        return json.loads(summary.report_json.read_text(encoding="utf-8"))


def clone_hosts(report: dict[str, Any], count: int) -> dict[str, Any]:
    """`count` hosts made of copies of the report's own, with the run's counts recomputed."""
    big = copy.deepcopy(report)
    sources = list(report["hosts"].values())
    big["hosts"] = {f"srv{i:04d}": copy.deepcopy(sources[i % len(sources)]) for i in range(count)}
    counts: dict[str, int] = {}
    for host in big["hosts"].values():
        counts[host["outcome"]] = counts.get(host["outcome"], 0) + 1
    big["run"]["counts"] = counts
    return big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", type=Path, help="a run's report.json (default: run the lab fleet)")
    parser.add_argument("--hosts", type=int, default=1000)
    args = parser.parse_args()
    source = json.loads(args.report.read_text(encoding="utf-8")) if args.report else lab_report()
    big = clone_hosts(source, args.hosts)
    steps = sum(len(h["steps"]) for h in big["hosts"].values())
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        page = render_html(big)
        best = min(best, time.perf_counter() - started)
    size = len(page.encode("utf-8"))
    print(f"report.html for {args.hosts} hosts ({steps} steps): render {best * 1000:.0f} ms (best of {ROUNDS}), "
          f"{size / 2**20:.1f} MiB, {size // args.hosts} bytes per host")


if __name__ == "__main__":
    main()
