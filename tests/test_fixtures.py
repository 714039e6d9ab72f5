"""Scenario fixtures: one schema, and facts that agree with the cmdlet answers behind them."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from wuremote.contract.hresult import NOT_A_REPAIR_STEP, lookup
from wuremote.contract.scripts import load_scripts

FIXTURES = Path(__file__).resolve().parent.parent / "wuremote" / "lab" / "fixtures"
SCENARIOS = [
    "healthy", "clock-skew", "corrupt-download-cache", "stopped-services", "disabled-services",
    "component-store-corrupt", "component-store-needs-source", "av-interference",
    "third-party-service-conflict", "manual-kb", "low-disk", "wsus-unreachable", "servicing-in-progress",
]
UPDATE_SERVICES = ["wuauserv", "bits", "cryptsvc", "msiserver", "trustedinstaller", "appidsvc", "usosvc"]
TOP = {"schema", "scenario", "description", "repaired_by", "expect", "facts", "cmdlets"}
FACT_KEYS = {
    "os", "roles", "services", "policy_readable", "clock", "disk", "folders", "pending_reboot", "servicing",
    "update_source", "update_failures", "last_verify_ok_utc", "installed_kbs", "powershell", "antivirus", "troubleshooter", "unexpected_shutdowns_30d", "elevated", "errors",
}
START_TYPES = {"Automatic", "AutomaticDelayed", "Manual", "Disabled", "Absent"}
HRESULT_RE = re.compile(r"^0x[0-9A-F]{8}$")
ISO_O = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


ALL = {name: load(name) for name in SCENARIOS}
HEALTHY = ALL["healthy"]


def test_one_fixture_per_built_in_scenario_and_no_strays():
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_top_level_schema(name):
    data = ALL[name]
    assert set(data) == TOP
    assert data["schema"] == 1 and data["scenario"] == name
    assert len(data["description"]) > 20
    assert data["repaired_by"] is None or data["repaired_by"] in load_scripts()


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_file_has_the_same_keys_as_healthy(name):
    """Mocks and the lab never guess a default: every key exists in every file."""
    data = ALL[name]
    assert set(data["facts"]) == FACT_KEYS
    assert set(data["cmdlets"]) == set(HEALTHY["cmdlets"])
    for group in ("os", "roles", "clock", "disk", "servicing", "update_source", "troubleshooter"):
        assert set(data["facts"][group]) == set(HEALTHY["facts"][group]), group


@pytest.mark.parametrize("name", SCENARIOS)
def test_fact_value_types(name):
    facts = ALL[name]["facts"]
    assert set(facts["services"]) == set(UPDATE_SERVICES)
    for service in facts["services"].values():
        assert service["start_type"] in START_TYPES
        assert service["policy_start_type"] in START_TYPES | {None}
    assert ISO_O.match(facts["os"]["last_boot_utc"])
    for failure in facts["update_failures"]:
        assert failure["event_id"] in (20, 25, 31)
        assert failure["hresult"] is None or HRESULT_RE.match(failure["hresult"])
        assert ISO_O.match(failure["time_utc"])
    assert set(facts["pending_reboot"]) <= {"cbs-reboot-pending", "wu-reboot-required", "configmgr-reboot-pending", "pending-computer-rename"}
    assert facts["update_source"]["kind"] in ("windows-update", "wsus", "configmgr")
    assert facts["errors"] == []


def _start_type(row: dict) -> str:
    if row["StartMode"] == "Auto":
        return "AutomaticDelayed" if row["DelayedAutoStart"] else "Automatic"
    return row["StartMode"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_services_agree_with_win32_service_and_rsop(name):
    data = ALL[name]
    rows = {r["Name"].lower(): r for r in data["cmdlets"]["Win32_Service"]}
    policy = {r["Service"].lower(): {2: "Automatic", 3: "Manual", 4: "Disabled"}[r["StartupMode"]] for r in data["cmdlets"]["RSOP_SystemService"]}
    for name_, fact in data["facts"]["services"].items():
        row = rows.get(name_)
        assert fact["state"] == (row["State"] if row else "Absent"), name_
        assert fact["start_type"] == (_start_type(row) if row else "Absent"), name_
        assert fact["policy_start_type"] == policy.get(name_), name_


@pytest.mark.parametrize("name", SCENARIOS)
def test_os_disk_clock_agree_with_cim_and_registry(name):
    data = ALL[name]
    facts, cmd = data["facts"], data["cmdlets"]
    os_ = cmd["Win32_OperatingSystem"]
    assert facts["os"]["build"] == int(os_["BuildNumber"]) and facts["os"]["caption"] == os_["Caption"]
    assert facts["os"]["ubr"] == cmd["registry"]["HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"]["UBR"]
    disk = next(d for d in cmd["Win32_LogicalDisk"] if d["DeviceID"] == facts["disk"]["system_drive"])
    assert facts["disk"]["free_bytes"] == disk["FreeSpace"]
    assert facts["disk"]["low"] == (disk["FreeSpace"] < facts["disk"]["min_free_gb"] * 1024**3)
    local = datetime.fromisoformat(cmd["local_utc"].replace("0000000Z", "+00:00"))
    controller = datetime.fromisoformat(cmd["controller_utc"].replace("0000000Z", "+00:00"))
    assert facts["clock"]["skew_seconds"] == pytest.approx((local - controller).total_seconds())
    w32 = next((r for r in cmd["Win32_Service"] if r["Name"].lower() == "w32time"), None)
    assert facts["clock"]["w32time_state"] == (w32["State"] if w32 else "Absent")


@pytest.mark.parametrize("name", SCENARIOS)
def test_reboot_servicing_and_events_agree(name):
    data = ALL[name]
    facts, cmd = data["facts"], data["cmdlets"]
    cbs = "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending" in cmd["registry"]
    assert ("cbs-reboot-pending" in facts["pending_reboot"]) == cbs
    assert facts["servicing"]["tiworker_running"] == ("TiWorker" in cmd["processes"])
    assert facts["servicing"]["pending_xml"] == cmd["paths"]["%SystemRoot%\\WinSxS\\pending.xml"]
    events = cmd["events"]["Microsoft-Windows-WindowsUpdateClient/Operational"]
    assert len(facts["update_failures"]) == len(events)
    for failure in facts["update_failures"]:
        assert any(failure["hresult"].lower() in e["Message"].lower() for e in events)
    assert facts["unexpected_shutdowns_30d"] == len(cmd["events"]["System/6008"])
    mp = cmd["Get-MpComputerStatus"]
    assert facts["antivirus"]["defender"]["realtime_enabled"] == (mp["RealTimeProtectionEnabled"] if mp else None)
    assert facts["elevated"] == cmd["elevated"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_update_source_agrees_with_policy_registry(name):
    data = ALL[name]
    policies = data["cmdlets"]["registry"].get("HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate", {})
    au = data["cmdlets"]["registry"].get("HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU", {})
    source = data["facts"]["update_source"]
    assert source["wsus_server"] == policies.get("WUServer", "")
    assert source["use_wsus"] == (au.get("UseWUServer") == 1)


# --- each scenario is what its name says -------------------------------------------------------

def failure_codes(name: str) -> set[str]:
    return {f["hresult"] for f in ALL[name]["facts"]["update_failures"]}


def test_healthy_has_nothing_wrong():
    facts = HEALTHY["facts"]
    assert facts["update_failures"] == [] and facts["pending_reboot"] == []
    assert not facts["disk"]["low"] and not facts["servicing"]["in_progress"]
    assert abs(facts["clock"]["skew_seconds"]) < 60
    assert HEALTHY["repaired_by"] is None


def test_scenarios_carry_their_signature_errors():
    assert "0x80070002" in failure_codes("corrupt-download-cache")
    assert "0x80073712" in failure_codes("component-store-corrupt")
    assert ALL["component-store-needs-source"]["cmdlets"]["native"]["dism.exe /Online /Cleanup-Image /RestoreHealth"]["exit_code"] == -2146498529
    assert "0x8024402C" in failure_codes("wsus-unreachable")
    assert ALL["low-disk"]["facts"]["disk"]["low"]
    assert abs(ALL["clock-skew"]["facts"]["clock"]["skew_seconds"]) > 300
    assert ALL["servicing-in-progress"]["facts"]["servicing"]["in_progress"]


def test_disabled_services_has_one_by_policy_and_one_not():
    services = ALL["disabled-services"]["facts"]["services"]
    disabled = {n: s for n, s in services.items() if s["start_type"] == "Disabled"}
    by_policy = [n for n, s in disabled.items() if s["policy_start_type"] == "Disabled"]
    local = [n for n, s in disabled.items() if s["policy_start_type"] is None]
    assert len(by_policy) == 1 and len(local) == 1


def test_stopped_services_keep_their_start_types():
    stopped = ALL["stopped-services"]["facts"]["services"]
    healthy = HEALTHY["facts"]["services"]
    assert any(s["state"] == "Stopped" and healthy[n]["state"] == "Running" for n, s in stopped.items())
    assert all(stopped[n]["start_type"] == healthy[n]["start_type"] for n in stopped)


def test_network_scenarios_climb_no_ladder():
    for name, data in ALL.items():
        categories = {lookup(code).category for code in failure_codes(name)}
        if categories and categories <= NOT_A_REPAIR_STEP:
            assert data["repaired_by"] is None, name
    assert ALL["wsus-unreachable"]["facts"]["update_source"]["kind"] == "wsus"


def test_repairing_step_matches_the_hresult_table():
    """Where the failing code names a step, the scenario is repaired by that step (or a gate before it)."""
    for name in ("corrupt-download-cache", "component-store-corrupt", "low-disk", "clock-skew", "manual-kb", "third-party-service-conflict"):
        steps = {lookup(code).step for code in failure_codes(name)}
        assert ALL[name]["repaired_by"] in steps, name


def test_opt_in_scenarios_are_repaired_by_opt_in_steps():
    scripts = load_scripts()
    for name, data in ALL.items():
        if data["expect"].get("opt_in"):
            assert scripts[data["repaired_by"]].meta.opt_in, name


def test_powershell_facts_agree_with_their_cmdlets():
    for data in ALL.values():
        facts, cmd = data["facts"]["powershell"], data["cmdlets"]["powershell"]
        assert facts["language_mode"] == cmd["LanguageMode"]
        assert facts["execution_policies"] == {row["Scope"]: row["ExecutionPolicy"] for row in cmd["ExecutionPolicyList"]}
