"""collect-logs against the lab over the raw pypsrp client (and pywinrm once).

The tails are what an operator reads in a failed host's artifacts: they must be bounded,
start on a whole line, and show the trouble the host actually has.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import psrp_wsman, winrm_protocol
from pypsrp.complex_objects import GenericComplexObject
from pypsrp.host import PSHost
from pypsrp.powershell import PowerShell, RunspacePool

from wuremote.contract import scripts
from wuremote.lab.lab import Lab
from wuremote.transport.winrm import stdin_for

TIME_SCALE = 0.001
FLEET = """
[[hosts]]
name = "healthy"
scenario = "healthy"

[[hosts]]
name = "store"
scenario = "component-store-corrupt"

[[hosts]]
name = "source"
scenario = "component-store-needs-source"

[[hosts]]
name = "user"
scenario = "healthy"
[hosts.state]
is_admin = false
"""
LOGS = {"CBS.log", "dism.log", "WindowsUpdateClient"}
CBS_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d, (Info|Error|Warning) ")
EVENT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z \d+ (Information|Error|Warning) ")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    path: Path = tmp_path_factory.mktemp("logs") / "fleet.toml"
    path.write_text(FLEET, encoding="utf-8")
    with Lab(scenario=path, time_scale=TIME_SCALE) as running:
        yield running


def plain(value: Any) -> Any:
    """A deserialized result as plain dicts and lists."""
    if isinstance(value, GenericComplexObject):
        return {str(k): plain(v) for k, v in {**value.adapted_properties, **value.extended_properties}.items()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def collect(lab: Lab, host: str, **params: Any) -> tuple[int, dict[str, Any] | None, list[str]]:
    """Runs collect-logs over PSRP: exit code, result object (None when none came) and error records."""
    shell_host = PSHost(None, None, False, "test", None, None, "1.0")
    with RunspacePool(psrp_wsman(lab.endpoint(host)), host=shell_host) as pool:
        ps = PowerShell(pool)
        ps.add_script(scripts.get_script("collect-logs").payload())
        ps.add_parameter("RunId", "run-1")
        for name, value in params.items():
            ps.add_parameter(name, value)
        output = ps.invoke()
        errors = [str(e) for e in ps.streams.error]
    results = [plain(o) for o in output]
    assert len(results) <= 1
    return shell_host.rc or 0, (results[0] if results else None), errors


def logs_of(lab: Lab, host: str, **params: Any) -> dict[str, dict[str, Any]]:
    code, result, errors = collect(lab, host, **params)
    assert (code, errors) == (0, [])
    assert result is not None and result["step"] == "collect-logs" and result["status"] == "ok"
    assert result["facts"]["errors"] == []
    return result["facts"]["logs"]


def test_every_log_comes_back_as_a_tail_of_whole_lines(lab: Lab) -> None:
    logs = logs_of(lab, "healthy01")
    assert set(logs) == LOGS
    for name, log in logs.items():
        text = log["text"]
        assert isinstance(log["bytes_total"], int) and isinstance(log["truncated"], bool), name
        assert len(text.encode("utf-8")) <= 65536 and text.endswith("\r\n"), name
        pattern = EVENT_LINE if name == "WindowsUpdateClient" else CBS_LINE
        assert all(pattern.match(line) for line in text.split("\r\n")[:-1]), name
    assert logs["CBS.log"]["truncated"] and logs["CBS.log"]["bytes_total"] > 65536  # a real CBS.log is long
    assert "Total Detected Corruption:\t0" in logs["CBS.log"]["text"]


def test_max_bytes_bounds_each_tail_and_keeps_the_newest_lines(lab: Lab) -> None:
    full = logs_of(lab, "healthy01", MaxBytes=1048576)
    small = logs_of(lab, "healthy01", MaxBytes=1024)
    for name in LOGS:
        text = small[name]["text"]
        assert 0 < len(text.encode("utf-8")) <= 1024 and small[name]["truncated"], name
        assert full[name]["text"].endswith(text), name  # the front is cut, never the newest lines
        assert small[name]["bytes_total"] == full[name]["bytes_total"], name
    assert not full["CBS.log"]["truncated"]
    assert CBS_LINE.match(small["CBS.log"]["text"])  # starts on a whole line


def test_a_corrupt_component_store_shows_in_the_cbs_tail(lab: Lab) -> None:
    logs = logs_of(lab, "store01")
    assert "(p)\tCSI Payload Corrupt" in logs["CBS.log"]["text"]
    assert "[SR] Cannot repair member file" in logs["CBS.log"]["text"]
    assert "(p)\tCSI Payload Corrupt" not in logs_of(lab, "healthy01")["CBS.log"]["text"]


def test_a_store_that_needs_a_source_shows_in_dism_log_and_the_failures_in_the_events(lab: Lab) -> None:
    logs = logs_of(lab, "source01")
    assert "0x800f081f" in logs["dism.log"]["text"]
    newest = logs["WindowsUpdateClient"]["text"].split("\r\n")[-2]
    failure = lab.call(lambda: dict(lab.host("source01").state.update_history[0]))
    assert " Error " in newest and str(failure["hresult"]) in newest


def test_a_session_without_an_admin_token_gets_exit_5_and_no_logs(lab: Lab) -> None:
    code, result, _ = collect(lab, "user01")
    assert code == 5 and result is not None
    assert result["status"] == "not-elevated" and result["facts"] == {}


def test_max_bytes_out_of_range_is_refused_before_the_script_runs(lab: Lab) -> None:
    _, result, errors = collect(lab, "healthy01", MaxBytes=100)
    assert result is None and any("MaxBytes" in e for e in errors)


def test_over_winrs_the_result_is_one_marked_json_line(lab: Lab) -> None:
    bootstrap = scripts.scripts_dir().joinpath("_winrs_bootstrap.ps1").read_text(encoding="utf-8")
    command = "powershell -NoProfile -NonInteractive -EncodedCommand " + base64.b64encode(bootstrap.encode("utf-16-le")).decode()
    marker = "WUREMOTE-RESULT-" + uuid.uuid4().hex
    protocol = winrm_protocol(lab.endpoint("store01"))
    shell_id = protocol.open_shell(codepage=65001)
    try:
        command_id = protocol.run_command(shell_id, command)
        stdin = stdin_for(scripts.get_script("collect-logs").session_payload(),
                          {"RunId": "winrs-run", "ResultMarker": marker, "MaxBytes": 4096}, staged=False)
        protocol.send_command_input(shell_id, command_id, stdin, end=True)
        stdout, stderr, code = protocol.get_command_output(shell_id, command_id)
        protocol.cleanup_command(shell_id, command_id)
    finally:
        protocol.close_shell(shell_id)
    assert code == 0, stderr
    lines = [line for line in stdout.decode("utf-8").split("\r\n") if line.startswith(marker + " ")]
    assert len(lines) == 1
    result = json.loads(lines[0][len(marker) + 1:])
    assert result["step"] == "collect-logs" and result["exit_code"] == 0
    assert set(result["facts"]["logs"]) == LOGS
    assert "[SR] Cannot repair member file" in result["facts"]["logs"]["CBS.log"]["text"]
