"""install-kb never runs beside another install on its host (issue 16): another run's
install-updates, a Windows Installer installation or a servicing session holding CBS's exclusive
flag is waited for (bounded), never interrupted, and past the bound the host is refused in a line
naming what was running.  End to end through the lab, over PSRP and WinRS."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import held_clock, wait_for

from wuremote import events as ev
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner, RunSummary
from wuremote.lab.host import HostState, windows_utc
from wuremote.lab.lab import Lab

LAB_SCALE = 0.002
KB = "KB5068787"  # the manual-kb scenario's KB that installs only by hand
_INSTALL_KB_STATUS = re.compile(r"^c:\\programdata\\wuremote\\runs\\[^\\]+\\install-kb\\status\.json$")


def _other_run_installing(state: HostState) -> None:
    """install-updates of another run, running (its status file and its scheduled task say so)."""
    folder = "c:\\programdata\\wuremote\\runs\\other-run\\install-updates"
    state.files[f"{folder}\\status.json"] = json.dumps({
        "run_id": "other-run", "step": "install-updates", "state": "running", "queued": windows_utc(state.clock),
        "started": windows_utc(state.clock), "boot_utc": windows_utc(state.last_boot), "percent": 40,
        "exit_code": None, "finished": None, "error": ""}).encode("utf-8")
    state.scheduled_tasks["wuremote-other-run-install-updates"] = {"path": "\\wuremote\\", "state": "Running"}


def _other_run_finished(state: HostState) -> None:
    key = "c:\\programdata\\wuremote\\runs\\other-run\\install-updates\\status.json"
    status = json.loads(state.files[key].decode("utf-8"))
    status.update(state="finished", exit_code=0, percent=100, finished=windows_utc(state.clock))
    state.files[key] = json.dumps(status).encode("utf-8")
    state.scheduled_tasks["wuremote-other-run-install-updates"]["state"] = "Ready"


def _install_kb_running(state: HostState) -> bool:
    for key, data in list(state.files.items()):
        if _INSTALL_KB_STATUS.match(key) and json.loads(data.decode("utf-8-sig")).get("state") == "running":
            return True
    return False


def _repair(lab: Lab, transport: str, folder: Path) -> tuple[RunSummary, list[ev.Event]]:
    seen: list[ev.Event] = []
    summary = Runner(demo_hosts(lab, transport), demo_options(folder), subscribers=[seen.append]).run()
    return summary, seen


def _install_kb_facts(seen: list[ev.Event]) -> dict[str, Any]:
    finished = [e for e in seen if isinstance(e, ev.StepFinished) and e.step == "install-kb"]
    assert len(finished) == 1
    return finished[0].facts


@pytest.mark.parametrize("transport", ["psrp", "winrm"])
def test_install_kb_waits_for_another_runs_install_updates_then_installs(transport: str, tmp_path: Path) -> None:
    with Lab(hosts=1, scenario="manual-kb", time_scale=LAB_SCALE) as lab:
        host = lab.host(lab.endpoints[0].name)
        state = host.state
        lab.call(_other_run_installing, state)
        result: list[tuple[RunSummary, list[ev.Event]]] = []
        with held_clock(lab, host, lambda: _install_kb_running(state)) as clock:
            worker = threading.Thread(target=lambda: result.append(_repair(lab, transport, tmp_path)))
            worker.start()
            # install-kb's body began a wait while the other run's install-updates still ran: nothing installed yet.
            wait_for(lambda: bool(clock.waits), what="install-kb waiting")
            assert lab.call(lambda: KB not in state.installed_kbs)
            clock.release(lambda: _other_run_finished(state))
        worker.join(timeout=120)
        summary, seen = result[0]
    assert summary.outcomes[lab.endpoints[0].name] == "repaired", summary.causes
    facts = _install_kb_facts(seen)
    assert facts["waited_seconds"] >= 15 and "busy" not in facts
    assert KB in state.installed_kbs


@pytest.mark.parametrize("transport", ["psrp", "winrm"])
def test_install_kb_is_refused_past_the_bound_and_never_interrupts_the_installer(transport: str, tmp_path: Path) -> None:
    with Lab(hosts=1, scenario="manual-kb", time_scale=LAB_SCALE) as lab:
        state = lab.host(lab.endpoints[0].name).state
        lab.call(setattr, state, "msi_installing", True)  # another product's .msi install, holding _MSIExecute
        summary, seen = _repair(lab, transport, tmp_path)
        still_installing = lab.call(lambda: state.msi_installing)
        installed = lab.call(lambda: KB in state.installed_kbs)
    name = lab.endpoints[0].name
    assert summary.outcomes[name] == "needs-operator"
    assert ("install-kb refused: host busy (a Windows Installer installation (_MSIExecute) still running after "
            "1800 s: left alone (never stopped)") in summary.causes[name]
    assert _install_kb_facts(seen)["busy"] == ["a Windows Installer installation (_MSIExecute)"]
    assert still_installing and not installed
