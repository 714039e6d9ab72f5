"""The lab's model of install-updates against its catalog (issue 16, items 2, 4 and 6): what a search
selects, what each update's installation answers under each host condition, the second wave after
the first restart, and an install that never runs beside another one or on top of pending servicing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Steps

from wuremote.lab.host import HostState, Service, windows_utc
from wuremote.lab.lab import Lab

TIME_SCALE = 0.0005


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=10, scenario="healthy", time_scale=TIME_SCALE) as running:
        yield running


def run(steps: Steps, run_id: str, **params: Any) -> tuple[int, dict[str, Any]]:
    code, _ = steps.start("install-updates", run_id, **params)
    assert code == 0
    facts = steps.wait_done("install-updates", run_id)
    return facts["exit_code"], facts["result"]


def kbs(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["kb"] for entry in entries]


def test_search_selects_by_category_optional_accept_and_reject(lab: Lab, on) -> None:
    steps, _ = on(0)
    code, result = run(steps, "sel1", CategoryNames=["*"], SearchOnly=True)
    facts = result["facts"]
    assert code == 0
    # Supersedence: the October cumulative update is not offered beside November's.
    assert "KB5066782" not in kbs(facts["selected"]) + kbs(facts["skipped"])
    # The optional preview is skipped unless asked; the second wave is not offered before the restart.
    assert kbs(facts["selected"]) == ["KB5068787", "KB5068862", "KB890830", "KB2267602"]
    assert [(s["kb"], s["reason"]) for s in facts["skipped"]] == [("KB5067931", "optional")]
    _, result = run(steps, "sel2", CategoryNames=["*"], IncludeOptional=True, AcceptKb=["KB5067931", "KB890830"],
                    RejectKb=["KB890830"], SearchOnly=True)
    assert result["facts"]["pending"] == ["KB5067931"]
    assert result["facts"]["last_success_utc"]


@pytest.mark.parametrize("condition, hresult", [
    ("download_cache_stale", "0x80070002"),
    ("component_store", "0x80073712"),
    ("third_party", "0x80070020"),
    ("manual_kb", "0x8024200B"),
])
def test_each_condition_fails_the_install_with_its_hresult(lab: Lab, on, condition: str, hresult: str) -> None:
    index = 1 + ["download_cache_stale", "component_store", "third_party", "manual_kb"].index(condition)
    steps, state = on(index)

    def breaks() -> None:
        if condition == "download_cache_stale":
            state.download_cache_stale = True
        elif condition == "component_store":
            state.component_store = "repairable"
        elif condition == "third_party":
            state.services["fabrikamsync"] = Service("fabrikamsync", "Fabrikam File Sync", "Automatic", "Running",
                                                     company="Fabrikam, Inc.", role="third-party")
        else:
            state.manual_kb = "KB5068787"

    lab.call(breaks)
    code, result = run(steps, f"fail{index}", CategoryNames=["Security Updates"])
    assert code == 1
    entry = result["facts"]["results"][0]
    assert (entry["kb"], entry["result_code"], entry["hresult"]) == ("KB5068787", 4, hresult)
    assert f"KB5068787 install failed: {hresult}" in result["messages"]
    assert result["facts"]["pending"] == ["KB5068787"]
    assert lab.call(lambda: state.update_history[0]["hresult"]) == hresult  # the agent records it (event 20)


def test_the_second_wave_appears_only_after_the_restart(lab: Lab, on) -> None:
    steps, state = on(5)
    code, result = run(steps, "wave1")
    assert code == 3010 and result["reboot_required"] is True
    assert kbs(result["facts"]["results"]) == ["KB5068787", "KB5068862"]
    code, result = run(steps, "wave1b", SearchOnly=True)
    assert result["facts"]["pending"] == []  # the .NET update waits for the restart
    lab.call(lab.host(lab.endpoints[5].name).boot)
    code, result = run(steps, "wave2")
    assert code == 0 and kbs(result["facts"]["results"]) == ["KB5068794"]
    assert lab.call(lambda: dict(state.install_counts)) == {"KB5068787": 1, "KB5068862": 1, "KB5068794": 1}


def _another_install_running(state: HostState, run_id: str) -> None:
    """An install-kb task of another run, running (its status file and its scheduled task say so)."""
    folder = f"c:\\programdata\\wuremote\\runs\\{run_id}\\install-kb"
    state.files[f"{folder}\\status.json"] = json.dumps({
        "run_id": run_id, "step": "install-kb", "state": "running", "queued": windows_utc(state.clock),
        "started": windows_utc(state.clock), "boot_utc": windows_utc(state.last_boot), "percent": 40,
        "exit_code": None, "finished": None, "error": ""}).encode("utf-8")
    state.scheduled_tasks[f"wuremote-{run_id}-install-kb"] = {"path": "\\wuremote\\", "state": "Running"}


def test_another_install_is_waited_for_bounded_then_refused_and_never_stopped(lab: Lab, on) -> None:
    steps, state = on(6)
    lab.call(_another_install_running, state, "other-run")
    code, result = run(steps, "mine", WaitSeconds=60)
    assert code == 4
    assert result["facts"]["busy"] == ["install-kb of run other-run"]
    assert "still running after 60 s: left alone (never stopped)" in result["messages"][0]
    assert lab.call(lambda: state.scheduled_tasks["wuremote-other-run-install-kb"]["state"]) == "Running"
    assert lab.call(lambda: dict(state.install_counts)) == {}


def test_servicing_pending_a_restart_is_refused_not_installed_over(lab: Lab, on) -> None:
    steps, state = on(7)
    lab.call(setattr, state, "servicing_in_progress", True)
    code, result = run(steps, "pend1")
    assert code == 4 and "pending a reboot" in result["messages"][0]
    assert lab.call(lambda: dict(state.install_counts)) == {}
