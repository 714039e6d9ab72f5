"""Push throughput: a 50 MB .msu sent to a lab host by wuremote's push-kb over PSRP and over WinRS,
beside pypsrp's own ``Client.copy`` of the same file, in one run on one lab.

    python bench/push.py [--mb 50] [--json FILE]

The lab runs in a process of its own (its CPU is not the controller's); each method gets a host of
its own. A push is timed from its first request to the host's answer that the file is staged with
the right SHA-256 (push-kb's ask, the runs of chunks, the host's hash check); ``Client.copy`` from
its pool's opening to its answer (it checks SHA-1 on the host). MB/s is 10^6 bytes a second.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Figure, info, lab_hosts, lab_process, parser, report
from pypsrp.client import Client

from wuremote.engine import packages
from wuremote.engine.ledger import Ledger
from wuremote.engine.options import RunOptions
from wuremote.engine.steps import StepRunner
from wuremote.events import Event
from wuremote.transport import TransportSettings

TIME_SCALE = 0.01
LOOPBACK = TransportSettings(connect_timeout=5.0, operation_timeout=5, read_timeout=30, open_retries=1, backoff=0.1)


class _Run:
    """What a walk gets from its run (the HostContext), kept to what push-kb uses: events counted."""

    run_id = "bench-push"
    cancelled = False

    def __init__(self) -> None:
        self.options = RunOptions(transport=LOOPBACK, time_scale=1.0)
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def write_artifact(self, relative: str, text: str) -> None:
        pass

    def take_orphans(self, host: str) -> list[str]:
        return []


def wuremote_push(host: Any, pkg: packages.Package) -> tuple[float, int]:
    """Seconds to stage the file, and the push-kb runs it took."""
    run = _Run()
    steps = StepRunner(run, host, Ledger(), set())  # type: ignore[arg-type]  # _Run is the HostContext protocol
    steps.open()
    try:
        started = time.perf_counter()
        result = packages.push(steps, pkg, reason="bench")
        elapsed = time.perf_counter() - started
    finally:
        steps.close()
    if not result.facts.get("staged"):
        raise SystemExit(f"bench: push over {host.transport} did not stage the file: {result.messages}")
    runs = sum(1 for event in run.events if type(event).__name__ == "StepProgress")
    return elapsed, runs + 1


def pypsrp_copy(host: Any, path: Path) -> float:
    client = Client(host.address, port=host.port, username=host.username, password=host.password.reveal(),
                    ssl=True, auth="basic", cert_validation=host.ca_file, encryption="never",
                    operation_timeout=LOOPBACK.operation_timeout, read_timeout=LOOPBACK.read_timeout)
    started = time.perf_counter()
    client.copy(str(path), "C:\\Windows\\Temp\\" + path.name)
    return time.perf_counter() - started


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--mb", type=int, default=50, help="file size in MB (default 50)")
    args = cli.parse_args()
    size = args.mb * 1_000_000
    with tempfile.TemporaryDirectory(prefix="wuremote-bench-push-") as folder:
        path = Path(folder) / "windows10.0-kb5034441-x64_0123456789abcdef0123456789abcdef01234567.msu"
        path.write_bytes(b"MSCF" + os.urandom(size - 4))
        pkg = packages.package(path)
        with lab_process(3, "healthy", TIME_SCALE) as lab:
            psrp_host, winrs_host, copy_host = lab_hosts(lab.state, "psrp")
            winrs_host = type(winrs_host)(**{**winrs_host.__dict__, "transport": "winrm"})
            psrp_seconds, psrp_runs = wuremote_push(psrp_host, pkg)
            winrs_seconds, winrs_runs = wuremote_push(winrs_host, pkg)
            copy_seconds = pypsrp_copy(copy_host, path)
    mbps = {name: size / 1e6 / seconds for name, seconds in
            (("psrp", psrp_seconds), ("winrs", winrs_seconds), ("copy", copy_seconds))}
    figures: list[Figure] = [
        info("push-kb over PSRP", mbps["psrp"], "MB/s", f"{psrp_seconds:.1f} s, {psrp_runs} pipelines"),
        info("push-kb over WinRS", mbps["winrs"], "MB/s", f"{winrs_seconds:.1f} s, {winrs_runs} commands"),
        info("pypsrp Client.copy", mbps["copy"], "MB/s", f"{copy_seconds:.1f} s, one pipeline"),
        info("PSRP push / Client.copy", mbps["psrp"] / mbps["copy"], "x"),
        info("WinRS push / Client.copy", mbps["winrs"] / mbps["copy"], "x"),
    ]
    report("push", {"mb": args.mb, "lab": "own process, 3 hosts", "time_scale": TIME_SCALE}, figures, args.json)


if __name__ == "__main__":
    main()
