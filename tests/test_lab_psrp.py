"""The unmodified pypsrp client against the lab's PowerShell endpoint (PSRP over WSMan, HTTPS + Basic)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from conftest import edit_one_byte, held_clock, psrp_client, psrp_pool
from pypsrp.complex_objects import PSInvocationState
from pypsrp.host import PSHost
from pypsrp.powershell import PowerShell

from wuremote.contract import scripts
from wuremote.lab.lab import Endpoint, Lab


def _host() -> PSHost:
    return PSHost(None, None, False, "wuremote-tests", None, None, "1.0")


def _props(obj: object) -> dict:
    return dict(getattr(obj, "adapted_properties", {}) or {}) | dict(getattr(obj, "extended_properties", {}) or {})


@pytest.fixture(scope="module")
def pool(endpoint: Endpoint):
    with psrp_pool(endpoint, host=_host()) as opened:
        yield opened


# --- basics ----------------------------------------------------------------------------------
def test_invoke_script_output(pool, endpoint: Endpoint) -> None:
    ps = PowerShell(pool)
    ps.add_script("hostname\n$env:COMPUTERNAME\nWrite-Output 'literal text'\nwhoami")
    output = ps.invoke()
    assert output == [endpoint.name, endpoint.name, "literal text", f"{endpoint.name.lower()}\\{endpoint.username.lower()}"]
    assert ps.state == PSInvocationState.COMPLETED
    assert not ps.had_errors


def test_all_streams(pool) -> None:
    ps = PowerShell(pool)
    ps.add_script(
        "Write-Output 'out'\n"
        "Write-Error 'err'\n"
        "Write-Warning 'warn'\n"
        "Write-Verbose 'verb' -Verbose\n"
        "Write-Verbose 'hidden verbose'\n"
        "Write-Debug 'dbg' -Debug\n"
        "Write-Debug 'hidden debug'\n"
        "Write-Information 'info'\n"
        "Write-Host 'to the host'\n"
        "Write-Progress -Activity 'Repairing' -Status 'Half way' -PercentComplete 50\n"
    )
    assert ps.invoke() == ["out"]
    streams = ps.streams
    assert [str(e) for e in streams.error] == ["err"]
    assert [w.message for w in streams.warning] == ["warn"]
    assert [v.message for v in streams.verbose] == ["verb"]
    assert [d.message for d in streams.debug] == ["dbg"]
    assert [i.message_data for i in streams.information] == ["info", "to the host"]
    assert [(p.activity, p.description, p.percent_complete) for p in streams.progress] == [("Repairing", "Half way", 50)]
    # a non-terminating error does not fail the pipeline
    assert ps.state == PSInvocationState.COMPLETED


def test_error_record_of_unknown_cmdlet(pool) -> None:
    ps = PowerShell(pool)
    ps.add_script("Get-FrobnicatedThing -All")
    assert ps.invoke() == []
    [error] = ps.streams.error
    assert str(error).startswith("The term 'Get-FrobnicatedThing' is not recognized as the name of a cmdlet")
    assert error.fq_error == "CommandNotFoundException"
    assert error.reason == "CommandNotFoundException"
    assert error.target_name == "Get-FrobnicatedThing"


def test_error_action_stop_fails_the_pipeline(pool) -> None:
    ps = PowerShell(pool)
    ps.add_script("$ErrorActionPreference = 'Stop'\nWrite-Output 'before'\nWrite-Error 'fatal thing'\nWrite-Output 'after'")
    output = ps.invoke()
    assert output == ["before"]
    assert ps.state == PSInvocationState.FAILED
    assert ps.had_errors
    assert any("fatal thing" in str(e) for e in ps.streams.error)


def test_exit_code_via_set_should_exit(endpoint: Endpoint) -> None:
    host = _host()
    with psrp_pool(endpoint, host=host) as pool:
        ps = PowerShell(pool)
        ps.add_script("Write-Output 'working'\nexit 4\nWrite-Output 'not reached'")
        assert ps.invoke() == ["working"]
        assert host.rc == 4
        ps = PowerShell(pool)
        ps.add_script("exit 0")
        ps.invoke()
        assert host.rc == 4  # exit 0 makes no SetShouldExit call, as on Windows
    # without a host the pipeline still ends, with nothing to carry the code
    with psrp_pool(endpoint) as pool:
        ps = PowerShell(pool)
        ps.add_script("exit 9")
        assert ps.invoke() == []
        assert ps.state == PSInvocationState.COMPLETED


def test_add_cmdlet_parameter_argument_and_statements(pool, endpoint: Endpoint) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Write-Output").add_argument("first")
    ps.add_statement()
    ps.add_cmdlet("Get-Service").add_parameter("Name", "bits")
    ps.add_statement()
    ps.add_cmdlet("Write-Output").add_parameter("InputObject", "by name")
    ps.add_statement()
    ps.add_cmdlet("hostname")
    output = ps.invoke()
    assert output[0] == "first"
    service = _props(output[1])
    assert service["Name"] == "bits" and service["Status"] == "Running"
    assert output[2:] == ["by name", endpoint.name]


def test_add_script_with_parameters_is_not_a_model_payload(pool) -> None:
    """Plain scripts with parameters still run through the vocabulary."""
    ps = PowerShell(pool)
    ps.add_script("Write-Output 'plain'")
    ps.add_parameter("Unused", "value")
    assert ps.invoke() == ["plain"]


def test_begin_poll_end_invoke(pool) -> None:
    ps = PowerShell(pool)
    ps.add_script("Write-Output 'start'\nStart-Sleep -Seconds 30\nWrite-Output 'end'")
    ps.begin_invoke()
    polls = 0
    while ps.state == PSInvocationState.RUNNING:
        ps.poll_invoke(timeout=1)
        polls += 1
        assert polls < 50
    ps.end_invoke()
    assert ps.output == ["start", "end"]
    assert ps.state == PSInvocationState.COMPLETED


def test_poll_invoke_retries_operation_timeout_quietly(lab: Lab, endpoint: Endpoint, pool) -> None:
    with held_clock(lab, lab.host(endpoint.name)):  # the Start-Sleep cannot end while the test polls
        ps = PowerShell(pool)
        ps.add_script("Start-Sleep -Seconds 300")
        ps.begin_invoke()
        ps.poll_invoke(timeout=1)  # the pipeline's first messages
        start = time.monotonic()
        ps.poll_invoke(timeout=1)  # nothing to say: the lab ends this long poll with the OperationTimeout fault
        assert time.monotonic() - start >= 0.8  # the lab waited the OperationTimeout out before its fault
        assert ps.state == PSInvocationState.RUNNING  # the poll came back quietly while the script still runs
        assert ps.output == [] and ps.streams.error == []
        ps.stop()


def test_stop_a_long_pipeline_and_reuse_the_pool(lab: Lab, endpoint: Endpoint, pool) -> None:
    ps = PowerShell(pool)
    ps.add_script("Write-Output 'started'\nStart-Sleep -Seconds 600\nWrite-Output 'never'")
    with held_clock(lab, lab.host(endpoint.name)):  # the Start-Sleep cannot end: stop() returns without waiting for it
        ps.begin_invoke()
        while not ps.output:
            ps.poll_invoke(timeout=1)
        ps.stop()
    assert ps.state == PSInvocationState.STOPPED
    assert ps.output == ["started"]
    again = PowerShell(pool)
    again.add_script("Write-Output 'pool still works'")
    assert again.invoke() == ["pool still works"]


def test_600_kb_script_is_fragmented_across_sends(pool) -> None:
    lines = [f"Write-Output 'line {i:05d} {'x' * 100}'" for i in range(5000)]
    script = "\n".join(lines)
    assert len(script.encode()) > 600_000
    ps = PowerShell(pool)
    ps.add_script(script)
    output = ps.invoke()
    assert len(output) == 5000
    assert output[0].startswith("line 00000 x") and output[-1].startswith("line 04999 x")
    assert output == [f"line {i:05d} {'x' * 100}" for i in range(5000)]


def test_600_kb_comment_then_hostname(pool, endpoint: Endpoint) -> None:
    script = "# " + "c" * 600_000 + "\nhostname"
    ps = PowerShell(pool)
    ps.add_script(script)
    assert ps.invoke() == [endpoint.name]


def test_pool_reuse_for_many_pipelines(lab: Lab, endpoint: Endpoint) -> None:
    service = lab.hosts[endpoint.name].service.psrp
    with psrp_pool(endpoint) as pool:
        for i in range(60):
            ps = PowerShell(pool)
            ps.add_script(f"Write-Output 'run {i}'")
            assert ps.invoke() == [f"run {i}"]
            ps.close()
        lab_pool = lab.call(lambda: service.pools[str(pool.shell.id).upper()])
        assert lab.call(lambda: len(lab_pool.pipes)) == 0  # every closed pipeline is gone on the host
    assert lab.call(lambda: str(pool.shell.id).upper() not in service.pools)


# --- pypsrp Client helpers ------------------------------------------------------------------------
def test_client_execute_ps(endpoint: Endpoint) -> None:
    client = psrp_client(endpoint)
    output, streams, had_errors = client.execute_ps("hostname")
    assert output == endpoint.name
    assert not had_errors
    output, streams, had_errors = client.execute_ps("Get-Service wuauserv")
    assert "wuauserv" in output and "Running" in output
    # pypsrp's had_errors means "the pipeline failed": a non-terminating error leaves it False
    output, streams, had_errors = client.execute_ps("Write-Error 'bad'")
    assert not had_errors and [str(e) for e in streams.error] == ["bad"]
    output, streams, had_errors = client.execute_ps("$ErrorActionPreference = 'Stop'; Write-Error 'worse'; 'after'")
    assert had_errors and "after" not in output


def test_client_execute_cmd(endpoint: Endpoint) -> None:
    client = psrp_client(endpoint)
    assert client.execute_cmd("hostname") == (endpoint.name + "\r\n", "", 0)
    stdout, stderr, rc = client.execute_cmd("nosuchtool /x")
    assert rc == 9009 and "'nosuchtool' is not recognized" in stderr
    assert client.execute_cmd("exit /b 12")[2] == 12


def test_client_copy_and_fetch(lab: Lab, endpoint: Endpoint, tmp_path: Path) -> None:
    data = bytes(range(256)) * 2000  # 512 KB: several copy chunks
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    client = psrp_client(endpoint)
    remote = client.copy(str(source), "C:\\Windows\\Temp\\payload.bin")
    assert remote == "C:\\Windows\\Temp\\payload.bin"
    assert lab.host(endpoint.name).state.files["c:\\windows\\temp\\payload.bin"] == data
    target = tmp_path / "back.bin"
    client.fetch("C:\\Windows\\Temp\\payload.bin", str(target))
    assert hashlib.sha1(target.read_bytes()).hexdigest() == hashlib.sha1(data).hexdigest()


def test_client_fetch_of_missing_file_fails(endpoint: Endpoint, tmp_path: Path) -> None:
    client = psrp_client(endpoint)
    with pytest.raises(Exception, match="does not exist"):
        client.fetch("C:\\nope\\missing.txt", str(tmp_path / "x"))


# --- wuremote's scripts over PSRP ---------------------------------------------------------------
def test_boot_info_payload_returns_result_object(pool, lab: Lab, endpoint: Endpoint) -> None:
    payload = scripts.get_script("boot-info").payload()
    ps = PowerShell(pool)
    ps.add_script(payload)
    ps.add_parameter("RunId", "run-1")
    output = ps.invoke()
    assert not ps.had_errors, [str(e) for e in ps.streams.error]
    assert len(output) == 1
    result = _props(output[0])
    assert result["step"] == "boot-info"
    assert result["exit_code"] == 0 and result["status"] == "ok"
    assert result["wuremote_result"] == 1
    assert pool.host.rc is None  # exit 0 makes no SetShouldExit call


def test_edited_boot_info_payload_is_refused(pool) -> None:
    payload = edit_one_byte(scripts.get_script("boot-info").payload())
    ps = PowerShell(pool)
    ps.add_script(payload)
    ps.add_parameter("RunId", "run-2")
    output = ps.invoke()
    assert output == []
    assert ps.state == PSInvocationState.FAILED and ps.had_errors
    assert any("no model" in str(e) for e in ps.streams.error)
