"""A whole fleet repaired at once: wall time against the ideal, controller memory and CPU.

    python bench/fleet.py [--hosts 1000] [--forks 1000] [--max-requests N] [--time-scale 0.01]
                          [--cpu-hog N] [--tracemalloc] [--json FILE]

The lab (a mixed fleet: every built-in scenario but the never-returning reboot, cycled) runs
in its own process; this process is the controller and runs the real Runner with the full
ladder, detached steps and reboots, every host at once when --forks allows.
The ideal is the longest single host's own critical path at the same scale: each scenario's
host is first run alone (one lab host, one fork), and the slowest of those is the floor no
fleet can beat.  ratio = fleet wall time / ideal.  The CPU floor is what this machine needs for
the controller's and the lab's CPU (spread over its cores, but never below the controller's
user time: its Python runs under one GIL; nor below the lab's: one asyncio loop); the issue's
target is wall <= 1.2x the larger of the two.

Controller CPU per host is not a constant: it grows with the load on the machine and the
number of threads contending for it.  It is reported with its kernel share (system time:
context switches, TLS and socket calls) and the machine's load average over the run, and
--cpu-hog N runs N busy processes beside the fleet to show the outcomes do not depend on it.
--tracemalloc records the controller's Python allocations and prints the largest holders at
the end of the run (Python objects only: sockets' buffers, OpenSSL and the allocator's own
overhead are the rest of the RSS).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from benchlib import (
    Figure,
    at_most,
    cpu_seconds,
    info,
    lab_hosts,
    lab_process,
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


# The runner's time scale: ten times the lab's, so step timeouts are ten times what the lab's
# hosts need (an overloaded lab answers late, it does not fail) while detached-poll's waits
# still span the lab's progress marks.
RUNNER_SLACK = 10.0


def options(state_dir: Path, forks: int, time_scale: float, poll_interval: float,
            max_requests: int | None = None) -> RunOptions:
    """The same settings for the fleet and for the hosts run alone: only the host count differs.
    Timeouts are generous upper bounds; the reboot's waits scale with the lab's clock like its hosts' boots do."""
    return RunOptions(
        command="repair", forks=forks, state_dir=state_dir, poll_interval=poll_interval,
        time_scale=min(1.0, RUNNER_SLACK * time_scale), host_timeout=3600.0,
        transport=TransportSettings(connect_timeout=30.0, operation_timeout=20, read_timeout=90, open_retries=3,
                                    backoff=0.2, max_requests=max_requests),
        reboot=RebootSettings(poll_interval=max(0.1, 5.0 * time_scale), shutdown_timeout=300, boot_timeout=300,
                              readiness_timeout=300, stability_window=10.0 * time_scale, probe_timeout=90))


class HostClock:
    """Each host's own wall time, from its host-started to its host-finished event, and when the last one started."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.took: dict[str, float] = {}
        self.last_start = 0.0

    def __call__(self, event: Any) -> None:
        if event.kind == "host-started":
            self.started[event.host] = event.time
            self.last_start = max(self.last_start, event.time)
        elif event.kind == "host-finished" and event.host in self.started:
            self.took[event.host] = event.time - self.started[event.host]


def _spin() -> None:
    while True:
        pass


class Sampler:
    """A daemon thread calling ``sample`` every EVERY seconds while the fleet runs."""

    EVERY = 5.0

    def __init__(self) -> None:
        self.began = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Sampler:
        self.began = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.EVERY):
            self.sample()

    def sample(self) -> None:
        raise NotImplementedError


class BusiestSnapshot(Sampler):
    """tracemalloc snapshots taken every few seconds while the fleet runs; the one holding the most is kept
    (what holds memory at the peak, not what is left once the hosts are done)."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: tracemalloc.Snapshot | None = None
        self.size = 0

    def sample(self) -> None:
        current, _ = tracemalloc.get_traced_memory()
        if current > self.size:
            self.size, self.snapshot = current, tracemalloc.take_snapshot()


def rss_by_kind() -> dict[str, float]:
    """This process's resident memory by the kind of mapping holding it, in MB (Linux /proc/self/smaps):
    thread stacks (the 8 MiB anonymous mappings glibc gives each thread), malloc's main heap and its
    per-thread arenas (heaps aligned to 64 MiB: objects over 512 bytes, OpenSSL, expat), other
    anonymous memory (pymalloc's 1 MiB arenas of small Python objects, which the kernel merges into
    one mapping when they lie side by side, and blocks malloc maps on their own) and mapped files."""
    kinds: Counter[str] = Counter()
    path, size, start = "", 0, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if parts and not parts[0].endswith(":"):
            path = parts[5] if len(parts) > 5 else ""
            start = int(parts[0].split("-")[0], 16)
        elif parts[0] == "Size:":
            size = int(parts[1])
        elif parts[0] == "Rss:":
            kind = ("malloc heaps" if path == "[heap]" or (not path and start % (64 << 20) == 0)
                    else "other" if path.startswith("[") else "files" if path
                    else "thread stacks" if size == 8192 else "other anonymous")
            kinds[kind] += int(parts[1]) / 1024
    return dict(kinds)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssWatch(Sampler):
    """The controller's RSS sampled twice a second, and by kind (smaps, costly at 1,000 threads: at
    most every 5 s) whenever it reached a new peak; with the number of threads then and when it was."""

    EVERY, BY_KIND_EVERY = 0.5, 5.0

    def __init__(self) -> None:
        super().__init__()
        self.peak: dict[str, float] = {}
        self.peak_mb = 0.0
        self.peak_at = 0.0
        self.threads = 0
        self._by_kind_at = 0.0

    def sample(self) -> None:
        rss, now = _rss_mb(), time.perf_counter()
        if rss <= self.peak_mb:
            return
        self.peak_mb, self.peak_at, self.threads = rss, now - self.began, threading.active_count()
        if now - self._by_kind_at >= self.BY_KIND_EVERY:
            self.peak, self._by_kind_at = rss_by_kind(), now


@contextmanager
def cpu_hog(processes: int) -> Iterator[None]:
    """``processes`` busy loops beside the fleet: a machine with other work on it."""
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(processes)]
    for hog in hogs:
        hog.start()
    try:
        yield
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join()


def run_fleet(hosts: int, scenario: str, forks: int, time_scale: float, poll_interval: float,
              max_requests: int | None = None, hog: int = 0) -> dict[str, Any]:
    """One run against a fresh lab process; wall time, CPU and outcomes of the controller."""
    with lab_process(hosts, scenario, time_scale) as lab, tempfile.TemporaryDirectory(prefix="wuremote-bench-") as folder:
        configs = lab_hosts(lab.state)
        clock = HostClock()
        runner = Runner(configs, options(Path(folder), forks, time_scale, poll_interval, max_requests),
                        subscribers=[clock])
        watch = BusiestSnapshot() if tracemalloc.is_tracing() else None
        with cpu_hog(hog), watch or nullcontext(), RssWatch() as rss:
            before, lab_cpu_before = resource.getrusage(resource.RUSAGE_SELF), cpu_seconds(lab.pid) or 0.0
            load_before = os.getloadavg()[0]
            start, started_at = time.perf_counter(), time.time()
            summary = runner.run()
            wall = time.perf_counter() - start
            after, load_after = resource.getrusage(resource.RUSAGE_SELF), os.getloadavg()
        scenarios = {h["name"]: h["scenario"] for h in lab.state["hosts"]}
        return {"wall": wall, "user": after.ru_utime - before.ru_utime, "system": after.ru_stime - before.ru_stime,
                "load": (load_before, load_after[0]), "last_start": clock.last_start - started_at,
                "took": clock.took, "scenarios": scenarios,
                "outcomes": Counter(summary.outcomes.values()), "wrong": check_expected(summary, scenarios),
                "lab_rss": peak_rss_mb(lab.pid), "lab_cpu": (cpu_seconds(lab.pid) or 0.0) - lab_cpu_before,
                "busiest": watch.snapshot if watch else None, "rss_by_kind": rss.peak, "rss_peak_mb": rss.peak_mb, "threads": rss.threads,
                "rss_peak_at": rss.peak_at,
                "ends": sorted(clock.started[h] + t - started_at for h, t in clock.took.items()) or [0.0],
                "last_hosts": sorted(clock.took, key=lambda h: clock.started[h] + clock.took[h])
                [-max(1, hosts // 20):], "last_end": max((clock.started[h] + t for h, t in clock.took.items()),
                                                            default=started_at) - started_at}


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
    cli.add_argument("--poll-interval", type=float, default=0.05,
                     help="shortest time between two polls of a detached step (each waits on the host for a change)")
    cli.add_argument("--max-requests", type=int, default=None, help="requests in flight at once (default: wuremote's)")
    cli.add_argument("--cpu-hog", type=int, default=0, metavar="N", help="N busy processes beside the fleet")
    cli.add_argument("--tracemalloc", action="store_true", help="print the largest Python allocations at the end")
    cli.add_argument("--no-ideal", action="store_true", help="skip the hosts run alone (no ratio)")
    cli.add_argument("--ideal-scenarios", default="av-interference,component-store-corrupt",
                     help="scenarios run alone for the ideal (the slowest ones; 'all' for every one)")
    args = cli.parse_args()
    forks = args.forks or args.hosts
    raise_open_files(args.hosts * 4 + 200)
    chosen = list(SCENARIOS) if args.ideal_scenarios == "all" else args.ideal_scenarios.split(",")
    floor, slowest, alone = (0.0, "", {}) if args.no_ideal else ideal(args.time_scale, args.poll_interval, chosen)
    if args.tracemalloc:
        tracemalloc.start(1)  # one frame: line statistics need no more, and deeper traces slow the run tenfold
    fleet = run_fleet(args.hosts, "mixed", forks, args.time_scale, args.poll_interval, args.max_requests, args.cpu_hog)
    slowest_in_fleet = max(fleet["took"], key=fleet["took"].__getitem__)
    cpu = fleet["user"] + fleet["system"]
    figures: list[Figure] = [info("fleet wall time", fleet["wall"], "s")]
    if floor:
        figures += [info(f"ideal (slowest host alone: {slowest})", floor, "s"),
                    at_most("wall / ideal", fleet["wall"] / floor, "x", RATIO_TARGET)]
    # The CPU floor on this machine: both processes' CPU spread over its cores, but no less than either
    # process alone can go: the lab is one asyncio loop, and the controller's Python runs under one GIL
    # (its user time; its kernel time, socket and TLS calls, can overlap).
    cpu_floor = max((fleet["user"] + fleet["system"] + fleet["lab_cpu"]) / (os.cpu_count() or 1), fleet["user"],
                    fleet["lab_cpu"])
    figures += [info("CPU floor", cpu_floor, "s", "controller + lab CPU over the cores, at least the controller's "
                     "user time and the lab's CPU"),
                at_most("wall / max(ideal, CPU floor)", fleet["wall"] / max(floor, cpu_floor), "x",
                        RATIO_TARGET)]
    figures += [
        info(f"slowest host in the fleet ({fleet['scenarios'][slowest_in_fleet]})", fleet["took"][slowest_in_fleet], "s"),
        info("last host started, after the run began", fleet["last_start"], "s"),
        info("hosts ended, after the run began: half / 90 % / 99 % / all", fleet["ends"][len(fleet["ends"]) // 2], "s",
             " / ".join(f"{fleet['ends'][min(len(fleet['ends']) - 1, int(len(fleet['ends']) * q))]:.0f}"
                        for q in (0.9, 0.99)) + f" / {fleet['ends'][-1]:.0f} s; the last 5 %: "
             + ", ".join(f"{k} {v}" for k, v in Counter(fleet["scenarios"][h] for h in fleet["last_hosts"]).most_common())),
        at_most("controller peak RSS", own_peak_rss_mb(), "MB", RSS_TARGET_MB),
        info("controller RSS by kind, at the last new peak sampled by kind", sum(fleet["rss_by_kind"].values()), "MB",
             ", ".join(f"{k} {v:.0f}" for k, v in sorted(fleet["rss_by_kind"].items(), key=lambda kv: -kv[1]))),
        info("controller RSS peak during the run", fleet["rss_peak_mb"], "MB",
             f"at {fleet['rss_peak_at']:.0f} s, {fleet['threads']} threads; the last host ended at {fleet['last_end']:.0f} s"),
        info("controller CPU per host", cpu / args.hosts, "s",
             f"kernel {100 * fleet['system'] / max(cpu, 1e-9):.0f} %, load {fleet['load'][0]:.1f} -> {fleet['load'][1]:.1f}"
             f" on {os.cpu_count()} cores"),
        info("controller CPU, whole run (user + system)", cpu, "s", f"{fleet['user']:.1f} + {fleet['system']:.1f}"),
        info("lab CPU, whole run", fleet["lab_cpu"], "s"),
        info("lab peak RSS", fleet["lab_rss"], "MB"),
        info("hosts not ending as their scenario should", len(fleet["wrong"]), "hosts"),
    ]
    if alone:
        print("  alone: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(alone.items(), key=lambda kv: -kv[1])))
    if args.tracemalloc:
        current, peak = tracemalloc.get_traced_memory()
        busiest = fleet["busiest"] or tracemalloc.take_snapshot()
        print(f"  tracemalloc: Python objects peak {peak / 1e6:.1f} MB, now {current / 1e6:.1f} MB; at the busiest "
              "sample, the largest holders by line (the RSS above includes tracemalloc's own bookkeeping):")
        for stat in busiest.statistics("lineno")[:15]:
            print(f"    {stat.size / 1e6:7.2f} MB  {stat.count:7d}  {stat.traceback[0]}")
        print("  ... by file:")
        for stat in busiest.statistics("filename")[:12]:
            print(f"    {stat.size / 1e6:7.2f} MB  {stat.count:7d}  {stat.traceback[0].filename}")
    print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in fleet["outcomes"].most_common()))
    for line in fleet["wrong"][:10]:
        print("  wrong: " + line)
    report("fleet", {"hosts": args.hosts, "forks": forks, "max_requests": args.max_requests or "default",
                     "cpu_hog": args.cpu_hog, "scenario": "mixed", "lab_time_scale": args.time_scale,
                     "poll_interval_s": args.poll_interval, "runner_time_scale": min(1.0, RUNNER_SLACK * args.time_scale),
                     "reboot_poll_s": max(0.1, 5.0 * args.time_scale), "stability_window_s": 10.0 * args.time_scale,
                     "transport": "psrp, basic over https"}, figures, args.json)


if __name__ == "__main__":
    main()
