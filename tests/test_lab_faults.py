"""The faults a Windows host gives, as the raw clients meet them on the lab."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trustme
import winrm.exceptions
from conftest import held_clock, psrp_pool, psrp_wsman, winrm_protocol, winrm_session
from pypsrp.exceptions import AuthenticationError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.shell import Process, WinRS

from wuremote.lab.lab import Endpoint, Lab

OPERATION_TIMEOUT_CODE = 2150858793
QUOTA_CODE = 2150859173
PSRP_QUOTA_CODE = 2150859236


# --- long polls ------------------------------------------------------------------------------
def test_pywinrm_receive_with_nothing_to_say_raises_operation_timeout(lab: Lab, endpoint: Endpoint) -> None:
    protocol = winrm_protocol(endpoint, operation_timeout=1, read_timeout=4)
    shell_id = protocol.open_shell()
    try:
        # The Start-Sleep cannot end while held: only the OperationTimeout can end the Receive.
        with held_clock(lab, lab.host(endpoint.name)):
            command_id = protocol.run_command(shell_id, "powershell -NoProfile -Command Start-Sleep -Seconds 600")
            start = time.monotonic()
            with pytest.raises(winrm.exceptions.WinRMOperationTimeoutError):
                protocol.get_command_output_raw(shell_id, command_id)
            assert time.monotonic() - start >= 0.8  # the lab waited the OperationTimeout out before its fault
            protocol.cleanup_command(shell_id, command_id)  # the terminate signal ends the sleeping command
    finally:
        protocol.close_shell(shell_id)


def test_operation_timeout_fault_code_over_pypsrp_winrs(lab: Lab, endpoint: Endpoint) -> None:
    with held_clock(lab, lab.host(endpoint.name)), \
            WinRS(psrp_wsman(endpoint, operation_timeout=1, read_timeout=4)) as shell:
        process = Process(shell, "powershell", ["-Command", "Start-Sleep -Seconds 600"], no_shell=False)
        process.begin_invoke()
        with pytest.raises(WSManFaultError) as info:
            shell.receive("stdout stderr", command_id=process.id, timeout=1)
        assert info.value.code == OPERATION_TIMEOUT_CODE
        assert "within the time specified in OperationTimeout" in info.value.reason
        process.signal("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate")


def test_pypsrp_poll_invoke_retries_the_timeout_quietly(endpoint: Endpoint) -> None:
    with psrp_pool(endpoint, operation_timeout=1, read_timeout=4) as pool:
        ps = PowerShell(pool)
        ps.add_script("Write-Output 'a'\nStart-Sleep -Seconds 200\nWrite-Output 'b'")  # 2 s
        start = time.monotonic()
        assert ps.invoke() == ["a", "b"]  # invoke() polls through at least one OperationTimeout fault
        assert time.monotonic() - start >= 1.5
        assert ps.streams.error == []


# --- authentication and transport ---------------------------------------------------------------
def test_wrong_password_is_http_401_only(endpoint: Endpoint) -> None:
    with pytest.raises(winrm.exceptions.InvalidCredentialsError):
        winrm_protocol(endpoint, password="wrong").open_shell()
    with pytest.raises(AuthenticationError), psrp_pool(endpoint, password="wrong"):
        pass
    response = requests.post(endpoint.url, data=b"<x/>", auth=(endpoint.username, "wrong"), verify=endpoint.ca_file, timeout=5)
    assert response.status_code == 401
    assert response.content == b""  # nothing but the 401: no fault, no hint
    assert 'Basic realm="WSMAN"' in response.headers.get("WWW-Authenticate", "")


def test_plain_http_lab_allows_basic_unencrypted() -> None:
    with Lab(hosts=1, http=True, time_scale=0.01) as lab:
        endpoint = lab.endpoints[0]
        assert endpoint.scheme == "http" and endpoint.ca_file is None
        assert winrm_session(endpoint).run_cmd("hostname").std_out.strip() == endpoint.name.encode()
        with RunspacePool(psrp_wsman(endpoint, encryption="never")) as pool:
            ps = PowerShell(pool)
            ps.add_script("hostname")
            assert ps.invoke() == [endpoint.name]


@pytest.fixture
def http_listener_without_allow_unencrypted() -> Iterator[Endpoint]:
    """A plain-HTTP host not configured AllowUnencrypted."""
    with Lab(hosts=1, http=True, allow_unencrypted=False, time_scale=0.01) as lab:
        yield lab.endpoints[0]


def test_http_without_allow_unencrypted_refuses_basic(http_listener_without_allow_unencrypted: Endpoint) -> None:
    endpoint = http_listener_without_allow_unencrypted
    with pytest.raises(winrm.exceptions.InvalidCredentialsError):
        winrm_protocol(endpoint).open_shell()
    with pytest.raises(AuthenticationError), RunspacePool(psrp_wsman(endpoint, encryption="never")):
        pass
    response = requests.post(endpoint.url, data=b"<x/>", auth=(endpoint.username, endpoint.password), timeout=5)
    assert response.status_code == 401
    offers = response.headers.get("WWW-Authenticate", "")
    assert "Basic" not in offers and "Negotiate" in offers  # Basic is not even offered over plain HTTP


def test_untrusted_ca_is_an_ssl_error(endpoint: Endpoint, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with pytest.raises(requests.exceptions.SSLError):
        winrm_protocol(endpoint, ca_file=str(other_ca)).open_shell()
    with pytest.raises(requests.exceptions.SSLError), psrp_pool(endpoint, ca_file=str(other_ca)):
        pass
    # and the lab's own CA verifies it (hostname 127.0.0.1 is in the certificate)
    assert requests.post(endpoint.url, data=b"", verify=endpoint.ca_file, timeout=5).status_code == 401


# --- the PowerShell endpoint -------------------------------------------------------------------
def test_unknown_configuration_name(endpoint: Endpoint) -> None:
    with pytest.raises(WSManFaultError) as info, RunspacePool(psrp_wsman(endpoint), configuration_name="Microsoft.Nope"):
        pass
    assert info.value.code == 2150858811
    assert info.value.machine == endpoint.name
    assert info.value.reason == (
        "The WS-Management service cannot process the request. The resource URI "
        "(http://schemas.microsoft.com/powershell/Microsoft.Nope) was not found in the WS-Management catalog. "
        "The catalog contains the metadata that describes resources, or logical endpoints."
    )


# --- quotas ---------------------------------------------------------------------------------------
def test_winrs_shell_quota_is_30_per_user(fresh_lab: Lab) -> None:
    endpoint = fresh_lab.endpoints[0]
    protocol = winrm_protocol(endpoint)
    shells = [protocol.open_shell() for _ in range(30)]
    with pytest.raises(winrm.exceptions.WSManFaultError) as info:
        protocol.open_shell()
    assert info.value.wsman_fault_code == QUOTA_CODE
    assert "This user is allowed a maximum number of 30 concurrent shells, which has been exceeded." in info.value.response
    # the PowerShell endpoint has its own quota: a pool still opens
    with psrp_pool(endpoint) as pool:
        ps = PowerShell(pool)
        ps.add_script("hostname")
        assert ps.invoke() == [endpoint.name]
    protocol.close_shell(shells.pop())
    shells.append(protocol.open_shell())  # closing one makes room for one
    for shell_id in shells:
        protocol.close_shell(shell_id)


def test_psrp_pool_quota_is_25_per_user(fresh_lab: Lab) -> None:
    endpoint = fresh_lab.endpoints[0]
    pools = []
    try:
        for _ in range(25):
            pool = psrp_pool(endpoint)
            pool.open()
            pools.append(pool)
        extra = psrp_pool(endpoint)
        with pytest.raises(WSManFaultError) as info:
            extra.open()
        # The PowerShell endpoint's own quota fault, not WinRS' 2150859173 (ERROR_WSMAN_QUOTA_MAX_SHELLS_PPQ)
        assert info.value.code == PSRP_QUOTA_CODE
        assert "The maximum number of concurrent shells for this user has been exceeded." in info.value.reason
        # WinRS shells are counted apart
        assert winrm_session(endpoint).run_cmd("hostname").status_code == 0
        pools.pop().close()
        again = psrp_pool(endpoint)
        again.open()
        pools.append(again)
    finally:
        for pool in pools:
            pool.close()


# --- cmd.exe limits and code pages ----------------------------------------------------------------
def test_command_line_too_long(endpoint: Endpoint) -> None:
    result = winrm_session(endpoint).run_ps("# " + "z" * 3100 + "\nhostname")
    assert (result.status_code, result.std_out) == (1, b"")
    assert result.std_err == b"The command line is too long.\r\n"
    # the limit is cmd.exe's 8191 characters, not a byte count of the envelope
    long_echo = "echo " + "a" * (8191 - 5)
    assert winrm_session(endpoint).run_cmd(long_echo).status_code == 0
    assert winrm_session(endpoint).run_cmd(long_echo + "a").std_err == b"The command line is too long.\r\n"


def test_unsupported_codepage_is_refused(endpoint: Endpoint) -> None:
    with pytest.raises(winrm.exceptions.WSManFaultError) as info:
        winrm_protocol(endpoint).open_shell(codepage=12345)
    assert "12345" in info.value.response


def test_shell_gone_gives_shell_not_found(endpoint: Endpoint) -> None:
    protocol = winrm_protocol(endpoint)
    shell_id = protocol.open_shell()
    protocol.close_shell(shell_id)
    with pytest.raises(winrm.exceptions.WSManFaultError) as info:
        protocol.run_command(shell_id, "hostname")
    assert info.value.wsman_fault_code == 2150858843
    assert f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not found" in info.value.response
