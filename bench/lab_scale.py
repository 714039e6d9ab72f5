"""One lab process holding many hosts, each with an open pool and a pending Receive:
the lab's peak memory, and how fast a `hostname` call is answered meanwhile.

    python bench/lab_scale.py [--hosts 1000] [--concurrency 4] [--json FILE]

The lab runs in a process of its own (its memory is read from /proc).  The controller opens
a PSRP pool on every host through wuremote's transport and leaves `Start-Sleep` running in
it, so each host always has a long-poll Receive waiting (answered by the OperationTimeout
fault every operation_timeout seconds and sent again, as a real client does).  Then every
host gets `hostname` on a second, already open pool; the latency of those calls is reported.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchlib import (
    at_most,
    info,
    lab_hosts,
    lab_process,
    median,
    own_peak_rss_mb,
    parser,
    peak_rss_mb,
    percentile,
    raise_open_files,
    report,
)

from wuremote.transport import TransportSettings, open_transport

P99_TARGET_S = 1.0
HOLD_COMMAND = "Start-Sleep -Seconds 86400"  # outlives the bench; ends when the lab stops
OPEN_WORKERS = 32  # pools opened at once while setting up (a fleet run opens them as --forks allows)
SETTLE_SECONDS = 3.0  # after the last hold starts, for its Receive to reach the lab


def open_warm(host: Any, settings: TransportSettings) -> Any:
    transport = open_transport(host, settings)
    code, _ = transport.run_command("hostname", timeout=60)
    if code != 0:
        raise SystemExit(f"bench: hostname failed on {host.name} (exit {code})")
    return transport


def hold(transport: Any, started: threading.Semaphore) -> None:
    """Keep a pipeline running on the host's pool: a Receive is pending on it most of the time."""
    started.release()
    try:
        transport.run_command(HOLD_COMMAND, timeout=86400)
    except Exception:  # noqa: BLE001 - the lab stopping ends every hold; nothing to report
        pass


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--hosts", type=int, default=200, help="lab hosts (the issue's figure: 1000)")
    cli.add_argument("--concurrency", type=int, default=4, help="hostname calls in flight at once")
    cli.add_argument("--operation-timeout", type=int, default=TransportSettings().operation_timeout,
                     help="long-poll length of the held Receives (default: wuremote's)")
    args = cli.parse_args()
    raise_open_files(args.hosts * 6 + 200)  # controller: two pools per host (and the lab child inherits it)
    settings = TransportSettings(operation_timeout=args.operation_timeout, read_timeout=args.operation_timeout + 30,
                                 connect_timeout=30.0)
    with lab_process(args.hosts, "healthy", time_scale=1.0) as lab:
        idle_rss = peak_rss_mb(lab.pid)
        hosts = lab_hosts(lab.state)
        start = time.perf_counter()
        with ThreadPoolExecutor(OPEN_WORKERS) as pool:
            holders = list(pool.map(lambda h: open_warm(h, settings), hosts))
            probes = list(pool.map(lambda h: open_warm(h, settings), hosts))
        open_seconds = time.perf_counter() - start
        started = threading.Semaphore(0)
        for transport in holders:
            threading.Thread(target=hold, args=(transport, started), daemon=True).start()
        for _ in holders:
            started.acquire()
        time.sleep(SETTLE_SECONDS)

        def timed(transport: Any) -> float:
            begin = time.perf_counter()
            code, _ = transport.run_command("hostname", timeout=60)
            if code != 0:
                raise SystemExit(f"bench: hostname failed on {transport.host} (exit {code})")
            return time.perf_counter() - begin

        with ThreadPoolExecutor(args.concurrency) as pool:
            latencies = list(pool.map(timed, probes))
        lab_peak = peak_rss_mb(lab.pid)
    figures = [
        info("lab RSS with hosts listening, before any pool", idle_rss, "MB"),
        info("lab peak RSS (pools + pending Receives)", lab_peak, "MB"),
        info("lab peak RSS per host", (lab_peak or 0) / args.hosts, "MB"),
        info(f"open {2 * args.hosts} pools ({OPEN_WORKERS} at once)", open_seconds, "s"),
        info("hostname latency, median", median(latencies), "s"),
        at_most("hostname latency, p99", percentile(latencies, 0.99), "s", P99_TARGET_S),
        info("hostname latency, max", max(latencies), "s"),
        info("controller peak RSS (2 pools per host)", own_peak_rss_mb(), "MB"),
    ]
    report("lab_scale", {"hosts": args.hosts, "time_scale": 1.0, "hostname_concurrency": args.concurrency,
                         "operation_timeout_s": args.operation_timeout, "samples": len(latencies),
                         "auth": "basic over https"}, figures, args.json)


if __name__ == "__main__":
    main()
