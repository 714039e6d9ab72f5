"""Conformance: pypsrp's recordings of real Windows exchanges, replayed against the lab.

``tests/recordings/pypsrp/*.yml`` are pypsrp's ``tests/tests_pypsrp/responses`` files (MIT, see
the LICENSE beside them; commit 42a34edd of jborean93/pypsrp): each holds the requests pypsrp sent
to a real Windows host and the host's answers.  Every request is sent to a lab host as it was
recorded (only the ids the server chose are swapped for the lab's), and the two answers are
compared by their structure: the action, the element paths in the body, selectors, stream names,
CommandState and exit code, fault codes and subcodes, and the PSRP message types the streams carry.
Ids, times and payload content are not compared.  What still differs is listed in KNOWN below with
why it does not matter, and in the README ("What the lab speaks"); a new difference fails the test.
"""

from __future__ import annotations

import base64
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from wuremote.lab.lab import Lab

RECORDINGS = Path(__file__).parent / "recordings" / "pypsrp"
NS = {"s": "http://www.w3.org/2003/05/soap-envelope", "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
      "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
      "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
      "wmi": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError"}
# MS-PSRP 2.2.1: message types by value.
PSRP_TYPES = {0x00010002: "SESSION_CAPABILITY", 0x00010004: "INIT_RUNSPACEPOOL", 0x00010005: "PUBLIC_KEY",
              0x00010006: "ENCRYPTED_SESSION_KEY", 0x00010007: "PUBLIC_KEY_REQUEST", 0x00010008: "CONNECT_RUNSPACEPOOL",
              0x0002100B: "RUNSPACEPOOL_INIT_DATA", 0x0002100C: "RESET_RUNSPACE_STATE", 0x00021002: "SET_MAX_RUNSPACES",
              0x00021003: "SET_MIN_RUNSPACES", 0x00021004: "RUNSPACE_AVAILABILITY", 0x00021005: "RUNSPACEPOOL_STATE",
              0x00021006: "CREATE_PIPELINE", 0x00021007: "GET_AVAILABLE_RUNSPACES", 0x00021008: "USER_EVENT",
              0x00021009: "APPLICATION_PRIVATE_DATA", 0x0002100A: "GET_COMMAND_METADATA",
              0x00021100: "RUNSPACEPOOL_HOST_CALL", 0x00021101: "RUNSPACEPOOL_HOST_RESPONSE",
              0x00041002: "PIPELINE_INPUT", 0x00041003: "END_OF_PIPELINE_INPUT", 0x00041004: "PIPELINE_OUTPUT",
              0x00041005: "ERROR_RECORD", 0x00041006: "PIPELINE_STATE", 0x00041007: "DEBUG_RECORD",
              0x00041008: "VERBOSE_RECORD", 0x00041009: "WARNING_RECORD", 0x00041010: "PROGRESS_RECORD",
              0x00041011: "INFORMATION_RECORD", 0x00041100: "PIPELINE_HOST_CALL", 0x00041101: "PIPELINE_HOST_RESPONSE"}

# What the lab answers differently, per recording and answer, and why that does not matter (the
# README's "What the lab speaks" lists them too).  A difference not listed here fails the test, and
# so does one listed here that is gone (then delete its line).
PROGRESS = "Windows sends 'Preparing modules for first use.' the first time a pool runs a pipeline; the lab does not"
VOCABULARY = "the script uses PowerShell the lab's small vocabulary does not run (variables, properties, Get-Service objects)"
KNOWN: dict[str, dict[str, str]] = {
    "test_client_execute_cmd": {"message 2": "`dir`: the lab has no directory listing (exit 9009, 'not recognized')"},
    "test_client_execute_ps": {"psrp types": f"-PIPELINE_OUTPUT -PROGRESS_RECORD: {VOCABULARY}; {PROGRESS}"},
    "test_client_execute_ps_failure": {"psrp types": f"-PROGRESS_RECORD: {PROGRESS}"},
    "test_psrp_error_failed": {"psrp types": f"-PROGRESS_RECORD: {PROGRESS}"},
    "test_psrp_multiple_commands": {"psrp types": f"-PIPELINE_OUTPUT: {VOCABULARY}"},
    "test_psrp_stream_output_invocation": {"psrp types": f"-PROGRESS_RECORD: {PROGRESS}"},
    "test_psrp_with_input": {"psrp types": f"-DEBUG_RECORD -PIPELINE_OUTPUT -PROGRESS_RECORD: {VOCABULARY}; {PROGRESS}"},
    # `Start-Sleep 30` lasts 30 ms at the lab's time scale: the recorded OperationTimeout faults of the
    # polls during the sleep are answered with the command's end instead (the fault itself is
    # conformant: test_lab_winrs and the fault matrix's OperationTimeout storm).
    "test_winrs_operation_timeout": {"message 3": "time scale", "message 4": "time scale", "message 5": "time scale"},
}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _paths(node: ET.Element, prefix: str = "") -> set[str]:
    path = f"{prefix}/{_local(node.tag)}"
    found = {path}
    for child in node:
        found |= _paths(child, path)
    return found


def psrp_types(data: bytes) -> list[str]:
    """The PSRP message types in a stream's fragments (MS-PSRP 2.2.4: a start fragment holds the header)."""
    types = []
    offset = 0
    while offset + 21 <= len(data):
        _, _, flags, length = struct.unpack(">QQBI", data[offset:offset + 21])
        blob = data[offset + 21:offset + 21 + length]
        offset += 21 + length
        if flags & 1 and len(blob) >= 8:
            types.append(PSRP_TYPES.get(struct.unpack("<I", blob[4:8])[0], "?"))
    return types


def signature(status: int, text: str, psrp: bool) -> dict[str, Any]:
    """An answer's structure, without ids, times or payload."""
    if not text.strip():
        return {"http": status}
    root = ET.fromstring(text)
    body = root.find("s:Body", NS)
    fault = body.find("s:Fault", NS) if body is not None else None
    if fault is not None:
        code = fault.findtext("s:Detail/f:WSManFault/[@Code]", None, NS)
        wsman = fault.find("s:Detail/f:WSManFault", NS)
        wmi = fault.findtext("s:Detail/wmi:MSFT_WmiError/wmi:error_Code", None, NS)
        return {"http": status, "fault": (fault.findtext("s:Code/s:Value", "", NS),
                                          fault.findtext("s:Code/s:Subcode/s:Value", "", NS),
                                          wsman.get("Code") if wsman is not None else code, wmi)}
    streams = body.findall(".//rsp:Stream", NS) if body is not None else []
    state = body.find(".//rsp:CommandState", NS) if body is not None else None
    return {
        "http": status,
        "action": root.findtext("s:Header/wsa:Action", "", NS),
        "paths": sorted(p for p in _paths(body) if not p.endswith(("/ProcessId", "/ShellRunTime", "/ShellInactivity")))
        if body is not None else [],
        "streams": sorted({(s.get("Name", ""), s.get("End", "")) for s in streams}) if not psrp else
        sorted({s.get("Name", "") for s in streams}),
        "state": _local(state.get("State", "")).rsplit("/", 1)[-1] if state is not None else None,
        "exit": state.findtext("rsp:ExitCode", None, NS) if state is not None else None,
    }


def _ids(text: str) -> list[str]:
    root = ET.fromstring(text)
    found = [n.text or "" for n in root.iter() if _local(n.tag) in ("ShellId", "CommandId") and n.text]
    found += [n.text or "" for n in root.iter() if _local(n.tag) == "Selector" and n.get("Name") == "ShellId"]
    return found


@pytest.fixture(scope="module")
def clab() -> Iterator[Lab]:
    with Lab(hosts=1, scenario="healthy", time_scale=0.001) as running:
        yield running


def replay(lab: Lab, name: str) -> dict[str, str]:
    """Send a recording's requests to the lab; the differences found, by kind."""
    endpoint = lab.endpoints[0]
    messages = yaml.safe_load((RECORDINGS / f"{name}.yml").read_text(encoding="utf-8"))["messages"]
    ids: dict[str, str] = {}
    recorded_types: set[str] = set()
    lab_types: set[str] = set()
    problems: dict[str, str] = {}
    psrp = "schemas.microsoft.com/powershell/" in messages[0]["request"]
    with requests.Session() as session:
        for index, message in enumerate(messages):
            request = message["request"]
            for old, new in ids.items():
                request = re.sub(re.escape(old), new, request, flags=re.I)
            answer = session.post(endpoint.url, data=request.encode("utf-8"), verify=endpoint.ca_file, timeout=60,
                                  auth=(endpoint.username, endpoint.password),
                                  headers={"Content-Type": "application/soap+xml;charset=UTF-8"})
            recorded = message["response"]
            status = 500 if "<s:Fault>" in recorded else 200
            mine, theirs = signature(answer.status_code, answer.text, psrp), signature(status, recorded, psrp)
            texts = [answer.text]
            # A pipeline's end may come one long poll later on the lab than in the recording (the lab
            # answers as soon as it has output): that is timing, so poll again and merge the answers.
            for _ in range(5):
                if not (psrp and theirs.get("state") == "Done" and mine.get("http") == 200 and mine["state"] is None):
                    break
                again = session.post(endpoint.url, data=request.encode("utf-8"), verify=endpoint.ca_file, timeout=60,
                                     auth=(endpoint.username, endpoint.password),
                                     headers={"Content-Type": "application/soap+xml;charset=UTF-8"})
                more = signature(again.status_code, again.text, psrp)
                texts.append(again.text)
                mine = {**more, "paths": sorted(set(mine["paths"]) | set(more.get("paths", []))),
                        "streams": sorted(set(mine["streams"]) | set(more.get("streams", [])))}
            if status == 200 and answer.status_code == 200:
                for old, new in zip(_ids(recorded), _ids(answer.text), strict=False):
                    if old.upper() != new.upper():
                        ids.setdefault(old, new)
            for text, types in [(recorded, recorded_types)] + [(text, lab_types) for text in texts]:
                if psrp and text.strip():
                    for stream in ET.fromstring(text).iter(f"{{{NS['rsp']}}}Stream"):
                        types.update(psrp_types(base64.b64decode(stream.text or "")))
            if mine != theirs:
                problems[f"message {index}"] = f"lab {mine} != windows {theirs}"
    missing = sorted(recorded_types - lab_types)
    extra = sorted(lab_types - recorded_types)
    if missing or extra:
        problems["psrp types"] = " ".join([f"-{t}" for t in missing] + [f"+{t}" for t in extra])
    return problems


@pytest.mark.parametrize("name", sorted(p.stem for p in RECORDINGS.glob("*.yml")))
def test_lab_answers_as_the_recorded_windows_host(clab: Lab, name: str) -> None:
    problems = replay(clab, name)
    known = KNOWN.get(name, {})
    assert sorted(problems) == sorted(known), problems
    if "psrp types" in known:
        assert known["psrp types"].startswith(problems["psrp types"] + ":"), problems

