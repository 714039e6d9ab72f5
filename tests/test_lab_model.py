"""The host model behind the protocol: reboots as a client sees them, scenarios, scenario files."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests
import winrm.exceptions
from conftest import held_clock, in_reboot, port_open, psrp_pool, wait_for, winrm_protocol, winrm_session
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell

from wuremote.lab.host import SHUTDOWN_GRACE_SECONDS
from wuremote.lab.lab import Lab, LabError
from wuremote.lab.scenarios import BUILTIN, MIXED, ScenarioError

SHELL_NOT_FOUND = 2150858843


def _service_status(pool, name: str) -> str:
    ps = PowerShell(pool)
    ps.add_script(f"Get-Service {name}")
    [service] = ps.invoke()
    return service.extended_properties["Status"]


def _last_boot(pool) -> str:
    ps = PowerShell(pool)
    ps.add_script("(Get-CimInstance Win32_OperatingSystem).LastBootUpTime")
    [value] = ps.invoke()
    return str(value)


# --- reboot --------------------------------------------------------------------------------------
def test_reboot_as_clients_see_it(tmp_path: Path) -> None:
    scenario = tmp_path / "reboot.toml"
    scenario.write_text(
        '[[hosts]]\nscenario = "servicing-in-progress"\nname = "svc"\n[hosts.state]\nboot_seconds = 100\n',
        encoding="utf-8",
    )
    with Lab(scenario=scenario, time_scale=0.01) as lab:
        endpoint = lab.endpoints[0]
        assert endpoint.name == "svc01"
        host = lab.host("svc01")

        def prepare() -> None:
            services = host.state.services
            services["cryptsvc"].status = "Stopped"  # Automatic: runs again after the boot
            services["msiserver"].status = "Running"  # Manual, not running at idle: stopped after the boot
            services["bits"].start_type = "Disabled"  # disabled by hand: stays stopped
            services["wuauserv"].policy_start_type = "Disabled"  # disabled by policy: stays stopped

        lab.call(prepare)
        assert host.state.pending_reboot == {"cbs-reboot-pending"}
        before_state = host.state.last_boot

        protocol = winrm_protocol(endpoint)
        old_shell = protocol.open_shell()
        old_pool = psrp_pool(endpoint)
        old_pool.open()
        before = _last_boot(old_pool)

        # The restart's waits (Windows stopping, then the boot) end when the test says so.
        with held_clock(lab, host, when=in_reboot(host)) as clock:
            ps = PowerShell(old_pool)
            ps.add_script("Restart-Computer -Force")
            ps.invoke()
            assert ps.streams.error == []
            clock.release()  # Windows has stopped its services: WinRM goes away

            # while it restarts the port refuses connections
            wait_for(lambda: not port_open(endpoint))
            with pytest.raises(requests.exceptions.ConnectionError):
                requests.post(endpoint.url, data=b"", verify=endpoint.ca_file, timeout=2)
            with pytest.raises(socket.error):
                socket.create_connection((endpoint.address, endpoint.port), timeout=1).close()
            wait_for(lambda: len(clock.waits) == 2, what="the boot began")
            assert clock.waits == [SHUTDOWN_GRACE_SECONDS, 100]  # the boot lasts the scenario's boot_seconds
        wait_for(lambda: port_open(endpoint))

        # shells and pools of the old boot are gone, with the real fault
        with pytest.raises(winrm.exceptions.WSManFaultError) as winrs_fault:
            protocol.run_command(old_shell, "hostname")
        assert winrs_fault.value.wsman_fault_code == SHELL_NOT_FOUND
        stale = PowerShell(old_pool)
        stale.add_script("hostname")
        with pytest.raises(WSManFaultError) as psrp_fault:
            stale.invoke()
        assert psrp_fault.value.code == SHELL_NOT_FOUND
        assert "the shell was not found on the server" in psrp_fault.value.reason

        # a new pool sees the new boot
        with psrp_pool(endpoint) as pool:
            assert _last_boot(pool) != before
            assert host.state.last_boot > before_state
            assert _service_status(pool, "cryptsvc") == "Running"
            assert _service_status(pool, "winrm") == "Running"
            assert _service_status(pool, "msiserver") == "Stopped"
            assert _service_status(pool, "bits") == "Stopped"
            assert _service_status(pool, "wuauserv") == "Stopped"
        assert host.state.pending_reboot == set()
        assert host.state.servicing_in_progress is False
        assert host.state.reboots == 1


def test_reboot_that_never_comes_back() -> None:
    with Lab(hosts=1, scenario="reboot-never-returns", time_scale=0.01) as lab:
        endpoint = lab.endpoints[0]
        host = lab.host(endpoint.name)
        assert winrm_session(endpoint).run_cmd("shutdown /r /t 0").status_code == 0
        wait_for(lambda: not port_open(endpoint))
        wait_for(lambda: not lab.call(lambda: host.rebooting), what="the restart is over")  # it ended down
        assert not port_open(endpoint) and not lab.call(host.up.is_set)


def test_second_shutdown_while_one_is_scheduled_is_refused(fresh_lab: Lab) -> None:
    endpoint = fresh_lab.endpoints[0]
    host = fresh_lab.host(endpoint.name)
    session = winrm_session(endpoint)
    with held_clock(fresh_lab, host, when=in_reboot(host)) as clock:  # the restart waits for the test
        assert session.run_cmd("shutdown /r /t 60").status_code == 0
        second = session.run_cmd("shutdown /r /t 60")
        assert second.status_code == 1190
        assert b"A system shutdown has already been scheduled.(1190)" in second.std_err
        assert session.run_cmd("shutdown /t 5").status_code == 87  # neither /r nor /s: the parameter is incorrect
        assert clock.waits == [60]  # one restart, 60 s away
        clock.release()
        wait_for(lambda: not port_open(endpoint))
    wait_for(lambda: port_open(endpoint))


# --- scenarios -------------------------------------------------------------------------------------
EXPECTED = {
    "healthy": lambda s: not s.update_history and s.services["wuauserv"].status == "Running",
    "clock-skew": lambda s: s.clock_skew_seconds == 5400 and s.services["w32time"].status == "Stopped",
    "corrupt-download-cache": lambda s: s.download_cache_corrupt and s.update_history[0]["hresult"] == "0x80070002",
    "stopped-services": lambda s: all(s.services[n].status == "Stopped" for n in ("wuauserv", "bits", "cryptsvc")),
    "disabled-services": lambda s: s.services["bits"].start_type == "Disabled" and s.services["bits"].policy_start_type is None
    and s.services["wuauserv"].policy_start_type == "Disabled",
    "component-store-corrupt": lambda s: s.component_store == "repairable" and s.system_files_corrupt,
    "component-store-needs-source": lambda s: s.component_store == "needs-source",
    "av-interference": lambda s: s.antivirus.third_party and s.antivirus.interferes and s.antivirus.realtime_enabled,
    "third-party-service-conflict": lambda s: s.services["fabrikamsync"].status == "Running"
    and s.services["fabrikamsync"].role == "third-party",
    "manual-kb": lambda s: s.manual_kb == "KB5068787",
    "low-disk": lambda s: s.free_disk_gb == 3.0,
    "wsus-unreachable": lambda s: s.update_source == "wsus" and s.wsus_server and not s.wsus_reachable,
    "servicing-in-progress": lambda s: s.servicing_in_progress and "cbs-reboot-pending" in s.pending_reboot,
    "reboot-never-returns": lambda s: s.reboot_never_returns,
}


def test_every_builtin_scenario_has_an_expectation() -> None:
    assert set(EXPECTED) == set(BUILTIN)


def test_mixed_fleet_builds_each_scenario() -> None:
    with Lab(hosts=len(MIXED) + 1, scenario="mixed", time_scale=0.01) as lab:
        scenarios = [e.scenario for e in lab.endpoints]
        assert scenarios == MIXED + [MIXED[0]]
        assert "reboot-never-returns" not in scenarios
        for endpoint in lab.endpoints:
            state = lab.host(endpoint.name).state
            assert state.scenario == endpoint.scenario
            assert EXPECTED[endpoint.scenario](state), endpoint.scenario
        # what is broken is visible over the wire too
        stopped = next(e for e in lab.endpoints if e.scenario == "stopped-services")
        with psrp_pool(stopped) as pool:
            assert _service_status(pool, "bits") == "Stopped"


def test_same_seed_same_lab() -> None:
    first, second, other = Lab(hosts=2, seed=7), Lab(hosts=2, seed=7), Lab(hosts=2, seed=8)
    try:
        assert first.credentials.password == second.credentials.password != other.credentials.password
    finally:
        for lab in (first, second, other):
            lab.stop()


# --- scenario files ---------------------------------------------------------------------------------
def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_scenario_file_builds_named_groups(tmp_path: Path) -> None:
    path = _write(tmp_path, """# a small fleet
[[hosts]]
scenario = "clock-skew"
count = 2
name = "web"
[hosts.state]
clock_skew_seconds = 900

[[hosts]]
scenario = "low-disk"
""")
    with Lab(scenario=path, time_scale=0.01) as lab:
        assert [(e.name, e.scenario) for e in lab.endpoints] == [
            ("web01", "clock-skew"), ("web02", "clock-skew"), ("WULAB003", "low-disk")]
        assert lab.host("web02").state.clock_skew_seconds == 900
        assert lab.host("WULAB003").state.free_disk_gb == 3.0
        assert winrm_session(lab.endpoint("web01")).run_cmd("hostname").std_out == b"web01\r\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[[hosts]]\nscenario = "healthy"\ncount = \n', 3, "not valid TOML"),
        ('[[hosts]]\nscenario = "healthy"\n\n[[hosts]]\nscenario = "nope"\n', 5, "unknown scenario 'nope'"),
        ('[[hosts]]\nscenario = "healthy"\ncolour = "blue"\n', 3, "unknown key 'colour'"),
        ('[[hosts]]\nscenario = "healthy"\n[hosts.state]\nbogus_setting = 1\n', 4, "'bogus_setting' is not a host setting"),
        ('[[hosts]]\nscenario = "healthy"\ncount = 0\n', 3, "count must be a whole number"),
        ('[[hosts]]\ncount = 2\n', 1, "needs scenario"),
        ('[fleet]\nname = "x"\n', 1, "unknown key 'fleet'"),
        ('[[hosts]]\nscenario = "healthy"\nname = "a"\n[[hosts]]\nscenario = "low-disk"\nname = "a"\n', 6, "used twice"),
        ('# count = 1\n[[hosts]]\nscenario = "healthy"\n\n[[hosts]]\nscenario = "low-disk"\ncount = -1\n', 7, "count must be"),
    ],
)
def test_scenario_file_errors_name_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        Lab(scenario=path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert words in message
    assert "\n" not in message


def test_unknown_scenario_name() -> None:
    with pytest.raises(ScenarioError) as info:
        Lab(hosts=1, scenario="nope")
    message = str(info.value)
    assert message.startswith("unknown scenario 'nope'")
    assert "mixed" in message and "healthy" in message and "\n" not in message


def test_missing_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read the scenario file"):
        Lab(scenario=tmp_path / "absent.toml")


def test_file_count_and_hosts_disagree(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[hosts]]\nscenario = "healthy"\ncount = 2\n')
    with pytest.raises(ScenarioError, match="describes 2 hosts but --hosts 3"):
        Lab(hosts=3, scenario=path)


def test_bad_lab_arguments() -> None:
    with pytest.raises(LabError, match="--hosts must be at least 1"):
        Lab(hosts=0)
    with pytest.raises(LabError, match="--time-scale"):
        Lab(hosts=1, time_scale=0)


def test_port_in_use_is_a_lab_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LabError, match="cannot listen on 127.0.0.1"):
            Lab(hosts=1, first_port=port).start()
