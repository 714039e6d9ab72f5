"""Detached steps on the lab over the raw pypsrp client, and the update agent's outcome.

The steps are sent as the controller will send them: detached-start's payload through
add_script, the body's payload and sha256 as parameters, the exit code read back through
the PSHost's SetShouldExit.  Host conditions are set directly on the host model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import edit_one_byte, held_clock, in_reboot, psrp_client, psrp_pool, wait_for
from pypsrp.powershell import PowerShell, RunspacePool

from wuremote.contract.scripts import get_script, sha256_text
from wuremote.lab.agent import AgentOutcome, agent_outcome
from wuremote.lab.host import HostState, Service, default_services
from wuremote.lab.lab import Lab

TIME_SCALE = 0.0005  # DISM's 20 modelled minutes take 0.6 s


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=15, scenario="healthy", time_scale=TIME_SCALE) as running:
        yield running


def step_status(state: HostState, run_id: str, step: str) -> dict[str, Any]:
    """The step's status.json as the host holds it ({} before detached-start staged it); read on the lab's loop."""
    data = state.files.get(f"c:\\programdata\\wuremote\\runs\\{run_id}\\{step}\\status.json")
    return {} if data is None else json.loads(data.decode("utf-8-sig"))


def body_running(state: HostState, run_id: str, step: str, *, past: int = -1) -> Callable[[], bool]:
    """`when` for held_clock: the step's body runs (and has reported more than `past` percent)."""
    def now() -> bool:
        status = step_status(state, run_id, step)
        return status.get("state") == "running" and int(status.get("percent") or 0) > past
    return now




# --- the detached protocol --------------------------------------------------------------------
def test_dism_runs_detached_reports_progress_and_cleans_up(lab: Lab, on) -> None:
    steps, state = on(0)
    lab.call(setattr, state, "component_store", "repairable")
    percents, transcript, offset, facts = [], "", 0, {}

    def poll() -> dict[str, Any]:
        nonlocal transcript, offset, facts
        facts = steps.poll("dism", "run1", TranscriptOffset=offset)
        transcript += facts["transcript"]
        offset = facts["transcript_next_offset"]
        percents.append(facts["percent"])
        if facts["state"] != "finished":
            assert facts["state"] == "running" and facts["exit_code"] is None and facts["result"] is None
        return facts

    # DISM is held once it has reported a first percent, until the test has seen it there: the
    # cleanup's refusal and the mid-way poll never race DISM's (scaled) 20 minutes.
    with held_clock(lab, lab.host(lab.endpoints[0].name), when=body_running(state, "run1", "dism", past=0)):
        code, started = steps.start("dism", "run1")
        assert code == 0 and started["facts"]["attached"] is False
        assert started["facts"]["state"] in ("queued", "running")
        assert lab.call(lambda: state.scheduled_tasks["wuremote-run1-dism"]["state"]) == "Running"

        code, refused = steps.call("detached-cleanup", RunId="run1", Step="dism")
        assert code == 4 and refused["facts"]["state"] == "running"
        wait_for(lambda: 0 < poll()["percent"] < 100, what="dism seen mid-way")
    wait_for(lambda: poll()["state"] == "finished", what="dism finished")
    assert percents == sorted(percents) and any(0 < p < 100 for p in percents) and percents[-1] == 100
    assert facts["exit_code"] == 0
    assert facts["result"]["status"] == "ok" and facts["result"]["facts"]["corruption_repaired"] is True
    # the slices, whole lines while it ran, add up to the transcript on the host
    path = "c:\\programdata\\wuremote\\runs\\run1\\dism\\transcript.log"
    assert transcript == lab.call(lambda: state.files[path].decode("utf-8"))
    assert "VERBOSE: The restore operation completed successfully.\r\n" in transcript
    assert "Windows PowerShell transcript end" in transcript
    assert lab.call(lambda: state.component_store) == "healthy"

    code, cleaned = steps.call("detached-cleanup", RunId="run1", Step="dism")
    assert code == 0
    assert {"kind": "task-removed", "name": "wuremote-run1-dism"} in cleaned["changes"]
    assert "wuremote-run1-dism" not in lab.call(lambda: set(state.scheduled_tasks))
    assert steps.poll("dism", "run1")["state"] == "finished"  # status.json stays for the report


def test_second_start_reattaches_and_never_runs_twice(lab: Lab, on) -> None:
    steps, state = on(1)
    with held_clock(lab, lab.host(lab.endpoints[1].name), when=body_running(state, "run2", "verify")):  # verify runs on
        _, first = steps.start("verify", "run2")
        assert first["facts"]["state"] == "running" and first["facts"]["attached"] is False
        code, again = steps.start("verify", "run2")
        assert code == 0 and again["facts"]["attached"] is True
        assert again["messages"] == ["already running: re-attached"]
        assert again["facts"]["status"]["pid"] == first["facts"]["status"]["pid"]
    assert steps.wait_done("verify", "run2")["state"] == "finished"
    code, after = steps.start("verify", "run2")
    assert after["facts"]["attached"] is True and after["facts"]["state"] == "finished"
    assert after["messages"] == ["already finished; pass -Restart to run it again"]
    assert after["facts"]["status"]["started"] == first["facts"]["status"]["started"]


def test_reboot_mid_step_is_interrupted_never_success(lab: Lab, on) -> None:
    steps, state = on(2)
    host = lab.host(lab.endpoints[2].name)
    lab.call(setattr, state, "component_store", "repairable")
    mid_way = body_running(state, "run3", "dism", past=0)
    # DISM is held mid-way (the restart is not): the host restarts under a DISM that cannot have ended.
    with held_clock(lab, host, when=lambda: mid_way() and not in_reboot(host)()):
        steps.start("dism", "run3")
        wait_for(lambda: steps.poll("dism", "run3")["percent"] > 0)
        steps.close()
        assert lab.call(host.request_reboot)
        wait_for(lambda: lab.call(lambda: state.reboots == 1 and host.up.is_set()))

    steps, _ = on(2)
    facts = steps.poll("dism", "run3")
    assert facts["state"] == "interrupted" and facts["reason"] == "the host restarted while the step ran"
    assert facts["exit_code"] is None and facts["result"] is None
    # The same DISM started now on a host that stays up: once it has ended, the interrupted one
    # (further on when the held clock let go) would have ended too, had it survived the restart.
    control, control_state = on(14)
    lab.call(setattr, control_state, "component_store", "repairable")
    control.start("dism", "run3")
    assert control.wait_done("dism", "run3")["state"] == "finished"
    assert steps.poll("dism", "run3")["state"] == "interrupted"  # recorded by the first poll
    assert lab.call(lambda: state.component_store) == "repairable"
    _, again = steps.start("dism", "run3")
    assert again["facts"]["attached"] is True and again["facts"]["state"] == "interrupted"
    code, cleaned = steps.call("detached-cleanup", RunId="run3", Step="dism")
    assert code == 0


def test_payload_not_matching_its_hash_or_step_is_refused(on) -> None:
    steps, _ = on(3)
    payload = get_script("dism").payload()
    code, result = steps.call("detached-start", RunId="run4", Step="dism", Payload=edit_one_byte(payload),
                              PayloadSha256=sha256_text(payload))
    assert code == 1 and result["messages"] == ["payload does not match its SHA-256: not staged"]
    code, result = steps.start("dism", "run4", payload=get_script("boot-info").payload())
    assert code == 1 and "is not the detached step dism" in result["messages"][0]
    code, result = steps.call("detached-poll", RunId="run4", Step="dism")
    assert code == 2  # nothing staged


def test_payload_without_a_model_is_refused_like_any_unknown_script(endpoint_pool) -> None:
    ps = PowerShell(endpoint_pool)
    edited = edit_one_byte(get_script("dism").payload())
    ps.add_script(get_script("detached-start").payload())
    for name, value in dict(RunId="run5", Step="dism", Payload=edited, PayloadSha256=sha256_text(edited)).items():
        ps.add_parameter(name, value)
    ps.invoke()
    assert ps.had_errors and "no model for script 'dism'" in str(ps.streams.error[0])


@pytest.fixture
def endpoint_pool(lab: Lab) -> Iterator[RunspacePool]:
    with psrp_pool(lab.endpoints[4]) as pool:
        yield pool


# --- the bodies -------------------------------------------------------------------------------
def _break(state: HostState, condition: str) -> None:
    if condition == "download-cache":
        state.download_cache_corrupt = True
    elif condition == "wsus":
        state.update_source, state.wsus_reachable = "wsus", False
    elif condition == "clock":
        state.clock_skew_seconds = 450
    elif condition == "component-store":
        state.component_store = "repairable"


# verify's default categories select three of the catalog's updates (wuremote/lab/catalog.py: the
# cumulative update, a critical update and the removal tool's rollup); each fails on its own.
VERIFY_SELECTED = 3
VERIFY_CASES = [  # condition, -Install, exit code, failures (phase, hresult, kind)
    ("none", False, 0, []),
    ("download-cache", False, 1, [("download", "0x80070002", "agent")] * VERIFY_SELECTED),
    ("wsus", False, 7, [("search", "0x8024402C", "network")]),
    ("clock", False, 1, [("search", "0x80072F8F", "agent")]),
    ("component-store", False, 0, []),
    ("component-store", True, 1, [("install", "0x80073712", "agent")] * VERIFY_SELECTED),
]


def test_verify_exit_codes_and_hresults(lab: Lab, on) -> None:
    """One host per case, all started before any is polled: verify runs concurrently across hosts."""
    runs = []
    for index, (condition, install, _, _) in enumerate(VERIFY_CASES, start=5):
        steps, state = on(index)
        lab.call(_break, state, condition)
        code, _ = steps.start("verify", "run6", **({"Install": True} if install else {}))
        assert code == 0
        runs.append((steps, state))
    for (steps, state), (condition, _, exit_code, failures) in zip(runs, VERIFY_CASES):
        facts = steps.wait_done("verify", "run6")
        assert (condition, facts["exit_code"]) == (condition, exit_code)
        result = facts["result"]
        assert result["facts"]["as_system"] is True
        assert [(f["phase"], f["hresult"], f["kind"]) for f in result["facts"]["failures"]] == failures
        history = lab.call(lambda: list(state.update_history))
        assert [(h["event_id"], h["hresult"]) for h in history[: len(failures)]] == [
            ({"search": 25, "download": 31, "install": 20}[phase], code) for phase, code, _ in reversed(failures)]


def test_install_kb_pushed_package_3010_then_0(lab: Lab, on, tmp_path) -> None:
    steps, state = on(11)
    lab.call(setattr, state, "manual_kb", "KB5034439")
    package = tmp_path / "windows10.0-kb5034439-x64.msu"
    package.write_bytes(b"MSCF" + bytes(4096))
    remote = "C:\\ProgramData\\wuremote\\runs\\run7\\install-kb\\packages\\windows10.0-kb5034439-x64.msu"
    psrp_client(lab.endpoints[11]).copy(str(package), remote)

    steps.start("install-kb", "run7", KbId="KB5034439")
    facts = steps.wait_done("install-kb", "run7")
    assert facts["exit_code"] == 3010
    result = facts["result"]
    assert result["status"] == "reboot-required" and result["reboot_required"] is True
    assert result["changes"][0]["kind"] == "kb-installed"
    assert lab.call(lambda: "KB5034439" in state.installed_kbs and bool(state.pending_reboot))

    _, again = steps.start("install-kb", "run7", KbId="KB5034439")
    assert again["facts"]["attached"] is True  # a finished step is reported, not rerun, without -Restart
    code, restarted = steps.start("install-kb", "run7", restart=True, KbId="KB5034439")
    assert code == 0 and restarted["facts"]["attached"] is False
    facts = steps.wait_done("install-kb", "run7")
    assert facts["exit_code"] == 0 and facts["result"]["facts"]["already_installed"] is True


def test_dism_needs_source_then_repairs_with_one(lab: Lab, on) -> None:
    steps, state = on(3)
    lab.call(setattr, state, "component_store", "needs-source")
    steps.start("dism", "run8")
    facts = steps.wait_done("dism", "run8")
    assert facts["exit_code"] == 6
    result = facts["result"]["facts"]
    assert result["needs_source"] is True and result["hresult"] == "0x800F081F"

    # dism.ps1's -Source pattern takes no drive colon inside wim:<path>:<index>, so a share it is.
    lab.call(state.files.__setitem__, "\\\\media\\ws2022\\sources\\install.wim", b"MSWIM")
    steps.start("dism", "run9", Source="wim:\\\\media\\ws2022\\sources\\install.wim:1")
    facts = steps.wait_done("dism", "run9")
    assert facts["exit_code"] == 0 and facts["result"]["facts"]["limit_access"] is True
    assert lab.call(lambda: state.component_store) == "healthy"


def test_sfc_cannot_repair_until_the_component_store_is_healthy(lab: Lab, on) -> None:
    runs = []
    for index, store in ((12, "repairable"), (13, "healthy")):
        steps, state = on(index)
        lab.call(lambda: (setattr(state, "component_store", store), setattr(state, "system_files_corrupt", True)))
        steps.start("sfc", "run10")
        runs.append((steps, state))
    (broken, broken_state), (repairable, repairable_state) = runs
    facts = broken.wait_done("sfc", "run10")
    assert facts["exit_code"] == 6 and facts["result"]["facts"]["verdict"] == "corruption-not-repaired"
    assert lab.call(lambda: broken_state.system_files_corrupt)
    facts = repairable.wait_done("sfc", "run10")
    assert facts["exit_code"] == 3010 and facts["result"]["facts"]["verdict"] == "repaired"
    assert lab.call(lambda: not repairable_state.system_files_corrupt and bool(repairable_state.pending_reboot))


# --- the update agent -------------------------------------------------------------------------
def _state(**changes: Any) -> HostState:
    state = HostState(name="UNIT", services=default_services())
    for key, value in changes.items():
        setattr(state, key, value)
    return state


def _with_service(state: HostState, name: str, **changes: Any) -> HostState:
    for key, value in changes.items():
        setattr(state.services[name], key, value)
    return state


@pytest.mark.parametrize("state, expected", [
    (_state(), AgentOutcome(None, None, None)),
    (_state(update_source="wsus", wsus_reachable=False), AgentOutcome(0x8024402C, None, None)),
    (_state(update_source="wsus"), AgentOutcome(None, None, None)),
    (_state(clock_skew_seconds=301), AgentOutcome(0x80072F8F, None, None)),
    (_state(clock_skew_seconds=-600), AgentOutcome(None, None, None)),
    (_with_service(_state(), "bits", start_type="Disabled"), AgentOutcome(0x80070422, None, None)),
    (_with_service(_state(), "wuauserv", policy_start_type="Disabled"), AgentOutcome(0x80070422, None, None)),
    (_with_service(_state(), "cryptsvc", status="Stopped"), AgentOutcome(None, 0x80246008, None)),
    (_state(download_cache_corrupt=True), AgentOutcome(None, 0x80070002, None)),
    (_state(free_disk_gb=3.5), AgentOutcome(None, 0x80070070, None)),
    (_state(component_store="needs-source"), AgentOutcome(None, None, 0x80073712)),
    (_state(manual_kb="KB5034439"), AgentOutcome(None, None, 0x8024200B)),
    (_state(manual_kb="KB5034439", installed_kbs={"KB5034439"}), AgentOutcome(None, None, None)),
])
def test_agent_outcome_follows_host_conditions(state: HostState, expected: AgentOutcome) -> None:
    assert agent_outcome(state) == expected


def test_agent_outcome_antivirus_blocks_only_while_scanning() -> None:
    state = _state()
    state.antivirus.interferes = True
    assert agent_outcome(state).download == 0x80070005
    state.antivirus.realtime_enabled = False  # paused by av-pause
    assert agent_outcome(state).download is None


def test_agent_outcome_third_party_service_blocks_install_while_running() -> None:
    state = _state()
    state.services["contosofilter"] = Service("contosofilter", "Contoso File Filter Agent", "Automatic", "Running",
                                              company="Contoso Ltd.", role="third-party")
    assert agent_outcome(state).install == 0x80070020
    state.services["contosofilter"].status = "Stopped"  # clean boot
    assert agent_outcome(state).install is None


def test_agent_outcome_meets_every_broken_phase_and_search_first() -> None:
    state = _state(clock_skew_seconds=900, download_cache_corrupt=True, component_store="repairable")
    assert agent_outcome(state) == AgentOutcome(0x80072F8F, 0x80070002, 0x80073712)
