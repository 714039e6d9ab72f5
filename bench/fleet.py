"""A whole fleet repaired at once: wall time against the ideal, controller memory and CPU.

    python bench/fleet.py [--hosts 1000] [--forks 1000] [--time-scale 0.01] [--json FILE]

The lab (a mixed fleet: every built-in scenario but the never-returning reboot, cycled) runs
in its own process; this process is the controller and runs the real Runner with the full
ladder, detached steps and reboots, every host at once when --forks allows.
The ideal is the longest single host's own critical path at the same scale: each scenario's
host is first run alone (one lab host, one fork), and the slowest of those is the floor no
fleet can beat.  ratio = fleet wall time / ideal.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import (
    Figure,
    at_most,
    cpu_seconds,
    info,
    lab_hosts,
    lab_process,
    own_cpu_seconds,
    own_peak_rss_mb,
    parser,
    peak_rss_mb,
    raise_open_files,
    report,
)

from wuremote.demo import check_expected
from wuremote.engine.reboot import RebootSettings
from wuremote.engine.runner import Runner, RunOptions
from wuremote.transport import TransportSettings

RATIO_TARGET = 1.2
RSS_TARGET_MB = 300.0
# The mixed fleet's scenarios (wuremote.lab.scenarios.MIXED, not imported: the controller must not load the lab).
SCENARIOS = ("healthy", "clock-skew", "corrupt-download-cache", "disabled-services", "component-store-corrupt",
             "component-store-needs-source", "av-interference", "third-party-service-conflict", "manual-kb",
             "low-disk", "wsus-unreachable", "servicing-in-progress", "stopped-services")


def options(state_dir: Path, forks: int, time_scale: float, poll_interval: float) -> RunOptions:
    """The same settings for the fleet and for the hosts run alone: only the host count differs.
    Timeouts are generous upper bounds (an overloaded lab answers late, it does not fail);
    the reboot's waits scale with the lab's clock like its hosts' boots do."""
    return RunOptions(
        command="repair", forks=forks, state_dir=state_dir, poll_interval=poll_interval, time_scale=1.0,
        host_timeout=3600.0,
        transport=TransportSettings(connect_timeout=30.0, operation_timeout=5, read_timeout=90, open_retries=3,
                                    backoff=0.2),
        reboot=RebootSettings(poll_interval=max(0.1, 5.0 * time_scale), shutdown_timeout=300, boot_timeout=300,
                              readiness_timeout=300, stability_window=10.0 * time_scale, probe_timeout=90))


class HostClock:
    """Each host's own wall time, from its host-started to its host-finished event."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.took: dict[str, float] = {}

    def __call__(self, event: Any) -> None:
        if event.kind == "host-started":
            self.started[event.host] = event.time
        elif event.kind == "host-finished" and event.host in self.started:
            self.took[event.host] = event.time - self.started[event.host]


def run_fleet(hosts: int, scenario: str, forks: int, time_scale: float, poll_interval: float) -> dict[str, Any]:
    """One run against a fresh lab process; wall time, CPU and outcomes of the controller."""
    with lab_process(hosts, scenario, time_scale) as lab, tempfile.TemporaryDirectory(prefix="wuremote-bench-") as folder:
        configs = lab_hosts(lab.state)
        clock = HostClock()
        runner = Runner(configs, options(Path(folder), forks, time_scale, poll_interval), subscribers=[clock])
        cpu_before, lab_cpu_before = own_cpu_seconds(), cpu_seconds(lab.pid) or 0.0
        start = time.perf_counter()
        summary = runner.run()
        wall = time.perf_counter() - start
        scenarios = {h["name"]: h["scenario"] for h in lab.state["hosts"]}
        return {"wall": wall, "cpu": own_cpu_seconds() - cpu_before, "took": clock.took, "scenarios": scenarios,
                "outcomes": Counter(summary.outcomes.values()), "wrong": check_expected(summary, scenarios),
                "lab_rss": peak_rss_mb(lab.pid), "lab_cpu": (cpu_seconds(lab.pid) or 0.0) - lab_cpu_before}


def ideal(time_scale: float, poll_interval: float, scenarios: list[str]) -> tuple[float, str, dict[str, float]]:
    """Each scenario's host alone: the slowest one's wall time is the fleet's floor."""
    alone = {}
    for scenario in scenarios:
        run = run_fleet(1, scenario, 1, time_scale, poll_interval)
        alone[scenario] = max(run["took"].values())
    slowest = max(alone, key=alone.__getitem__)
    return alone[slowest], slowest, alone


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--hosts", type=int, default=100, help="lab hosts (the issue's figure: 1000)")
    cli.add_argument("--forks", type=int, default=None, help="hosts worked on at once (default: all of them)")
    cli.add_argument("--time-scale", type=float, default=0.01, help="lab seconds per modelled second (0.01: DISM 20 min = 12 s)")
    cli.add_argument("--poll-interval", type=float, default=0.5, help="longest wait between detached-poll calls")
    cli.add_argument("--ideal-scenarios", default="av-interference,component-store-corrupt",
                     help="scenarios run alone for the ideal (the slowest ones; 'all' for every one)")
    args = cli.parse_args()
    forks = args.forks or args.hosts
    raise_open_files(args.hosts * 4 + 200)
    chosen = list(SCENARIOS) if args.ideal_scenarios == "all" else args.ideal_scenarios.split(",")
    floor, slowest, alone = ideal(args.time_scale, args.poll_interval, chosen)
    fleet = run_fleet(args.hosts, "mixed", forks, args.time_scale, args.poll_interval)
    ratio = fleet["wall"] / floor
    slowest_in_fleet = max(fleet["took"], key=fleet["took"].__getitem__)
    figures: list[Figure] = [
        info("fleet wall time", fleet["wall"], "s"),
        info(f"ideal (slowest host alone: {slowest})", floor, "s"),
        at_most("wall / ideal", ratio, "x", RATIO_TARGET),
        info(f"slowest host in the fleet ({fleet['scenarios'][slowest_in_fleet]})", fleet["took"][slowest_in_fleet], "s"),
        at_most("controller peak RSS", own_peak_rss_mb(), "MB", RSS_TARGET_MB),
        info("controller CPU per host", fleet["cpu"] / args.hosts, "s"),
        info("controller CPU, whole run", fleet["cpu"], "s"),
        info("lab CPU, whole run", fleet["lab_cpu"], "s"),
        info("lab peak RSS", fleet["lab_rss"], "MB"),
        info("hosts not ending as their scenario should", len(fleet["wrong"]), "hosts"),
    ]
    print("  alone: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(alone.items(), key=lambda kv: -kv[1])))
    print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in fleet["outcomes"].most_common()))
    for line in fleet["wrong"][:10]:
        print("  wrong: " + line)
    report("fleet", {"hosts": args.hosts, "forks": forks, "scenario": "mixed", "lab_time_scale": args.time_scale,
                     "poll_interval_s": args.poll_interval, "runner_time_scale": 1.0,
                     "reboot_poll_s": max(0.1, 5.0 * args.time_scale), "stability_window_s": 10.0 * args.time_scale,
                     "transport": "psrp, basic over https"}, figures, args.json)


if __name__ == "__main__":
    main()
