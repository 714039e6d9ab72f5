"""What every bench shares: figures with their targets, the parameter header, peak RSS,
the file-descriptor limit, and a lab in a process of its own.

Benches print for a reader first; ``--json FILE`` also writes the figures so ``run_all``
can gather one table without parsing text.  psutil is not a dependency, so memory comes
from ``resource`` (this process) and ``/proc/<pid>/status`` (another one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LAB_START_TIMEOUT = 300.0  # seconds a 1,000-host lab may take to listen (TLS contexts, one port each)


@dataclass(frozen=True)
class Figure:
    """One measured number, the target it answers to and whether it met it (None: no target)."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        return f"{self.value:.3g} {self.unit}" if abs(self.value) < 1000 else f"{self.value:.0f} {self.unit}"


def at_most(name: str, value: float | None, unit: str, limit: float, note: str = "") -> Figure:
    """A figure whose target is an upper bound."""
    met = None if value is None else value <= limit
    return Figure(name, value, unit, f"<= {limit:g} {unit}", met, note)


def info(name: str, value: float | None, unit: str, note: str = "") -> Figure:
    return Figure(name, value, unit, "", None, note)


def parser(description: str) -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description=description)
    cli.add_argument("--json", type=Path, help="also write the figures and parameters to this file (run_all reads it)")
    return cli


def report(bench: str, params: dict[str, Any], figures: list[Figure], json_path: Path | None) -> None:
    """Print the fixed parameters, then each figure with its target; optionally save them."""
    print(f"== {bench}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    width = max(len(f.name) for f in figures)
    for figure in figures:
        verdict = "" if figure.met is None else ("  met" if figure.met else "  MISSED")
        target = f"  (target {figure.target})" if figure.target else ""
        note = f"  [{figure.note}]" if figure.note else ""
        print(f"  {figure.name:<{width}}  {figure.shown():>12}{target}{verdict}{note}")
    if json_path is not None:
        json_path.write_text(json.dumps({"bench": bench, "params": params, "figures": [asdict(f) for f in figures]},
                                        indent=2) + "\n", encoding="utf-8")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile: p99 of 1,000 samples is the 990th smallest, an observed value."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


# --- processes and limits ------------------------------------------------------------------
def own_peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb(pid: int) -> float | None:
    """Another process's peak resident memory (VmHWM), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """Another process's user + system CPU seconds so far (/proc/<pid>/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_open_files(needed: int) -> int:
    """Lift the soft limit on open files towards the hard one: a 1,000-host lab holds a
    listening socket and at least one connection per host; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        raise SystemExit(f"bench: {needed} open files needed, the hard limit allows {soft}; "
                         "raise it (ulimit -Hn) or use fewer --hosts")
    return soft


@dataclass
class LabProcess:
    """A `python -m wuremote.lab` child: its pid and the state file it wrote once listening."""

    process: subprocess.Popen[bytes]
    state: dict[str, Any]
    state_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def inventory(self) -> Path:
        return Path(self.state["inventory"])


@contextmanager
def lab_process(hosts: int, scenario: str, time_scale: float, seed: int = 0, http: bool = False) -> Iterator[LabProcess]:
    """Run a lab in its own process, so its memory and CPU are measured apart from the controller's
    (``http``: plain HTTP with Basic allowed, the lab's --http)."""
    with tempfile.TemporaryDirectory(prefix="wuremote-bench-") as folder:
        state_file = Path(folder) / "lab-state.json"
        log = open(Path(folder) / "lab.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "wuremote.lab", "--hosts", str(hosts), "--scenario", scenario,
             "--time-scale", str(time_scale), "--seed", str(seed), "--state-file", str(state_file)]
            + (["--http"] if http else []),
            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + LAB_START_TIMEOUT
            while not state_file.exists():
                if process.poll() is not None:
                    raise SystemExit(f"bench: the lab exited with {process.returncode}: "
                                     + (Path(folder) / "lab.log").read_text(errors="replace")[-2000:])
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench: the lab did not listen within {LAB_START_TIMEOUT:.0f} s")
                time.sleep(0.1)
            state = json.loads(state_file.read_text(encoding="utf-8"))
            yield LabProcess(process, state, state_file)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()


# --- hosts of a lab, as the controller sees them -------------------------------------------
def lab_hosts(state: dict[str, Any], transport: str = "psrp") -> list[Any]:
    """HostConfigs for a lab's state file, opted in as the demo's are (wuremote.demo.demo_hosts),
    built without importing the lab so the controller's memory holds only the controller."""
    from wuremote.inventory import HostConfig
    from wuremote.secret import Secret

    hosts = []
    for entry in state["hosts"]:
        kb = (_fixture(entry["scenario"]).get("expect") or {}).get("install_kb")
        hosts.append(HostConfig(
            name=entry["name"], address=entry["address"], port=entry["port"], scheme=entry["scheme"],
            transport=transport, auth="basic", username=entry["username"], password=Secret(entry["password"]),
            ca_file=entry["ca_file"], opt_in=("av-pause", "clean-boot"), kb=kb,
            kb_url=f"https://download.lab.invalid/{kb}.msu" if kb else None,
            vendor_av={"pause_command": "C:\\Program Files\\Contoso\\Endpoint\\avctl.exe", "pause_arguments": ["pause"],
                       "resume_command": "C:\\Program Files\\Contoso\\Endpoint\\avctl.exe", "resume_arguments": ["resume"]},
            groups=(entry["scenario"],), source="bench"))
    return hosts


def _fixture(scenario: str) -> dict[str, Any]:
    import wuremote

    path = Path(wuremote.__file__).parent / "lab" / "fixtures" / f"{scenario}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
