"""HTTP requests per short script and per ladder rung, counted by the lab, side by side.

    python bench/roundtrips.py [--calls 10] [--json FILE]

Part 1 runs `hostname` and the short step boot-info through wuremote's PSRP and WinRS
transports (first call, which opens the pool/shell, and warm calls after it) and runs
`hostname` through raw pywinrm ``Session.run_ps`` (a shell per call: what that API does) and
raw pypsrp on one warm ``RunspacePool`` (``PowerShell(pool).add_script(...).invoke()``: the
cheapest raw PSRP client, not ``Client.execute_ps``, which opens a pool per call), each client
on a host of its own so the lab's per-host counter is that client's alone.
Part 2 runs the real Runner on broken hosts and counts each ladder rung as the walk runs it
(the repair step, the diagnose after it and the verify after that, which is detached: start,
polls, cleanup), against the same scripts run one by one on a warm pool on a second host of
the *same* scenario, with the same detached-poll waits, so both columns do the same work.
Requests are counted by the lab's listener; the WS-Man action of each is tallied too, so a
figure over target says which requests it was made of.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import winrm
from benchlib import Figure, at_most, info, median, parser, report
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from wuremote.contract.scripts import get_script
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.detached import host_wait_seconds
from wuremote.lab.lab import Endpoint, Lab
from wuremote.lab.scenarios import MIXED
from wuremote.transport import TransportSettings, open_transport

TIME_SCALE = 0.001
LADDER_TIME_SCALE = 0.002  # the demo's: a 20-minute DISM lasts 2.4 s
# Short timeouts for the lab on loopback (a 1 s long poll).
LOOPBACK = TransportSettings(connect_timeout=2.0, operation_timeout=1, read_timeout=4, open_retries=1, backoff=0.01)
SHORT_STEP = "boot-info"
PSRP_STEP_TARGET = 3  # Command, Receive, Signal on a warm pool
WINRS_STEP_TARGET = 4  # Command, Send (stdin), Receive, Signal on a warm shell
RUNG_SCENARIOS = ("corrupt-download-cache", "clock-skew", "av-interference")
_ACTION = re.compile(rb"<[\w:]*Action[^>]*>[^<]*/([A-Za-z]+)</[\w:]*Action>")


class Tally:
    """Counts a lab host's requests by WS-Man action (Create, Command, Send, Receive, Signal, Delete)."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.actions: Counter[str] = Counter()
        listener = lab.hosts[name].listener
        inner = listener.handler

        async def counting(request: Any, user: str) -> Any:
            match = _ACTION.search(request.body[:4096])
            self.actions[match.group(1).decode() if match else "other"] += 1
            return await inner(request, user)

        lab.call(lambda: setattr(listener, "handler", counting))

    @property
    def total(self) -> int:
        return self.lab.requests_served(self.name)

    def measure(self, call: Callable[[], Any]) -> tuple[int, str]:
        """Requests `call` made, and which actions they were."""
        before_total, before = self.total, Counter(self.actions)
        call()
        spent = self.actions - before
        return self.total - before_total, "+".join(f"{k}x{v}" if v > 1 else k for k, v in sorted(spent.items()))


def raw_pywinrm(endpoint: Endpoint) -> winrm.Session:
    session = winrm.Session(endpoint.url, auth=(endpoint.username, endpoint.password), transport="basic",
                            server_cert_validation="validate", ca_trust_path=endpoint.ca_file,
                            operation_timeout_sec=2, read_timeout_sec=6)
    return session


def raw_pypsrp_pool(endpoint: Endpoint) -> RunspacePool:
    """Raw pypsrp as its README shows a reused pool: one WSMan, one RunspacePool opened once."""
    wsman = WSMan(endpoint.address, port=endpoint.port, username=endpoint.username, password=endpoint.password,
                  ssl=True, auth="basic", cert_validation=endpoint.ca_file, operation_timeout=2, read_timeout=6,
                  connection_timeout=5, reconnection_retries=0)
    pool = RunspacePool(wsman)
    pool.open()
    return pool


def _invoke(pool: RunspacePool, script: str) -> None:
    ps = PowerShell(pool)
    ps.add_script(script)
    ps.invoke()


def clients_side_by_side(calls: int) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    lines: list[str] = []
    settings = LOOPBACK
    with Lab(hosts=4, scenario="healthy", time_scale=TIME_SCALE) as lab:
        hosts = demo_hosts(lab)
        for host, transport, target in ((hosts[0], "psrp", PSRP_STEP_TARGET), (hosts[1], "winrm", WINRS_STEP_TARGET)):
            tally = Tally(lab, host.name)
            client = open_transport(replace(host, transport=transport), settings)
            label = "PSRP" if transport == "psrp" else "WinRS"
            try:
                first, first_actions = tally.measure(lambda: client.run_command("hostname", timeout=10))
                warm = [tally.measure(lambda: client.run_command("hostname", timeout=10)) for _ in range(calls)]
                steps = [tally.measure(lambda: client.run_step(get_script(SHORT_STEP), {"RunId": "bench"}, timeout=10))
                         for _ in range(calls)]
            finally:
                client.close()
            lines += [f"wuremote {label} first hostname (opens the session): {first} = {first_actions}",
                      f"wuremote {label} warm hostname: {_spread(warm)}",
                      f"wuremote {label} warm {SHORT_STEP} step: {_spread(steps)}"]
            figures += [info(f"wuremote {label}: hostname, first call", first, "req"),
                        info(f"wuremote {label}: hostname, warm", median([n for n, _ in warm]), "req"),
                        at_most(f"wuremote {label}: short step, warm (median)", median([n for n, _ in steps]), "req", target),
                        at_most(f"wuremote {label}: short step, warm (max)", max(n for n, _ in steps), "req", target)]
        endpoints = lab.endpoints
        session, tally = raw_pywinrm(endpoints[2]), Tally(lab, endpoints[2].name)
        runs = [tally.measure(lambda: session.run_ps("hostname")) for _ in range(calls)]
        lines.append(f"raw pywinrm Session.run_ps hostname: {_spread(runs)}")
        figures.append(info("raw pywinrm Session.run_ps", median([n for n, _ in runs]), "req", "opens a shell per call"))
        tally = Tally(lab, endpoints[3].name)
        pool = raw_pypsrp_pool(endpoints[3])
        try:
            runs = [tally.measure(lambda: _invoke(pool, "hostname")) for _ in range(calls)]
        finally:
            pool.close()
        lines.append(f"raw pypsrp, warm RunspacePool, hostname: {_spread(runs)}")
        figures.append(info("raw pypsrp, warm RunspacePool: hostname", median([n for n, _ in runs]), "req",
                            "one pool for every call"))
    return figures, lines


def _spread(runs: list[tuple[int, str]]) -> str:
    """'3 (x9: Command+Receive+Signal), 4 (x1: Command+Receivex2+Signal)' - each count seen, most common first."""
    seen = Counter(runs)
    return ", ".join(f"{n} (x{k}: {actions})" for (n, actions), k in seen.most_common())


# --- part 2: ladder rungs -------------------------------------------------------------------
class RungCounter:
    """A Runner subscriber that reads the lab's counter as each step starts and finishes."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.steps: list[tuple[str, str, int]] = []  # host, step label, requests
        self._open: dict[str, tuple[str, int]] = {}

    def __call__(self, event: Any) -> None:
        if event.kind == "step-started":
            self._open[event.host] = (event.step, self.lab.requests_served(event.host))
        elif event.kind == "step-finished" and event.host in self._open:
            step, before = self._open.pop(event.host)
            self.steps.append((event.host, step, self.lab.requests_served(event.host) - before))

    def rungs(self) -> list[tuple[str, str, int]]:
        """(host, rung, requests of the rung's step + the diagnose and the verify right after it)."""
        found = []
        for host in dict.fromkeys(h for h, _, _ in self.steps):
            own = [(step, spent) for h, step, spent in self.steps if h == host]
            for (step, spent), (after, spent2), (then, spent3) in zip(own, own[1:], own[2:]):
                if after == "diagnose" and then == "verify" and step not in NOT_RUNGS:
                    found.append((host, step, spent + spent2 + spent3))
        return found


NOT_RUNGS = ("diagnose", "lock", "verify", "boot-info", "collect-logs")


def rungs_in_a_run(state_dir: Path) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    lines: list[str] = []
    from wuremote.engine.runner import Runner

    # Two hosts of each scenario: the Runner repairs the first, the one-by-one column runs the same
    # rung's scripts on the second, so both count the same work on the same kind of host.
    with Lab(hosts=2 * len(MIXED), scenario="mixed", time_scale=LADDER_TIME_SCALE) as lab:
        hosts = demo_hosts(lab)
        chosen = [h for h in hosts[:len(MIXED)] if h.groups[0] in RUNG_SCENARIOS]
        twin = {h.name: hosts[i + len(MIXED)] for i, h in enumerate(hosts[:len(MIXED)])}
        counter = RungCounter(lab)
        options = demo_options(state_dir)
        Runner(chosen, options, subscribers=[counter]).run()
        rungs = counter.rungs()
        wait = host_wait_seconds(options.transport.operation_timeout, options.time_scale)
        alone = {(host, rung): _alone_cost(lab, twin[host], rung, wait, options.transport) for host, rung, _ in rungs}
    for host, rung, total in rungs:
        one_by_one = alone[(host, rung)]
        lines.append(f"rung {rung} ({host}): step + diagnose + verify = {total}; the same scripts one by one on a warm "
                     f"pool on a host of the same scenario: {one_by_one} (polls follow the host's progress)")
        figures.append(Figure(f"rung {rung} (step + diagnose + verify)", total, "req",
                              f"< {one_by_one} req (one by one)", total < one_by_one))
    return figures, lines


def _alone_cost(lab: Lab, host: Any, rung: str, wait: int, settings: TransportSettings) -> int:
    """The rung's step, diagnose and verify run one at a time on a warm pool: requests spent."""
    from wuremote.engine.plan import rung_params

    tally = Tally(lab, host.name)
    client = open_transport(host, settings)  # the Runner's own transport settings: the same long polls
    run_id = "bench-alone"
    try:
        client.run_command("hostname", timeout=10)  # warm the pool
        before = tally.total
        for name, params in ((rung.partition(":")[0], rung_params(rung, host.policy)), ("diagnose", {}),
                             ("verify", {})):
            script = get_script(name)
            if script.meta.detached:
                _detached_one_by_one(client, name, params, run_id, wait)
            else:
                client.run_step(script, {"RunId": run_id, **params}, timeout=60)
        return tally.total - before
    finally:
        client.close()


def _detached_one_by_one(client: Any, step: str, params: dict[str, Any], run_id: str, wait: int) -> None:
    """detached-start, detached-poll (waiting on the host, as the walk does) until it ends, detached-cleanup."""
    import json

    from wuremote.contract.scripts import sha256_text

    payload = get_script(step).payload()
    start = client.run_step(get_script("detached-start"), {
        "RunId": run_id, "Step": step, "Payload": payload, "PayloadSha256": sha256_text(payload),
        "ParametersJson": json.dumps(params), "Restart": True}, timeout=60)
    state = str(start.facts.get("state") or "")
    percent = ""
    while state not in ("finished", "interrupted"):
        poll = client.run_step(get_script("detached-poll"), {
            "RunId": run_id, "Step": step, "TranscriptOffset": -1, "WaitSeconds": wait, "SeenState": state,
            "SeenPercent": percent}, timeout=60)
        state = str(poll.facts.get("state") or "")
        percent = "" if poll.facts.get("percent") is None else str(poll.facts.get("percent"))
        if poll.exit_code == 2:
            break
    client.run_step(get_script("detached-cleanup"), {"RunId": run_id, "Step": step}, timeout=60)


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--calls", type=int, default=10, help="warm calls per client (counts vary when a Receive returns early)")
    args = cli.parse_args()
    figures, lines = clients_side_by_side(args.calls)
    with tempfile.TemporaryDirectory(prefix="wuremote-bench-") as folder:
        rung_figures, rung_lines = rungs_in_a_run(Path(folder))
    for line in lines + rung_lines:
        print("  " + line)
    report("roundtrips", {"lab_time_scale": TIME_SCALE, "ladder_time_scale": LADDER_TIME_SCALE, "calls": args.calls,
                          "transport": "loopback settings (operation_timeout 1 s)", "auth": "basic over https",
                          "rung_scenarios": ",".join(RUNG_SCENARIOS)}, figures + rung_figures, args.json)


if __name__ == "__main__":
    main()
