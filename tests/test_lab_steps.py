"""The lab's models of wuremote's non-detached steps, driven by the raw pypsrp client (and pywinrm once).

Each step runs as the orchestrator will send it: the assembled payload with add_script and
its parameters, the exit code read through the PSHost's SetShouldExit.  The tests check what
the step changes on the host model, its result and exit code, that running it again is
safe, and that fail-safes restore a host the controller never comes back to.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import held_clock, in_reboot, port_open, psrp_wsman, wait_for, winrm_protocol
from pypsrp.complex_objects import GenericComplexObject
from pypsrp.host import PSHost
from pypsrp.powershell import PowerShell, RunspacePool

from wuremote.contract import scripts
from wuremote.lab.host import GIB, HostState
from wuremote.lab.lab import Lab
from wuremote.lab.scenarios import FIXTURE_SCENARIOS, fixture
from wuremote.transport.winrm import stdin_for

TIME_SCALE = 0.001
# One host per purpose (name prefix -> scenario); each test changes only its own hosts.
HOSTS = {**{f"fx-{name}-": name for name in FIXTURE_SCENARIOS}, **{
    "lowdisk": "low-disk", "skew": "clock-skew", "tshoot": "corrupt-download-cache", "cache": "corrupt-download-cache",
    "stopped": "stopped-services", "disabled": "disabled-services", "busy": "servicing-in-progress",
    "full": "healthy", "wedged": "healthy", "avvendor": "av-interference", "defender": "healthy", "tamper": "healthy",
    "conflict": "third-party-service-conflict", "bootfs": "third-party-service-conflict", "lock": "healthy",
    "restart": "healthy", "winrs": "healthy", "user": "healthy",
}}


def _fleet_toml() -> str:
    groups = []
    for prefix, scenario in HOSTS.items():
        group = f'[[hosts]]\nscenario = "{scenario}"\nname = "{prefix}"\n'
        if prefix == "user":
            group += "[hosts.state]\nis_admin = false\n"
        groups.append(group)
    return "\n".join(groups)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    path = tmp_path_factory.mktemp("steps") / "fleet.toml"
    path.write_text(_fleet_toml(), encoding="utf-8")
    with Lab(scenario=path, time_scale=TIME_SCALE) as running:
        yield running
        for (name, generation), (pool, _) in _POOLS.items():
            if running.host(name).generation == generation:  # a pool of an earlier boot is gone with it
                pool.close()
        _POOLS.clear()


# One open runspace pool per host and boot, as the orchestrator keeps one per host.
_POOLS: dict[tuple[str, int], tuple[RunspacePool, PSHost]] = {}


def _name(text: str) -> str:
    """PSRP encodes '_x' in property names as '_x005F_x'; a real host's serializer does the same."""
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), text)


def plain(value: Any) -> Any:
    """A deserialized result as plain dicts and lists."""
    if isinstance(value, GenericComplexObject):
        props = {**value.adapted_properties, **value.extended_properties}
        return {_name(str(k)): plain(v) for k, v in props.items()}
    if isinstance(value, dict):
        return {_name(str(k)): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def run_step(lab: Lab, host_name: str, step: str, **params: Any) -> tuple[int, dict[str, Any]]:
    """Runs one step payload over PSRP; returns the exit code and the result object."""
    key = (host_name, lab.host(host_name).generation)
    if key not in _POOLS:
        shell_host = PSHost(None, None, False, "test", None, None, "1.0")
        pool = RunspacePool(psrp_wsman(lab.endpoint(host_name)), host=shell_host)
        pool.open()
        _POOLS[key] = (pool, shell_host)
    pool, shell_host = _POOLS[key]
    shell_host.rc = None
    ps = PowerShell(pool)
    ps.add_script(scripts.get_script(step).payload())
    ps.add_parameter("RunId", params.pop("RunId", "run-1"))
    for name, value in params.items():
        ps.add_parameter(name, value)
    output = ps.invoke()
    ps.close()
    assert ps.streams.error == [], [str(e) for e in ps.streams.error]
    [result] = [plain(o) for o in output]
    code = shell_host.rc or 0
    assert result["exit_code"] == code and result["step"] == step
    return code, result


def state(lab: Lab, host_name: str) -> HostState:
    return lab.host(host_name).state


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


# --- diagnose ------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", FIXTURE_SCENARIOS)
def test_diagnose_on_a_fresh_host_answers_its_fixture(lab: Lab, scenario: str) -> None:
    expected = fixture(scenario)["facts"]
    code, result = run_step(lab, f"fx-{scenario}-01", "diagnose", ControllerUtc=now_utc())
    facts = result["facts"]
    assert code == 0 and result["status"] == "ok"
    assert set(facts) == set(expected)
    for group in ("roles", "services", "policy_readable", "pending_reboot", "servicing", "update_source", "antivirus",
                  "elevated", "unexpected_shutdowns_30d", "errors"):
        assert facts[group] == expected[group], group
    assert {k: v for k, v in facts["os"].items() if k != "last_boot_utc"} == \
        {k: v for k, v in expected["os"].items() if k != "last_boot_utc"}
    assert facts["disk"] == expected["disk"]
    assert facts["folders"] == expected["folders"]
    assert facts["troubleshooter"]["available"] == expected["troubleshooter"]["available"]
    assert facts["troubleshooter"]["path"] == expected["troubleshooter"]["path"].replace("%SystemRoot%", "C:\\Windows")
    clock = expected["clock"]
    assert facts["clock"]["skew_seconds"] == pytest.approx(clock["skew_seconds"], abs=2.0)
    assert {k: facts["clock"][k] is None for k in ("source", "last_sync", "w32tm_exit_code")} == \
        {k: clock[k] is None for k in ("source", "last_sync", "w32tm_exit_code")}
    assert facts["clock"]["w32time_state"] == clock["w32time_state"]
    # the failures keep their order, codes and messages; their times move with the lab's clock
    assert [{k: v for k, v in f.items() if k != "time_utc"} for f in facts["update_failures"]] == \
        [{k: v for k, v in f.items() if k != "time_utc"} for f in expected["update_failures"]]


def test_diagnose_in_a_session_without_admin_token_says_so(lab: Lab) -> None:
    code, result = run_step(lab, "user01", "diagnose")
    assert code == 0
    assert result["facts"]["elevated"] is False and result["facts"]["clock"]["skew_seconds"] is None
    assert result["messages"] == ["session is not elevated: repair steps will refuse (exit 5)"]


@pytest.mark.parametrize("step", ["cleanup", "sync-time", "troubleshooter", "reset-components", "av-pause", "av-resume",
                                  "clean-boot", "clean-boot-restore", "lock", "restart"])
def test_repair_steps_refuse_without_admin_token(lab: Lab, step: str) -> None:
    before = repr(state(lab, "user01"))
    params = {"Reason": "test"} if step == "restart" else {}
    code, result = run_step(lab, "user01", step, **params)
    assert code == 5 and result["status"] == "not-elevated" and result["changes"] == []
    assert repr(state(lab, "user01")) == before
    assert not lab.host("user01").rebooting


# --- cleanup -------------------------------------------------------------------------------------
def test_cleanup_frees_enough_space_on_a_low_disk_and_then_nothing_more(lab: Lab) -> None:
    code, result = run_step(lab, "lowdisk01", "cleanup")
    facts = result["facts"]
    assert code == 0 and result["status"] == "ok"
    assert facts["bytes_freed"] == facts["free_bytes_after"] - facts["free_bytes_before"] >= 12 * GIB
    assert {c["kind"] for c in result["changes"]} == {"component-store-cleanup", "temp-removed"}
    _, diagnosed = run_step(lab, "lowdisk01", "diagnose")
    assert diagnosed["facts"]["disk"]["low"] is False

    code, again = run_step(lab, "lowdisk01", "cleanup")
    assert code == 0 and again["facts"]["bytes_freed"] == 0


def test_cleanup_skips_the_component_store_while_servicing_is_pending(lab: Lab) -> None:
    before = state(lab, "busy01").free_disk_gb
    code, result = run_step(lab, "busy01", "cleanup", SkipComponentStore=False)
    assert code == 0
    assert result["facts"]["component_store"] == "skipped: servicing pending a reboot"
    assert result["messages"] == ["component-store cleanup skipped: pending.xml present, reboot first"]
    assert "component-store-cleanup" not in [c["kind"] for c in result["changes"]]
    assert state(lab, "busy01").free_disk_gb - before < 1  # temp files only


# --- sync-time -----------------------------------------------------------------------------------
def test_sync_time_starts_w32time_and_removes_the_skew(lab: Lab) -> None:
    host = state(lab, "skew01")
    source = host.time_source
    code, result = run_step(lab, "skew01", "sync-time", ControllerUtc=now_utc())
    facts = result["facts"]
    assert code == 0 and result["status"] == "ok"
    assert facts["skew_before_seconds"] == pytest.approx(5400, abs=2)
    assert abs(facts["skew_after_seconds"]) < 2 and abs(host.clock_skew_seconds) < 1
    assert result["changes"] == [{"kind": "service-state", "name": "w32time", "from": "Stopped", "to": "Running"}]
    assert host.services["w32time"].status == "Running"
    assert facts["domain_member"] is True and host.time_source == source  # the NT5DS hierarchy is left alone
    assert result["messages"] == ["domain member: time configuration left to the domain hierarchy"]

    code, again = run_step(lab, "skew01", "sync-time", ControllerUtc=now_utc())
    assert code == 0 and again["changes"] == []
    _, diagnosed = run_step(lab, "skew01", "diagnose", ControllerUtc=now_utc())
    assert abs(diagnosed["facts"]["clock"]["skew_seconds"]) < 2
    assert diagnosed["facts"]["clock"]["source"] == source and diagnosed["facts"]["clock"]["last_sync"]


# --- troubleshooter ------------------------------------------------------------------------------
def test_troubleshooter_reports_what_it_finds_and_repairs_nothing(lab: Lab) -> None:
    code, result = run_step(lab, "tshoot01", "troubleshooter")
    assert code == 0 and result["status"] == "ok" and result["changes"] == []
    causes = {c["id"]: c["status"] for c in result["facts"]["root_causes"]}
    assert causes["RC_DataStore"] == "Not Fixed" and causes["RC_WUServiceStopped"] == "Not Detected"
    assert "Potential Windows Update Database error detected" in result["messages"][0]
    assert state(lab, "tshoot01").download_cache_corrupt  # left for reset-components

    lab.call(lambda: setattr(state(lab, "tshoot01"), "troubleshooter_available", False))
    code, retired = run_step(lab, "tshoot01", "troubleshooter")
    assert code == 2 and retired["status"] == "not-applicable"
    assert "use reset-components instead" in retired["messages"][0]


# --- reset-components ----------------------------------------------------------------------------
def test_reset_refuses_while_servicing_runs(lab: Lab) -> None:
    before = repr(state(lab, "busy01").services)
    code, result = run_step(lab, "busy01", "reset-components")
    assert code == 4 and result["status"] == "failed" and result["changes"] == []
    assert "nothing was changed" in result["messages"][0]
    assert repr(state(lab, "busy01").services) == before


def test_gentle_reset_clears_a_corrupt_download_cache_and_keeps_two_backups(lab: Lab) -> None:
    host = state(lab, "cache01")
    code, result = run_step(lab, "cache01", "reset-components")
    assert code == 0 and result["status"] == "ok" and result["reboot_required"] is False
    assert result["facts"]["reboot_recommended"] is True
    assert not host.download_cache_corrupt
    moved = [c for c in result["changes"] if c["kind"] == "folder-moved"]
    assert [c["path"] for c in moved] == ["C:\\Windows\\SoftwareDistribution\\DataStore",
                                          "C:\\Windows\\SoftwareDistribution\\Download"]
    assert re.fullmatch(r"C:\\Windows\\SoftwareDistribution\\Download\.wuremote-\d{8}T\d{6}Z", moved[1]["backup"])
    assert all(host.services[n].status == "Running" for n in ("wuauserv", "bits", "cryptsvc", "msiserver"))
    assert result["facts"]["start_types_after"] == result["facts"]["start_types_before"]

    for _ in range(2):
        code, again = run_step(lab, "cache01", "reset-components")
        assert code == 0 and again["facts"]["start_types_after"] == result["facts"]["start_types_after"]
    backups = [k for k in host.folders if "Download.wuremote-" in k]
    assert len(backups) == 2
    assert [c["kind"] for c in again["changes"]].count("backup-pruned") == 2  # one DataStore, one Download


def test_full_reset_clears_catroot2_too(lab: Lab) -> None:
    host = state(lab, "full01")
    lab.call(lambda: setattr(host, "catroot_corrupt", True))
    code, result = run_step(lab, "full01", "reset-components", Level="full")
    assert code == 0 and not host.catroot_corrupt
    assert [c["path"] for c in result["changes"] if c["kind"] == "folder-moved"] == [
        "C:\\Windows\\SoftwareDistribution", "C:\\Windows\\System32\\catroot2", "C:\\ProgramData\\Microsoft\\Network\\Downloader"]
    _, diagnosed = run_step(lab, "full01", "diagnose")
    assert diagnosed["facts"]["folders"]["wuremote_backups"][0].startswith("SoftwareDistribution.wuremote-")
    assert diagnosed["facts"]["folders"]["catroot2"]["exists"]


def test_reset_starts_stopped_services(lab: Lab) -> None:
    code, result = run_step(lab, "stopped01", "reset-components")
    assert code == 0
    started = {c["name"] for c in result["changes"] if c["kind"] == "service-state" and c["to"] == "Running"}
    assert {"wuauserv", "bits", "cryptsvc"} <= started
    assert all(state(lab, "stopped01").services[n].status == "Running" for n in ("wuauserv", "bits", "cryptsvc"))


def test_reset_repairs_a_local_disable_and_reports_a_policy_one(lab: Lab) -> None:
    host = state(lab, "disabled01")
    code, result = run_step(lab, "disabled01", "reset-components")
    assert code == 0
    assert {"kind": "service-start-type", "name": "bits", "from": "Disabled", "to": "Manual",
            "reason": "disabled without a policy"} in result["changes"]
    assert host.services["bits"].start_mode == "Manual" and host.services["bits"].status == "Running"
    assert result["facts"]["policy_disabled"] == ["wuauserv"]
    assert "wuauserv is disabled by Group Policy: fix the policy; left as it is" in result["messages"]
    assert host.services["wuauserv"].start_mode == "Disabled" and host.services["wuauserv"].status == "Stopped"

    code, again = run_step(lab, "disabled01", "reset-components")
    assert code == 0 and not [c for c in again["changes"] if c["kind"] == "service-start-type"]


def test_reset_with_a_service_that_will_not_stop_moves_nothing_and_leaves_services_running(lab: Lab) -> None:
    host = state(lab, "wedged01")
    lab.call(lambda: setattr(host.services["bits"], "stop_refuses", True))
    folders = set(host.folders)
    code, result = run_step(lab, "wedged01", "reset-components", StopTimeoutSeconds=5)
    assert code == 1 and result["status"] == "failed"
    assert "reset stopped: bits did not stop within 5 s (state StopPending); nothing was moved" in result["messages"]
    assert set(host.folders) == folders
    assert all(host.services[n].status == "Running" for n in ("wuauserv", "bits", "cryptsvc"))


# --- av-pause / av-resume ------------------------------------------------------------------------
VENDOR_TOOL = "C:\\Program Files\\Contoso\\Endpoint\\avctl.exe"


def test_vendor_pause_then_resume(lab: Lab) -> None:
    host = state(lab, "avvendor01")
    vendor = {"VendorPauseCommand": VENDOR_TOOL, "VendorPauseArguments": ["/pause"],
              "VendorResumeCommand": VENDOR_TOOL, "VendorResumeArguments": ["/resume"]}
    code, result = run_step(lab, "avvendor01", "av-pause", **vendor)
    assert code == 0 and result["status"] == "ok"
    assert [c["kind"] for c in result["changes"]] == ["failsafe-registered", "vendor-pause"]
    assert not host.antivirus.realtime_enabled
    task = host.scheduled_tasks["wuremote-failsafe-av"]
    assert task["deadline_utc"] == result["facts"]["deadline_utc"]

    code, again = run_step(lab, "avvendor01", "av-pause", **vendor)
    assert code == 0 and again["facts"]["already_paused"] is True and again["changes"] == []

    code, resumed = run_step(lab, "avvendor01", "av-resume")
    assert code == 0 and resumed["facts"]["failsafe_cancelled"] is True
    assert resumed["changes"][0]["kind"] == "vendor-resume" and resumed["changes"][0]["exit_code"] == 0
    assert host.antivirus.realtime_enabled and "wuremote-failsafe-av" not in host.scheduled_tasks and not host.failsafe

    code, nothing = run_step(lab, "avvendor01", "av-resume")
    assert code == 0 and nothing["messages"] == ["nothing was paused by wuremote"] and nothing["changes"] == []


def test_vendor_command_must_exist_and_come_with_its_resume(lab: Lab) -> None:
    code, result = run_step(lab, "avvendor01", "av-pause", VendorPauseCommand="C:\\nope\\x.exe", VendorResumeCommand=VENDOR_TOOL)
    assert code == 1 and "must be the full path of an existing executable" in result["messages"][0]
    code, result = run_step(lab, "avvendor01", "av-pause", VendorPauseCommand=VENDOR_TOOL)
    assert code == 1 and "needs its resume command" in result["messages"][0]
    assert state(lab, "avvendor01").antivirus.realtime_enabled and not state(lab, "avvendor01").failsafe


def test_defender_pause_is_restored_by_the_failsafe_when_no_resume_comes(lab: Lab) -> None:
    host = state(lab, "defender01")
    # The fail-safe's wait for its deadline (10 minutes, 0.6 s here) ends when the test has looked.
    with held_clock(lab, lab.host("defender01"), when=lambda: "av" in host.failsafe):
        code, result = run_step(lab, "defender01", "av-pause", FailSafeMinutes=10)
        assert code == 0 and {"kind": "defender-realtime", "from": "on", "to": "off"} in result["changes"]
        assert not host.antivirus.defender_realtime and host.failsafe["av"]["defender_paused"] is True
    wait_for(lambda: host.antivirus.defender_realtime)
    assert "av" not in host.failsafe
    code, resumed = run_step(lab, "defender01", "av-resume")
    assert code == 0 and resumed["messages"] == ["nothing was paused by wuremote"]
    assert resumed["facts"]["failsafe_cancelled"] is True and "wuremote-failsafe-av" not in host.scheduled_tasks


def test_tamper_protection_means_could_not_pause_and_nothing_left_paused(lab: Lab) -> None:
    host = state(lab, "tamper01")
    lab.call(lambda: setattr(host.antivirus, "tamper_protection", True))
    code, result = run_step(lab, "tamper01", "av-pause")
    assert code == 1 and result["status"] == "failed"
    assert result["messages"] == ["could not pause Defender: real-time protection is still on (tamper protection ignores the change)"]
    assert host.antivirus.defender_realtime and not host.failsafe and "wuremote-failsafe-av" not in host.scheduled_tasks

    lab.call(lambda: setattr(host.antivirus, "realtime_enabled", False))
    code, result = run_step(lab, "tamper01", "av-pause")
    assert code == 2 and result["status"] == "not-applicable" and not host.scheduled_tasks


# --- clean-boot / clean-boot-restore -------------------------------------------------------------
def test_clean_boot_disables_the_third_party_service_and_restore_puts_it_back(lab: Lab) -> None:
    host = state(lab, "conflict01")
    code, listed = run_step(lab, "conflict01", "clean-boot", ListOnly=True)
    assert code == 0 and [s["name"] for s in listed["facts"]["services"]] == ["fabrikamsync"]
    assert host.services["fabrikamsync"].start_mode == "Automatic" and not host.failsafe

    code, excluded = run_step(lab, "conflict01", "clean-boot", ExcludeServices=["FabrikamSync"])
    assert code == 0 and excluded["facts"]["services"] == [] and excluded["changes"] == []

    code, result = run_step(lab, "conflict01", "clean-boot")
    assert code == 3010 and result["status"] == "reboot-required" and result["reboot_required"] is True
    assert result["changes"] == [{"kind": "service-start-type", "name": "fabrikamsync", "from": "Automatic", "to": "Disabled"}]
    assert host.services["fabrikamsync"].start_mode == "Disabled"
    assert all(s.start_mode != "Disabled" for n, s in host.services.items() if n != "fabrikamsync")
    assert "wuremote-failsafe-clean-boot" in host.scheduled_tasks

    code, again = run_step(lab, "conflict01", "clean-boot")
    assert code == 0 and again["changes"] == [] and "already active" in again["messages"][0]

    code, restored = run_step(lab, "conflict01", "clean-boot-restore")
    assert code == 0 and restored["facts"]["failsafe_cancelled"] is True
    assert host.services["fabrikamsync"].start_mode == "Automatic" and not host.failsafe
    assert "wuremote-failsafe-clean-boot" not in host.scheduled_tasks
    code, nothing = run_step(lab, "conflict01", "clean-boot-restore")
    assert code == 0 and nothing["messages"] == ["no clean boot recorded by wuremote"]


def test_clean_boot_keeps_protected_roles(lab: Lab) -> None:
    code, result = run_step(lab, "fx-av-interference-01", "clean-boot", ListOnly=True)
    assert code == 0 and result["facts"]["services"] == []
    assert [(s["name"], s["kept_because"]) for s in result["facts"]["kept"]] == [("contosoav", "protected role (edr)")]


def test_clean_boot_failsafe_restores_at_the_first_boot_after_its_deadline(lab: Lab) -> None:
    host_model = lab.host("bootfs01")
    host = host_model.state
    code, _ = run_step(lab, "bootfs01", "clean-boot", FailSafeMinutes=2880)
    assert code == 3010

    def jump_past_deadline_and_restart() -> None:
        host.clock_skew_seconds += 3 * 86400  # the host was off longer than the deadline
        host_model.request_reboot(0)

    lab.call(jump_past_deadline_and_restart)
    wait_for(lambda: host.reboots == 1 and port_open(lab.endpoint("bootfs01")))
    assert host.services["fabrikamsync"].start_mode == "Automatic" and host.services["fabrikamsync"].status == "Running"
    assert "clean-boot" not in host.failsafe


# --- lock ----------------------------------------------------------------------------------------
def test_lock_take_release_show(lab: Lab) -> None:
    code, taken = run_step(lab, "lock01", "lock", RunId="run-a")
    assert code == 0 and taken["facts"]["holder"]["run_id"] == "run-a"
    code, renewed = run_step(lab, "lock01", "lock", RunId="run-a")
    assert code == 0 and renewed["facts"]["holder"]["taken_utc"] == taken["facts"]["holder"]["taken_utc"]

    code, refused = run_step(lab, "lock01", "lock", RunId="run-b")
    assert code == 4 and refused["messages"][0].startswith("host is locked by run run-a (lease of 240 min, renewed ")
    code, _ = run_step(lab, "lock01", "lock", RunId="run-b", Action="release")
    assert code == 4 and state(lab, "lock01").lock["run_id"] == "run-a"
    code, shown = run_step(lab, "lock01", "lock", RunId="", Action="show")
    assert code == 0 and shown["facts"]["free"] is False

    code, released = run_step(lab, "lock01", "lock", RunId="run-a", Action="release")
    assert code == 0 and released["changes"] == [{"kind": "lock-released", "run_id": "run-a"}]
    code, again = run_step(lab, "lock01", "lock", RunId="run-a", Action="release")
    assert code == 0 and again["changes"] == [] and state(lab, "lock01").lock is None

    code, _ = run_step(lab, "lock01", "lock", RunId="run-b", ExpiresMinutes=1)
    lab.call(lambda: setattr(state(lab, "lock01"), "clock_skew_seconds", 120.0))  # a clock step ends no lease
    code, kept = run_step(lab, "lock01", "lock", RunId="run-c")
    assert code == 4 and kept["facts"]["expired"] is False
    lab.call(lambda: setattr(state(lab, "lock01"), "uptime_extra_seconds", 120.0))  # two minutes on the counter do
    code, stolen = run_step(lab, "lock01", "lock", RunId="run-c")
    assert code == 0 and stolen["facts"]["expired"] is True and state(lab, "lock01").lock["run_id"] == "run-c"

    code, bad = run_step(lab, "lock01", "lock", RunId="bad id!")
    assert code == 1 and "run id of letters" in bad["messages"][0]


# --- restart -------------------------------------------------------------------------------------
def test_restart_returns_the_boot_before_and_the_host_comes_back(lab: Lab) -> None:
    host = state(lab, "restart01")
    model = lab.host("restart01")
    before = host.last_boot
    lab.call(lambda: setattr(model.state, "boot_seconds", 300.0))
    with held_clock(lab, model, when=in_reboot(model)) as clock:  # the restart waits for the test
        code, result = run_step(lab, "restart01", "restart", Reason="test\nrestart", DelaySeconds=200)
        assert code == 0 and result["reboot_required"] is True and result["facts"]["shutdown_exit_code"] == 0
        assert result["facts"]["last_boot_utc"].startswith(before.strftime("%Y-%m-%dT%H:%M:%S"))
        assert result["changes"] == [{"kind": "restart-scheduled", "reason": "wuremote: test restart"}]

        # A second restart finds one scheduled (1190): as win_reboot, it aborts it and issues its own.
        code, second = run_step(lab, "restart01", "restart", Reason="again", DelaySeconds=200)
        assert code == 0 and second["facts"]["abort_exit_code"] == 0 and second["facts"]["shutdown_exit_code"] == 0
        assert [c["kind"] for c in second["changes"]] == ["scheduled-shutdown-aborted", "restart-scheduled"]
        assert clock.waits == [200, 200]  # the first restart's delay, then the one that replaced it
        clock.release()
        wait_for(lambda: not port_open(lab.endpoint("restart01")))
    wait_for(lambda: port_open(lab.endpoint("restart01")))
    assert host.reboots == 1 and host.last_boot > before


def test_a_restart_ends_servicing_so_reset_runs_after_it(lab: Lab) -> None:
    name = "fx-servicing-in-progress-01"
    with held_clock(lab, lab.host(name), when=in_reboot(lab.host(name))):  # down only once the step has answered
        code, _ = run_step(lab, name, "restart", Reason="servicing", DelaySeconds=300)
        assert code == 0
    wait_for(lambda: state(lab, name).reboots == 1 and port_open(lab.endpoint(name)))
    code, result = run_step(lab, name, "reset-components")
    assert code == 0 and result["facts"]["servicing"] == {"pending_xml": False}


# --- WinRS ---------------------------------------------------------------------------------------
def _bootstrap_command() -> str:
    bootstrap = scripts.scripts_dir().joinpath("_winrs_bootstrap.ps1").read_text(encoding="utf-8")
    return "powershell -NoProfile -NonInteractive -EncodedCommand " + base64.b64encode(bootstrap.encode("utf-16-le")).decode()


@pytest.mark.parametrize(("step", "params", "exit_code"), [
    ("diagnose", {"ControllerUtc": "2026-01-01T00:00:00Z"}, 0),
    ("lock", {"Action": "take"}, 0),
    ("av-pause", {}, 2),  # real-time protection switched off below: nothing to pause
])
def test_steps_over_winrs_print_one_marked_result_line(lab: Lab, step: str, params: dict[str, Any], exit_code: int) -> None:
    if step == "av-pause":
        lab.call(lambda: setattr(state(lab, "winrs01").antivirus, "realtime_enabled", False))
    marker = "WUREMOTE-RESULT-" + uuid.uuid4().hex
    protocol = winrm_protocol(lab.endpoint("winrs01"))
    shell_id = protocol.open_shell(codepage=65001)
    try:
        command_id = protocol.run_command(shell_id, _bootstrap_command())
        stdin = stdin_for(scripts.get_script(step).session_payload(), {"RunId": "winrs-run", "ResultMarker": marker, **params},
                          staged=False)
        protocol.send_command_input(shell_id, command_id, stdin, end=True)
        stdout, stderr, code = protocol.get_command_output(shell_id, command_id)
        protocol.cleanup_command(shell_id, command_id)
    finally:
        protocol.close_shell(shell_id)
    assert code == exit_code, stderr
    lines = [line for line in stdout.decode("utf-8").split("\r\n") if line.startswith(marker + " ")]
    assert len(lines) == 1
    result = json.loads(lines[0][len(marker) + 1:])
    assert result["step"] == step and result["exit_code"] == exit_code
    if step == "lock":
        assert state(lab, "winrs01").lock["run_id"] == "winrs-run"
