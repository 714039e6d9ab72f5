"""The lab at Windows' edges (faults, limits, idle connections), met by the raw clients and survived
by both transports.

Each lab behaviour is Windows' as a source outside this project records it (cited in the lab's
code); each transport test fails on a transport that does not handle it.  No test waits on a clock
margin: the lab closes idle connections when told to, counts what it injected, and the clients'
own timeouts only bound a test that would otherwise hang.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import winrm
import winrm.exceptions
from conftest import OPERATION_TIMEOUT, READ_TIMEOUT, fast_settings, psrp_client, psrp_pool, psrp_wsman, winrm_protocol
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell
from pypsrp.shell import Process, WinRS

from wuremote.contract.scripts import get_script
from wuremote.inventory import HostConfig
from wuremote.lab.lab import Endpoint, Lab
from wuremote.secret import Secret
from wuremote.transport import Transport, TransportError, TransportSettings, open_transport

TRANSPORTS = ("psrp", "winrm")
TIME_SCALE = 0.001


def scenario(path: Path, faults: dict[str, Any], count: int = 1) -> Path:
    lines = ["[[hosts]]", 'scenario = "healthy"', 'name = "edge"', f"count = {count}", "[hosts.faults]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in faults.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Any]:
    """``edge(**faults)``: a one-host lab with that fault plan (``http=True``: plain HTTP, NTLM only)."""
    labs: list[Lab] = []

    def start(http: bool = False, **faults: Any) -> Lab:
        lab = Lab(scenario=scenario(tmp_path / f"edge-{len(labs)}.toml", faults), time_scale=TIME_SCALE, http=http,
                  allow_unencrypted=False if http else None)
        labs.append(lab.start())
        return lab

    yield start
    for lab in labs:
        lab.stop()


@pytest.fixture
def connect() -> Iterator[Any]:
    opened: list[Transport] = []

    def make(endpoint: Endpoint, kind: str, settings: TransportSettings | None = None, auth: str = "basic") -> Transport:
        config = HostConfig(name=endpoint.name, address=endpoint.address, port=endpoint.port, scheme=endpoint.scheme,
                            transport=kind, auth=auth, username=endpoint.username, password=Secret(endpoint.password),
                            ca_file=endpoint.ca_file)
        opened.append(open_transport(config, settings or fast_settings()))
        return opened[-1]

    yield make
    for transport in opened:
        transport.close()


def injected(lab: Lab) -> dict[str, int]:
    return dict(lab.call(lambda: dict(lab.faults("edge01").injected)))


def open_sessions(lab: Lab) -> tuple[int, int]:
    service = lab.hosts["edge01"].service
    return lab.call(lambda: (len(service.psrp.pools), len(service.winrs.shells)))


# --- 1. the operations quota, as Windows sends it ----------------------------------------------------
def test_operation_quota_fault_is_an_msft_wmierror_without_a_wsmanfault(edge: Any) -> None:
    lab = edge(max_operations_per_user=3)
    protocol = winrm_protocol(lab.endpoints[0])
    shell = protocol.open_shell()
    with pytest.raises(winrm.exceptions.WSManFaultError) as info:
        for _ in range(5):
            command = protocol.run_command(shell, "hostname")
            protocol.get_command_output(shell, command)
            protocol.cleanup_command(shell, command)
    # pywinrm's test_wsman_fault_wmi_error_detail: no WSManFault code, the WMI error's code instead
    assert info.value.wsman_fault_code is None
    assert info.value.wmierror_code == 2150859174
    assert (info.value.fault_code, info.value.fault_subcode) == ("s:Receiver", "w:InternalError")
    assert "concurrent operations, which has been exceeded" in info.value.reason


def test_pypsrp_reads_the_quota_fault_as_w_internalerror(edge: Any) -> None:
    lab = edge(max_operations_per_user=2)
    # One WinRS shell reused: Windows frees its commands' operations only when it is deleted.
    with WinRS(psrp_wsman(lab.endpoints[0])) as shell:
        with pytest.raises(WSManFaultError) as info:
            for _ in range(3):
                Process(shell, "hostname").invoke()
    assert info.value.code == "w:InternalError"  # no WSManFault: pypsrp has only the subcode to show
    assert "concurrent operations" in str(info.value.reason)


def test_winrs_transport_recovers_from_the_windows_shaped_quota_fault(edge: Any, connect: Any) -> None:
    # A quota below the transport's own recycling: only reading the MSFT_WmiError code finds the quota.
    lab = edge(max_operations_per_user=3)
    transport = connect(lab.endpoints[0], "winrm", fast_settings(commands_per_session=100))
    for _ in range(6):
        assert transport.run_command("hostname", timeout=10) == (0, "edge01")
    assert injected(lab).get("operation-quota", 0) >= 1


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_shell_is_recycled_before_the_per_shell_limits(edge: Any, connect: Any, kind: str) -> None:
    # 2008 R2's MaxConcurrentOperationsPerUser (15) for WinRS; a small MaxConcurrentCommandsPerShell for PSRP.
    lab = edge(max_operations_per_user=15, max_commands_per_shell=20)
    # WinRS with its own budget (12); PSRP's 900 of 1,000 scaled to this host's 20
    transport = connect(lab.endpoints[0], kind, fast_settings(commands_per_session=18 if kind == "psrp" else None))
    for _ in range(45):
        assert transport.run_command("hostname", timeout=10)[0] == 0
    assert injected(lab) == {}
    assert open_sessions(lab) == ((1, 0) if kind == "psrp" else (0, 1))


# --- 2. the PowerShell endpoint's own shell quota -----------------------------------------------------
def test_psrp_shell_quota_has_the_endpoints_code(edge: Any) -> None:
    lab = edge(max_shells_per_user=1)
    with psrp_pool(lab.endpoints[0]):
        with pytest.raises(WSManFaultError) as info:
            psrp_pool(lab.endpoints[0]).open()
    assert info.value.code == 2150859236
    assert "The maximum number of concurrent shells for this user has been exceeded" in str(info.value.reason)


def test_psrp_transport_waits_out_the_endpoints_shell_quota(edge: Any, connect: Any) -> None:
    lab = edge(max_shells_per_user=1)
    endpoint = lab.endpoints[0]
    pool = psrp_pool(endpoint)
    pool.open()  # another client holds the user's only pool
    transport = connect(endpoint, "psrp", fast_settings(open_retries=2, backoff=0.01))
    with pytest.raises(TransportError) as info:
        transport.run_command("hostname", timeout=10)
    assert info.value.code == 2150859236
    assert injected(lab)["shell-quota"] == 3  # transient: tried again, boundedly
    pool.close()
    assert transport.run_command("hostname", timeout=10) == (0, "edge01")


# --- 3. Send under load ---------------------------------------------------------------------------------
def test_send_under_load_times_out_delivered_then_busy(edge: Any) -> None:
    lab = edge(send_busy=1)
    protocol = winrm_protocol(lab.endpoints[0])
    shell = protocol.open_shell()
    command = protocol.run_command(shell, "powershell.exe", ["-NoProfile", "-Command", "-"], console_mode_stdin=False)
    with pytest.raises(winrm.exceptions.WinRMOperationTimeoutError):
        protocol.send_command_input(shell, command, b"Write-Output one\n")  # delivered all the same
    with pytest.raises(winrm.exceptions.WSManFaultError) as info:
        protocol.send_command_input(shell, command, b"Write-Output two\n", end=True)  # refused: not delivered
    assert info.value.wsman_fault_code == 170
    protocol.send_command_input(shell, command, b"Write-Output two\n", end=True)
    out, _, code = protocol.get_command_output(shell, command)
    assert (out, code) == (b"one\r\ntwo\r\n", 0)


def test_winrs_step_survives_send_timeout_and_busy_and_runs_once(edge: Any, connect: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from wuremote.transport import winrm as winrs_transport

    monkeypatch.setattr(winrs_transport, "STDIN_CHUNK", 8 * 1024)  # the step's stdin in several Sends
    lab = edge(send_busy=1)
    transport = connect(lab.endpoints[0], "winrm", fast_settings(send_busy_wait=0.01))
    result = transport.run_step(get_script("boot-info"), {"RunId": "run-1"}, timeout=20)
    assert result.exit_code == 0 and result.result is not None
    assert injected(lab) == {"send-timeout": 1, "send-busy": 1}
    assert lab.call(lambda: list(lab.host("edge01").state.scripts_run)) == ["boot-info"]


def test_winrs_commands_with_stdin_run_with_console_mode_off(edge: Any, connect: Any) -> None:
    lab = edge()
    transport = connect(lab.endpoints[0], "winrm")
    transport.run_step(get_script("boot-info"), {"RunId": "run-1"}, timeout=20)
    transport.run_command("hostname", timeout=10)
    # ansible-core's winrm plugin: console_mode_stdin=(stdin_iterator is None)
    assert lab.call(lambda: list(lab.hosts["edge01"].service.winrs.console_modes)) == ["FALSE", "TRUE"]


# --- 4. idle connections ----------------------------------------------------------------------------------
def test_idle_connection_closed_then_a_sealed_body_without_logon_gets_400(edge: Any) -> None:
    lab = edge(http=True)
    endpoint = lab.endpoints[0]
    protocol = winrm.Protocol(endpoint.url, transport="ntlm", username=endpoint.username, password=endpoint.password,
                              operation_timeout_sec=OPERATION_TIMEOUT, read_timeout_sec=READ_TIMEOUT)
    shell = protocol.open_shell()
    listener = lab.listener("edge01")
    assert lab.call(listener.close_idle_connections) == 1
    with pytest.raises(winrm.exceptions.WinRMTransportError) as info:
        protocol.run_command(shell, "hostname")
    assert info.value.code == 400
    assert listener.refused_seals == 1


def test_idle_connection_is_closed_after_the_configured_idle_time(edge: Any) -> None:
    lab = edge(http=True, idle_connection_seconds=0.2)
    endpoint = lab.endpoints[0]
    protocol = winrm.Protocol(endpoint.url, transport="ntlm", username=endpoint.username, password=endpoint.password,
                              operation_timeout_sec=OPERATION_TIMEOUT, read_timeout_sec=READ_TIMEOUT)
    protocol.open_shell()
    from conftest import wait_for

    wait_for(lambda: lab.listener("edge01").idle_closed >= 1, timeout=10, what="the idle connection to close")


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_transport_logs_on_again_after_an_idle_close(edge: Any, connect: Any, kind: str) -> None:
    lab = edge(http=True)
    transport = connect(lab.endpoints[0], kind, auth="ntlm")
    assert transport.run_command("hostname", timeout=10) == (0, "edge01")
    listener = lab.listener("edge01")
    assert lab.call(listener.close_idle_connections) >= 1
    assert transport.run_command("hostname", timeout=10) == (0, "edge01")
    assert listener.refused_seals == 1  # the request the closed connection could not carry, sent again
    assert open_sessions(lab) == ((1, 0) if kind == "psrp" else (0, 1))  # the same pool/shell, not a new one


# --- 6. limits -----------------------------------------------------------------------------------------------
def test_request_larger_than_max_envelope_gets_413(edge: Any) -> None:
    lab = edge(max_envelope_kb=150)  # 2008 R2's MaxEnvelopeSizekb
    protocol = winrm_protocol(lab.endpoints[0])
    shell = protocol.open_shell()
    command = protocol.run_command(shell, "powershell.exe", ["-Command", "-"])
    protocol.send_command_input(shell, command, b"x" * (100 * 1024))  # base64: about 137 KB, within
    with pytest.raises(winrm.exceptions.WinRMTransportError) as info:
        protocol.send_command_input(shell, command, b"x" * (120 * 1024))  # about 164 KB: too large
    assert info.value.code == 413


def test_psrp_pool_refuses_commands_past_max_commands_per_shell(edge: Any) -> None:
    lab = edge(max_commands_per_shell=3)
    with psrp_pool(lab.endpoints[0]) as pool:
        for _ in range(3):
            ps = PowerShell(pool)
            ps.add_script("hostname")
            ps.invoke()
        ps = PowerShell(pool)
        ps.add_script("hostname")
        with pytest.raises(WSManFaultError) as info:
            ps.invoke()
    assert info.value.code == "w:InternalError"  # pypsrp#148, as pypsrp reports it
    assert "maximum number of concurrent commands per shell has been exceeded" in str(info.value.reason)


def test_psrp_transport_moves_to_a_fresh_pool_at_the_commands_per_shell_limit(edge: Any, connect: Any) -> None:
    lab = edge(max_commands_per_shell=3)
    transport = connect(lab.endpoints[0], "psrp", fast_settings(commands_per_session=100))
    for _ in range(7):
        assert transport.run_command("hostname", timeout=10) == (0, "edge01")
    assert open_sessions(lab) == (1, 0)


# --- 7. PowerShell's exit codes and failed pipelines -----------------------------------------------------
def test_powershell_command_whose_last_statement_fails_exits_1(edge: Any) -> None:
    lab = edge()
    session = winrm.Session(lab.endpoints[0].url, auth=("x", "y"))
    session.protocol = winrm_protocol(lab.endpoints[0])
    assert session.run_cmd("powershell.exe", ["-Command", "Get-ServiceTypo"]).status_code == 1
    assert session.run_cmd("powershell.exe", ["-Command", "Get-ServiceTypo; hostname"]).status_code == 0
    assert session.run_cmd("powershell.exe", ["-Command", "Write-Error boom"]).status_code == 1


def test_execute_ps_of_an_unknown_cmdlet_ends_the_pipeline_failed(edge: Any) -> None:
    lab = edge()
    # pypsrp's test_client_execute_ps_failure (its recording of a real host)
    output, streams, had_errors = psrp_client(lab.endpoints[0]).execute_ps("Get-ServiceTypo -Name winrm")
    assert output == ""
    assert had_errors is True
    assert [str(e) for e in streams.error] == [
        "The term 'Get-ServiceTypo' is not recognized as the name of a cmdlet, function, script file, or operable "
        "program. Check the spelling of the name, or if a path was included, verify that the path is correct and "
        "try again."]


@pytest.mark.parametrize("kind, command", [("psrp", "Get-ServiceTypo"),
                                           ("winrm", "powershell.exe -NoProfile -Command Get-ServiceTypo")])
def test_transport_exit_code_of_a_failed_pipeline_is_1(edge: Any, connect: Any, kind: str, command: str) -> None:
    lab = edge()
    assert connect(lab.endpoints[0], kind).run_command(command, timeout=10)[0] == 1


# --- 8. the lab's own errors, and what Ansible sends --------------------------------------------------
def test_set_max_runspaces_is_answered(edge: Any) -> None:
    lab = edge()
    with psrp_pool(lab.endpoints[0]) as pool:
        pool.max_runspaces = 2  # SET_MAX_RUNSPACES, answered true (pypsrp's test_psrp_set_runspaces.yml)
        pool.min_runspaces = 2
        assert (pool.max_runspaces, pool.min_runspaces) == (2, 2)
        ps = PowerShell(pool)
        ps.add_script("hostname")
        assert ps.invoke() == ["edge01"]


def test_ansible_raw_exit_lastexitcode_and_version_check(edge: Any) -> None:
    lab = edge()
    client = psrp_client(lab.endpoints[0])
    # ansible-core's psrp plugin runs a raw command as "<cmd>\nexit $LASTEXITCODE"
    output, _, had_errors = client.execute_ps("cmd.exe /c exit 3\nexit $LASTEXITCODE")
    assert not had_errors
    # its bootstrap wrapper's version check: a multi-line if whose body must not run on 5.1
    check = ('if ($PSVersionTable.PSVersion -lt [Version]"5.1") {\n'
             "    '{\"failed\":true,\"msg\":\"Ansible requires PowerShell v5.1\"}'\n    exit 1\n}\nhostname")
    output, _, had_errors = client.execute_ps(check)
    assert (output, had_errors) == ("edge01", False)


def test_what_the_lab_cannot_model_is_a_failed_pipeline_not_a_hang(edge: Any) -> None:
    lab = edge()
    _, streams, had_errors = psrp_client(lab.endpoints[0]).execute_ps("exit $somethingelse")
    assert had_errors is True
    assert "The lab cannot run this" in str(streams.error[0])


# --- 9. a non-admin account --------------------------------------------------------------------------------
def test_non_admin_account_is_refused_on_create(edge: Any) -> None:
    lab = edge(non_admin=True)
    with pytest.raises(winrm.exceptions.WSManFaultError) as info:
        winrm_protocol(lab.endpoints[0]).open_shell()
    assert (info.value.code, info.value.wsman_fault_code) == (500, 2147942405)
    assert "Access is denied." in str(info.value.reason)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_transport_reports_a_non_admin_account_as_an_auth_problem_with_the_fix(edge: Any, connect: Any,
                                                                              kind: str) -> None:
    lab = edge(non_admin=True)
    with pytest.raises(TransportError) as info:
        connect(lab.endpoints[0], kind).run_command("hostname", timeout=10)
    assert info.value.kind == "auth"
    assert "is not an administrator there" in str(info.value) and "Administrators group" in str(info.value)
    assert injected(lab) == {"access-denied": 1}  # never retried



# --- 5. long-poll timing ---------------------------------------------------------------------------------------
def test_psrp_late_long_poll_answer_is_read_within_the_configured_read_timeout(edge: Any, connect: Any) -> None:
    # A busy host answers a long poll 3 s after OperationTimeout (Windows' own client allows 5 s);
    # pypsrp alone reads for OperationTimeout + 2 s only.
    lab = edge(late_receive_seconds=3)
    transport = connect(lab.endpoints[0], "psrp", fast_settings(operation_timeout=1, read_timeout=8))
    assert transport.run_command("Start-Sleep -Seconds 1500; hostname", timeout=30) == (0, "edge01")
    assert injected(lab)["late-receive"] >= 1


def test_psrp_pool_abandoned_after_a_lost_answer_is_deleted_when_the_host_answers_again(edge: Any,
                                                                                        connect: Any) -> None:
    lab = edge(late_receive_seconds=3)
    transport = connect(lab.endpoints[0], "psrp", fast_settings(operation_timeout=1, read_timeout=2))
    with pytest.raises(TransportError) as info:
        transport.run_command("Start-Sleep -Seconds 1500", timeout=30)  # its long poll answers after the read timeout
    assert info.value.kind == "lost"
    assert transport.run_command("hostname", timeout=10) == (0, "edge01")
    assert open_sessions(lab) == (1, 0)  # the abandoned pool was deleted, not left to hold the user's quota


# --- WinRS stdout: a BOM or "#< CLIXML" before the result line ---------------------------------------------
@pytest.mark.parametrize("prefix", [{"stdout_bom": True}, {"stdout_clixml": True},
                                    {"stdout_bom": True, "stdout_clixml": True}])
def test_winrs_step_result_is_read_behind_a_bom_or_clixml_prefix(edge: Any, connect: Any,
                                                                 prefix: dict[str, bool]) -> None:
    lab = edge(**prefix)
    raw = winrm_protocol(lab.endpoints[0])
    shell = raw.open_shell()
    command = raw.run_command(shell, "powershell.exe", ["-NoProfile", "-Command", "hostname"])
    out, _, _ = raw.get_command_output(shell, command)
    assert out.endswith(b"edge01\r\n") and not out.startswith(b"edge01")  # the host wrote something first
    result = connect(lab.endpoints[0], "winrm").run_step(get_script("boot-info"), {"RunId": "run-1"}, timeout=20)
    assert result.exit_code == 0 and result.result is not None and result.result["step"] == "boot-info"
