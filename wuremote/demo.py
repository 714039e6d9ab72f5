"""`wuremote demo`: an embedded lab with one broken host per built-in scenario, repaired for real.

Everything a user's run does happens here too: HTTPS to each emulated host, PSRP (or WinRS)
through the real clients, the shipped scripts, reboots, the journal and the artifacts.
Only the hosts are emulated, and their time runs fast.  The demo passes when every host
ends the way its scenario should (most repaired; a WSUS outage and a missing repair source
left for the operator with the reason named).
"""

from __future__ import annotations

import json
import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

from .contract.updates import DEFAULT_CATEGORIES
from .engine.reboot import RebootSettings
from .engine.runner import Runner, RunOptions, RunSummary
from .inventory import HostConfig
from .secret import Secret
from .transport import TransportSettings

LAB_TIME_SCALE = 0.002  # a 20-minute DISM lasts 2.4 s
# What each scenario should end as: the demo checks the run against it.
EXPECTED = {"wsus-unreachable": "needs-operator", "component-store-needs-source": "needs-operator",
            "disabled-services": "needs-operator"}
# With --install, every host whose updates work ends patched (the antivirus that blocks downloads
# stays paused until the install is over: wuremote/engine/walk.py HostWalk._repair).
EXPECTED_INSTALL = dict(EXPECTED)


def demo_hosts(lab, transport: str = "psrp", install: tuple[str, ...] = ()) -> list[HostConfig]:  # type: ignore[no-untyped-def]
    """Inventory entries for a running lab, opting in to everything the fleet needs (and installing ``install``)."""
    hosts = []
    for endpoint in lab.endpoints:
        fixture = _fixture(endpoint.scenario)
        kb = (fixture.get("expect") or {}).get("install_kb")
        hosts.append(HostConfig(
            name=endpoint.name, address=endpoint.address, port=endpoint.port, scheme=endpoint.scheme,
            transport=transport, auth="basic", username=endpoint.username, password=Secret(endpoint.password),
            ca_file=endpoint.ca_file, opt_in=("av-pause", "clean-boot"), kb=kb,
            kb_url=f"https://download.lab.invalid/{kb}.msu" if kb else None,
            vendor_av={"pause_command": "C:\\Program Files\\Contoso\\Endpoint\\avctl.exe", "pause_arguments": ["pause"],
                       "resume_command": "C:\\Program Files\\Contoso\\Endpoint\\avctl.exe", "resume_arguments": ["resume"]},
            groups=(endpoint.scenario,), source="demo", install=install,
        ))
    return hosts


def _fixture(scenario: str) -> dict[str, Any]:
    resource = files("wuremote.lab").joinpath("fixtures").joinpath(f"{scenario}.json")
    loaded = json.loads(resource.read_text(encoding="utf-8")) if resource.is_file() else {}
    return loaded if isinstance(loaded, dict) else {}


def demo_options(state_dir: Path, command: str = "repair") -> RunOptions:
    return RunOptions(command=command, forks=32, state_dir=state_dir, poll_interval=0.05, time_scale=LAB_TIME_SCALE * 20,
                      host_timeout=300.0,
                      transport=TransportSettings(connect_timeout=5.0, operation_timeout=5, read_timeout=15, open_retries=1,
                                                  backoff=0.1),
                      reboot=RebootSettings(poll_interval=0.1, shutdown_timeout=30, boot_timeout=30, readiness_timeout=30,
                                            stability_window=0.2, probe_timeout=10))


def check_expected(summary: RunSummary, scenarios: dict[str, str], *, install: bool = False) -> list[str]:
    """Hosts that did not end as their scenario should, as readable lines."""
    wrong = []
    for host, scenario in scenarios.items():
        if install:
            expected = EXPECTED_INSTALL.get(scenario, "patched")
        else:
            expected = EXPECTED.get(scenario, "healthy" if scenario == "healthy" else "repaired")
        if summary.outcomes.get(host) != expected:
            wrong.append(f"{host} ({scenario}): {summary.outcomes.get(host)}: {summary.causes.get(host)}")
    return wrong


def run_demo(state_dir: Path | None = None, transport: str = "psrp", plain: bool = False, install: bool = False) -> int:
    from rich.console import Console

    from . import events as ev
    from .lab.lab import Lab
    from .output.live import LiveView, PlainView

    console = Console(soft_wrap=not sys.stdout.isatty())  # piped: whole lines, never wrapped at 80 columns
    root = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="wuremote-demo-"))
    with Lab(scenario="mixed", hosts=13, time_scale=LAB_TIME_SCALE) as lab:
        scenarios = {e.name: e.scenario for e in lab.endpoints}
        console.print(f"[bold]wuremote demo[/bold]: {len(lab.endpoints)} emulated Windows hosts on 127.0.0.1 "
                      f"(HTTPS, {transport.upper()}), one per broken-update scenario")
        hosts = demo_hosts(lab, transport, DEFAULT_CATEGORIES if install else ())
        if plain or not sys.stdout.isatty():
            view = PlainView(sys.stdout)

            def plain_line(event: ev.Event) -> None:
                # The run's own exit code (1 whenever a host needs the operator) is not the demo's: the demo
                # passes when each host ends as its scenario should, and says so below.
                if not isinstance(event, ev.RunFinished):
                    view(event)

            runner = Runner(hosts, demo_options(root), subscribers=[plain_line])
            summary = runner.run()
        else:
            live = LiveView(console, [h.name for h in hosts], title="wuremote demo")
            runner = Runner(hosts, demo_options(root), subscribers=[live])
            with live:
                summary = runner.run()
    for host, scenario in scenarios.items():
        console.print(f"  {host}  {scenario:30} {summary.outcomes[host]:15} {summary.causes[host]}", markup=False,
                      highlight=False)
    wrong = check_expected(summary, scenarios, install=install)
    console.print(f"artifacts: {summary.run_dir}  (report.html, report.json, junit.xml, transcripts/)", markup=False, highlight=False)
    if wrong:
        console.print("[red]demo: these hosts did not end as their scenario should (exit 1):[/red]")
        for line in wrong:
            console.print("  " + line, markup=False)
        return 1
    console.print("[green]demo: every host ended as its scenario should (exit 0)[/green]")
    return 0
