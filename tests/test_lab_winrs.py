"""The unmodified pywinrm client against the lab's WinRS shell (HTTPS + Basic, TLS verified)."""

from __future__ import annotations

import base64
import json
import uuid
import xml.etree.ElementTree as ET

import pytest
import requests
from conftest import edit_one_byte, held_clock, in_reboot, port_open, wait_for, winrm_protocol, winrm_session

from wuremote.contract import scripts
from wuremote.lab.lab import Endpoint, Lab
from wuremote.transport.winrm import stdin_for

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}


# --- pywinrm Session -----------------------------------------------------------------------
def test_run_cmd_hostname_and_whoami(endpoint: Endpoint) -> None:
    session = winrm_session(endpoint)
    result = session.run_cmd("hostname")
    assert (result.status_code, result.std_out, result.std_err) == (0, endpoint.name.encode() + b"\r\n", b"")
    who = session.run_cmd("whoami")
    assert who.std_out.strip().decode() == f"{endpoint.name.lower()}\\{endpoint.username.lower()}"


def test_run_cmd_echo_with_arguments(endpoint: Endpoint) -> None:
    result = winrm_session(endpoint).run_cmd("echo", ["hello", "lab"])
    assert result.status_code == 0
    assert result.std_out == b"hello lab\r\n"


def test_cmd_exit_codes(endpoint: Endpoint) -> None:
    session = winrm_session(endpoint)
    assert session.run_cmd("exit /b 7").status_code == 7
    assert session.run_cmd("cmd /c exit 42").status_code == 42
    assert session.run_cmd("cmd", ["/c", "exit", "3"]).status_code == 3


def test_cmd_unknown_command_is_9009(endpoint: Endpoint) -> None:
    result = winrm_session(endpoint).run_cmd("frobnicate.exe /all")
    assert result.status_code == 9009
    assert result.std_out == b""
    assert b"'frobnicate.exe' is not recognized as an internal or external command" in result.std_err


def test_run_ps_output_and_exit_code(endpoint: Endpoint) -> None:
    session = winrm_session(endpoint)
    result = session.run_ps("Write-Output 'one'\nhostname\n$env:COMPUTERNAME\nexit 5")
    assert result.status_code == 5
    assert result.std_out.decode().split("\r\n")[:3] == ["one", endpoint.name, endpoint.name]


def test_run_ps_error_stream_is_clixml_decoded(endpoint: Endpoint) -> None:
    result = winrm_session(endpoint).run_ps("Write-Output 'before'; Write-Error 'it broke'; Write-Output 'after'")
    # Write-Error is non-terminating: the script goes on and powershell.exe still exits 0
    assert result.status_code == 0
    assert result.std_out == b"before\r\nafter\r\n"
    assert b"it broke" in result.std_err
    assert b"#< CLIXML" not in result.std_err  # pywinrm decoded the CLIXML the console wrote


def test_run_ps_unknown_cmdlet_gives_command_not_found(endpoint: Endpoint) -> None:
    result = winrm_session(endpoint).run_ps("Get-FrobnicatedThing -All")
    text = result.std_err.decode()
    assert "The term 'Get-FrobnicatedThing' is not recognized as the name of a cmdlet, function, script file, or operable program." in text
    assert "CommandNotFoundException" in text
    assert result.std_out == b""


def test_run_ps_error_action_stop_ends_the_script(endpoint: Endpoint) -> None:
    result = winrm_session(endpoint).run_ps("$ErrorActionPreference = 'Stop'\nWrite-Error 'fatal'\nWrite-Output 'not reached'")
    assert result.status_code == 1
    assert b"not reached" not in result.std_out
    assert b"fatal" in result.std_err


def test_run_ps_get_service_and_last_boot(lab: Lab, endpoint: Endpoint) -> None:
    result = winrm_session(endpoint).run_ps("Get-Service wuauserv")
    assert result.status_code == 0
    assert "wuauserv" in result.std_out.decode() and "Running" in result.std_out.decode()
    boot = winrm_session(endpoint).run_ps("(Get-CimInstance Win32_OperatingSystem).LastBootUpTime")
    assert boot.status_code == 0
    assert str(lab.host(endpoint.name).state.last_boot.year) in boot.std_out.decode()


def test_run_ps_start_sleep_is_scaled(endpoint: Endpoint) -> None:
    import time

    start = time.monotonic()
    result = winrm_session(endpoint).run_ps("Start-Sleep -Seconds 50; Write-Output done")
    elapsed = time.monotonic() - start
    assert result.std_out == b"done\r\n"
    assert 0.4 <= elapsed < 25  # 50 modelled seconds at time scale 0.01 (0.5 s), far from the 50 s unscaled


def test_run_ps_of_3kb_script_is_too_long_for_cmd(endpoint: Endpoint) -> None:
    script = "Write-Output '" + "x" * 3100 + "'"
    result = winrm_session(endpoint).run_ps(script)
    assert result.status_code == 1
    assert result.std_err.strip() == b"The command line is too long."
    assert result.std_out == b""
    # ...while a 2.5 KB script still fits in cmd.exe's 8191 characters
    fits = winrm_session(endpoint).run_ps("Write-Output '" + "y" * 2500 + "'")
    assert fits.status_code == 0 and fits.std_out.strip() == b"y" * 2500


# --- pywinrm Protocol ----------------------------------------------------------------------
def test_protocol_shell_lifecycle(endpoint: Endpoint) -> None:
    protocol = winrm_protocol(endpoint)
    shell_id = protocol.open_shell()
    try:
        first = protocol.run_command(shell_id, "hostname")
        assert protocol.get_command_output(shell_id, first) == (endpoint.name.encode() + b"\r\n", b"", 0)
        protocol.cleanup_command(shell_id, first)
        second = protocol.run_command(shell_id, "exit", ["/b", "9"])  # the same shell runs a second command
        assert protocol.get_command_output(shell_id, second)[2] == 9
        protocol.cleanup_command(shell_id, second)
    finally:
        protocol.close_shell(shell_id)


def test_send_command_input_to_powershell_stdin(endpoint: Endpoint) -> None:
    protocol = winrm_protocol(endpoint)
    shell_id = protocol.open_shell()
    try:
        command_id = protocol.run_command(shell_id, "powershell", ["-NoProfile", "-Command", "-"])
        protocol.send_command_input(shell_id, command_id, b"Write-Output 'first'\r\n")
        protocol.send_command_input(shell_id, command_id, b"hostname\r\n", end=True)
        stdout, stderr, code = protocol.get_command_output(shell_id, command_id)
        protocol.cleanup_command(shell_id, command_id)
    finally:
        protocol.close_shell(shell_id)
    assert code == 0
    assert stdout.decode().split("\r\n")[:2] == ["first", endpoint.name]


def test_powershell_stdin_runs_line_by_line_and_ignores_error_action(endpoint: Endpoint) -> None:
    """Real powershell.exe `-Command -` ignores $ErrorActionPreference: the lab must not do better."""
    protocol = winrm_protocol(endpoint)
    shell_id = protocol.open_shell()
    try:
        command_id = protocol.run_command(shell_id, "powershell", ["-NoProfile", "-NonInteractive", "-Command", "-"])
        script = "$ErrorActionPreference = 'Stop'\r\nWrite-Error 'first line failed'\r\nWrite-Output 'second line still ran'\r\n"
        protocol.send_command_input(shell_id, command_id, script.encode(), end=True)
        stdout, stderr, code = protocol.get_command_output(shell_id, command_id)
        protocol.cleanup_command(shell_id, command_id)
    finally:
        protocol.close_shell(shell_id)
    assert b"second line still ran" in stdout
    assert b"first line failed" in stderr
    assert code == 0


def test_codepage_437_and_65001(endpoint: Endpoint) -> None:
    protocol = winrm_protocol(endpoint)
    outputs = {}
    for codepage in (437, 65001):
        shell_id = protocol.open_shell(codepage=codepage)
        try:
            command_id = protocol.run_command(shell_id, "echo café über")
            outputs[codepage] = protocol.get_command_output(shell_id, command_id)
            protocol.cleanup_command(shell_id, command_id)
        finally:
            protocol.close_shell(shell_id)
    assert outputs[437][0] == "café über\r\n".encode("cp437")
    assert outputs[65001][0] == "café über\r\n".encode()
    assert outputs[437][0] != outputs[65001][0]


# --- envelope fidelity ----------------------------------------------------------------------
def _envelope(endpoint: Endpoint, action: str, body: str, selectors: str = "", options: str = "",
              max_envelope: int = 153600) -> tuple[str, str]:
    message_id = f"uuid:{uuid.uuid4()}".upper().replace("UUID:", "uuid:")
    xml = f"""<s:Envelope xmlns:s="{NS['s']}" xmlns:a="{NS['a']}" xmlns:w="{NS['w']}" xmlns:rsp="{NS['rsp']}">
<s:Header>
<a:To>{endpoint.url}</a:To>
<a:ReplyTo><a:Address s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>
<a:Action s:mustUnderstand="true">{action}</a:Action>
<w:MaxEnvelopeSize s:mustUnderstand="true">{max_envelope}</w:MaxEnvelopeSize>
<a:MessageID>{message_id}</a:MessageID>
<w:Locale xml:lang="en-US" s:mustUnderstand="false"/>
<w:OperationTimeout>PT2S</w:OperationTimeout>
<w:ResourceURI s:mustUnderstand="true">http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI>
{selectors}{options}
</s:Header>
<s:Body>{body}</s:Body>
</s:Envelope>"""
    return message_id, xml


def _post(endpoint: Endpoint, xml: str) -> requests.Response:
    return requests.post(
        endpoint.url,
        data=xml.encode("utf-8"),
        headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
        auth=(endpoint.username, endpoint.password),
        verify=endpoint.ca_file,
        timeout=10,
    )


def test_raw_envelopes_relate_to_requests(endpoint: Endpoint) -> None:
    transfer = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
    shell_action = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
    # Create: RelatesTo is our MessageID, the ShellId selector names the new shell
    message_id, xml = _envelope(
        endpoint, f"{transfer}/Create",
        "<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>",
        options='<w:OptionSet><w:Option Name="WINRS_CODEPAGE">65001</w:Option></w:OptionSet>',
    )
    response = _post(endpoint, xml)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/soap+xml")
    root = ET.fromstring(response.content)
    assert root.findtext("s:Header/a:RelatesTo", namespaces=NS) == message_id
    assert root.findtext("s:Header/a:Action", namespaces=NS) == f"{transfer}/CreateResponse"
    assert root.findtext("s:Header/a:MessageID", namespaces=NS).startswith("uuid:")
    selector = root.find("s:Body/x:ResourceCreated/a:ReferenceParameters/w:SelectorSet/w:Selector", NS)
    assert selector is not None and selector.attrib["Name"] == "ShellId"
    shell_id = selector.text
    assert root.findtext("s:Body/rsp:Shell/rsp:ShellId", namespaces=NS) == shell_id
    shell_selector = f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'

    # Command, then Receive: base64 streams and CommandState Done with the ExitCode
    message_id, xml = _envelope(
        endpoint, f"{shell_action}/Command",
        "<rsp:CommandLine><rsp:Command>hostname</rsp:Command></rsp:CommandLine>",
        selectors=shell_selector,
    )
    root = ET.fromstring(_post(endpoint, xml).content)
    assert root.findtext("s:Header/a:RelatesTo", namespaces=NS) == message_id
    command_id = root.findtext("s:Body/rsp:CommandResponse/rsp:CommandId", namespaces=NS)
    assert command_id

    stdout = b""
    for _ in range(20):
        message_id, xml = _envelope(
            endpoint, f"{shell_action}/Receive",
            f'<rsp:Receive><rsp:DesiredStream CommandId="{command_id}">stdout stderr</rsp:DesiredStream></rsp:Receive>',
            selectors=shell_selector,
        )
        root = ET.fromstring(_post(endpoint, xml).content)
        assert root.findtext("s:Header/a:RelatesTo", namespaces=NS) == message_id
        for stream in root.findall("s:Body/rsp:ReceiveResponse/rsp:Stream", NS):
            assert stream.attrib["CommandId"] == command_id
            if stream.attrib["Name"] == "stdout" and stream.text:
                stdout += base64.b64decode(stream.text)
        state = root.find("s:Body/rsp:ReceiveResponse/rsp:CommandState", NS)
        if state is not None and state.attrib["State"].endswith("/Done"):
            break
    assert state.attrib["State"] == "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
    assert stdout == endpoint.name.encode() + b"\r\n"
    assert state.findtext("rsp:ExitCode", namespaces=NS) == "0"

    message_id, xml = _envelope(endpoint, f"{transfer}/Delete", "", selectors=shell_selector)
    response = _post(endpoint, xml)
    assert response.status_code == 200
    assert ET.fromstring(response.content).findtext("s:Header/a:RelatesTo", namespaces=NS) == message_id


def test_receive_honours_max_envelope_size(endpoint: Endpoint) -> None:
    transfer = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
    shell_action = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
    _, xml = _envelope(endpoint, f"{transfer}/Create", "<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams>"
                       "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>")
    shell_id = ET.fromstring(_post(endpoint, xml).content).findtext("s:Body/rsp:Shell/rsp:ShellId", namespaces=NS)
    selectors = f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
    text = "e" * 8000
    _, xml = _envelope(endpoint, f"{shell_action}/Command",
                       f"<rsp:CommandLine><rsp:Command>echo {text}</rsp:Command></rsp:CommandLine>", selectors=selectors)
    command_id = ET.fromstring(_post(endpoint, xml).content).findtext("s:Body/rsp:CommandResponse/rsp:CommandId", namespaces=NS)
    stdout, sizes, done = b"", [], False
    while not done and len(sizes) < 50:
        _, xml = _envelope(endpoint, f"{shell_action}/Receive",
                           f'<rsp:Receive><rsp:DesiredStream CommandId="{command_id}">stdout stderr</rsp:DesiredStream></rsp:Receive>',
                           selectors=selectors, max_envelope=4096)
        response = _post(endpoint, xml)
        sizes.append(len(response.content))
        root = ET.fromstring(response.content)
        for stream in root.findall("s:Body/rsp:ReceiveResponse/rsp:Stream", NS):
            stdout += base64.b64decode(stream.text or "")
        state = root.find("s:Body/rsp:ReceiveResponse/rsp:CommandState", NS)
        done = state is not None and state.attrib["State"].endswith("/Done")
    assert stdout == text.encode() + b"\r\n"
    assert len(sizes) >= 3 and max(sizes) <= 4096
    _post(endpoint, _envelope(endpoint, f"{transfer}/Delete", "", selectors=selectors)[1])


def test_send_message_returns_windows_like_create_response(endpoint: Endpoint) -> None:
    """pywinrm's own request builder, the raw response text checked."""
    protocol = winrm_protocol(endpoint)
    message_id = uuid.uuid4()
    request = {"env:Envelope": protocol._get_soap_header(
        resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
        action="http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
        message_id=message_id,
    )}
    shell = request["env:Envelope"].setdefault("env:Body", {}).setdefault("rsp:Shell", {})
    shell["rsp:InputStreams"] = "stdin"
    shell["rsp:OutputStreams"] = "stdout stderr"
    import xmltodict

    raw = protocol.send_message(xmltodict.unparse(request))
    root = ET.fromstring(raw)
    assert root.findtext("s:Header/a:RelatesTo", namespaces=NS) == f"uuid:{message_id}"
    shell_id = root.findtext("s:Body/x:ResourceCreated/a:ReferenceParameters/w:SelectorSet/w:Selector[@Name='ShellId']", namespaces=NS)
    assert shell_id
    protocol.close_shell(shell_id)


# --- wuremote's scripts over WinRS --------------------------------------------------------------
def _bootstrap_command() -> str:
    bootstrap = scripts.scripts_dir().joinpath("_winrs_bootstrap.ps1").read_text(encoding="utf-8")
    encoded = base64.b64encode(bootstrap.encode("utf-16-le")).decode("ascii")
    return f"powershell -NoProfile -NonInteractive -EncodedCommand {encoded}"


def _run_bootstrap(endpoint: Endpoint, payload: str, params: dict, codepage: int = 65001) -> tuple[bytes, bytes, int]:
    protocol = winrm_protocol(endpoint)
    shell_id = protocol.open_shell(codepage=codepage)
    try:
        command_id = protocol.run_command(shell_id, _bootstrap_command())
        protocol.send_command_input(shell_id, command_id, stdin_for(payload, params, staged=False), end=True)
        result = protocol.get_command_output(shell_id, command_id)
        protocol.cleanup_command(shell_id, command_id)
        return result
    finally:
        protocol.close_shell(shell_id)


def test_boot_info_over_winrs_prints_marked_result(lab: Lab, endpoint: Endpoint) -> None:
    payload = scripts.get_script("boot-info").session_payload()
    marker = "WUREMOTE-RESULT-" + uuid.uuid4().hex
    stdout, stderr, code = _run_bootstrap(endpoint, payload, {"RunId": "r1", "ResultMarker": marker})
    assert code == 0, stderr
    lines = [line for line in stdout.decode("utf-8").split("\r\n") if line.startswith(marker + " ")]
    assert len(lines) == 1
    result = json.loads(lines[0][len(marker) + 1:])
    assert result["step"] == "boot-info" and result["exit_code"] == 0 and result["status"] == "ok"
    assert result["facts"]["last_boot_utc"] == lab.host(endpoint.name).state.last_boot.isoformat()


@pytest.mark.parametrize("codepage", [65001, 437])
def test_non_ascii_survives_the_bootstrap_whatever_the_shell_code_page(lab: Lab, endpoint: Endpoint, codepage: int) -> None:
    # A localised Windows names itself with accents; the bootstrap reads stdin and writes stdout as
    # UTF-8 itself, so neither the parameters nor the result depend on the shell's code page.
    state = lab.host(endpoint.name).state
    caption, before = "Microsoft Windows Server 2019 Datacenter Évaluation", state.os_caption
    lab.call(lambda: setattr(state, "os_caption", caption))
    marker = "WUREMOTE-RESULT-" + uuid.uuid4().hex
    try:
        stdout, stderr, code = _run_bootstrap(endpoint, scripts.get_script("diagnose").session_payload(),
                                              {"RunId": "r-é", "ResultMarker": marker,
                                               "ControllerUtc": "2026-01-01T00:00:00Z"}, codepage)
    finally:
        lab.call(lambda: setattr(state, "os_caption", before))
    assert code == 0, stderr
    [line] = [line for line in stdout.decode("utf-8").split("\r\n") if line.startswith(marker + " ")]
    assert json.loads(line[len(marker) + 1:])["facts"]["os"]["caption"] == caption


def test_edited_boot_info_over_winrs_is_refused(endpoint: Endpoint) -> None:
    payload = scripts.get_script("boot-info").session_payload()
    edited = edit_one_byte(payload)
    stdout, stderr, code = _run_bootstrap(endpoint, edited, {"RunId": "r2", "ResultMarker": "M"})
    assert code != 0
    assert b"no model" in winrm_session(endpoint)._clean_error_msg(stderr)
    assert not any(line.startswith(b"M ") for line in stdout.split(b"\r\n"))


# --- reboot and reconnect --------------------------------------------------------------------------
def _reboot_and_reconnect(lab: Lab, endpoint: Endpoint, command: str) -> None:
    host = lab.host(endpoint.name)
    host.state.boot_seconds = 60
    before = host.state.last_boot
    session = winrm_session(endpoint)
    # The restart's waits end when the test says so: the client reads its answer before WinRM
    # goes, and the host stays down until the test has seen it down.
    with held_clock(lab, host, when=in_reboot(host)) as clock:
        if command.startswith("shutdown"):
            result = session.run_cmd(command)
        else:
            result = session.run_ps(command)
        assert result.status_code == 0, result.std_err
        clock.release()
        wait_for(lambda: not port_open(endpoint))
    wait_for(lambda: port_open(endpoint))
    after = winrm_session(endpoint).run_ps("(Get-CimInstance Win32_OperatingSystem).LastBootUpTime")
    assert after.status_code == 0
    assert host.state.last_boot > before
    assert winrm_session(endpoint).run_cmd("hostname").std_out.strip() == endpoint.name.encode()


def test_restart_computer_then_reconnect(fresh_lab: Lab) -> None:
    _reboot_and_reconnect(fresh_lab, fresh_lab.endpoints[0], "Restart-Computer -Force")


def test_shutdown_r_then_reconnect(fresh_lab: Lab) -> None:
    _reboot_and_reconnect(fresh_lab, fresh_lab.endpoints[0], "shutdown /r /t 0")
