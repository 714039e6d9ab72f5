"""Hostile inputs reach a host only as data, and hostile host names only as safe file names.

Host names, usernames, KB ids, repair-source paths and step options full of quotes, $(),
';', backticks, newlines and non-ASCII go through the runner to the lab over both
transports.  The lab's recognisers are wrapped to record what arrived: every script is the
shipped payload byte for byte (a detached step's payload too, inside detached-start), and
each hostile value is a parameter value, unchanged.  A host told "Restart-Computer" in a
value does not restart.  Hostile inventory names still give artifact paths inside the run
directory, a report.json keyed by the exact names and a junit.xml that parses.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wuremote.cli import main
from wuremote.contract.scripts import load_scripts, sha256_text
from wuremote.engine.reboot import RebootSettings
from wuremote.engine.runner import Runner, RunOptions
from wuremote.inventory import HostConfig
from wuremote.lab import models
from wuremote.lab.lab import Lab
from wuremote.secret import Secret
from wuremote.transport import TransportSettings

LAB_SCALE = 0.001
# Loopback answers come at once; these bounds only stop a loaded CI machine from turning slowness into failures.
PATIENT = TransportSettings(connect_timeout=10.0, operation_timeout=5, read_timeout=20, open_retries=0, backoff=0.01)
TRANSPORTS = ("psrp", "winrm")
SCENARIOS = ("clock-skew", "component-store-needs-source", "manual-kb", "healthy")
HOSTILE = ("it's \"quoted\" $(Restart-Computer -Force); `whoami` & del C:\\* | Out-Null @(1) ${x}\n"
           "second line\r\n#< CLIXML ünïcødé ✓ 日本 \u202e")
# What each hostile field may still hold where the script's own [ValidatePattern] would stop anything else.
HOSTILE_SOURCE = "C:\\src'; $(Restart-Computer -Force); `whoami`; & del *\nünï ✓ 日本"
HOSTILE_KB = "KB5068787'; Restart-Computer -Force; '"
HOSTILE_NAMES = ("../../etc/passwd", "..", ".", "CON", "a\\b", "web01; rm -rf /", "$(whoami)", "`id`", "it's \"x\"",
                 "ünïcødé-✓-日本", "x" * 300, "tab\there", "new\nline", "nul\x00byte", "\u202eevil", "a:b", "*?<>|")


@pytest.fixture
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A fresh fleet per test: a repair run leaves its hosts repaired."""
    spec = tmp_path_factory.mktemp("lab") / "fleet.toml"
    spec.write_text("".join(f'[[hosts]]\nscenario = "{name}"\n\n' for name in SCENARIOS), encoding="utf-8")
    with Lab(scenario=spec, time_scale=LAB_SCALE) as running:
        yield running


@pytest.fixture(scope="module")
def healthy_lab() -> Iterator[Lab]:
    """One healthy host for tests that only check (they leave it as they found it)."""
    with Lab(hosts=1, scenario="healthy", time_scale=LAB_SCALE) as running:
        yield running


def options(state_dir: Path, command: str = "repair") -> RunOptions:
    return RunOptions(command=command, forks=32, state_dir=state_dir, poll_interval=0.05, time_scale=LAB_SCALE * 100,
                      host_timeout=120.0, transport=PATIENT,
                      reboot=RebootSettings(poll_interval=0.05, shutdown_timeout=20, boot_timeout=20,
                                            readiness_timeout=20, stability_window=0.1, probe_timeout=5))


def config(lab: Lab, index: int, transport: str, **overrides: Any) -> HostConfig:
    endpoint = lab.endpoints[index]
    values: dict[str, Any] = dict(name=endpoint.name, address=endpoint.address, port=endpoint.port,
                                  scheme=endpoint.scheme, transport=transport, auth="basic", username=endpoint.username,
                                  password=Secret(endpoint.password), ca_file=endpoint.ca_file)
    values.update(overrides)
    return HostConfig(**values)


def shipped_payloads() -> dict[str, str]:
    """What a step sends (its body, the prelude by reference), by step name."""
    return {name: script.session_payload() for name, script in load_scripts().items()}


def detached_bodies() -> dict[str, str]:
    """A detached step's staged body: the script with the prelude inlined (a task has no session)."""
    return {name: script.payload() for name, script in load_scripts().items()}


def step_of(known: models.Known) -> str:
    return known.text.split("\n", 2)[1].partition(":")[2].strip()


def assert_only_shipped_payloads(received: list[models.Known]) -> None:
    """Every script the lab got is a shipped payload byte for byte; so is every staged detached payload."""
    payloads = shipped_payloads()
    assert received
    for known in received:
        assert known.text == payloads[step_of(known)], step_of(known)
        if step_of(known) == "detached-start":  # the whole payload, or the shipped body the host completes
            step = known.params["Step"]
            if "Payload" in known.params:
                assert known.params["Payload"] == detached_bodies()[step]
            else:
                assert known.params["Body"] == load_scripts()[step].text
            assert known.params["PayloadSha256"] == sha256_text(detached_bodies()[step])
            assert isinstance(json.loads(known.params["ParametersJson"]), dict)


def params_of(received: list[models.Known], step: str) -> list[dict[str, Any]]:
    """The parameters a step received: bound directly, or staged for a detached step as ParametersJson."""
    found = [k.params for k in received if step_of(k) == step]
    found += [json.loads(k.params["ParametersJson"]) for k in received
              if step_of(k) == "detached-start" and k.params["Step"] == step]
    return found


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hostile_values_reach_the_host_only_as_data(lab: Lab, tmp_path: Path, transport: str,
                                                    received: list[models.Known]) -> None:
    skew, source, kb, healthy = (e.name for e in lab.endpoints)
    reboots_before = {name: lab.call(lambda n=name: lab.host(n).state.reboots) for name in (skew, source, healthy)}
    hosts = [
        config(lab, 0, transport, step_options={"sync-time": {"Peer": HOSTILE}}),
        config(lab, 1, transport, dism_source=HOSTILE_SOURCE),
        config(lab, 2, transport, kb=HOSTILE_KB, kb_url=f"https://download.lab.invalid/{HOSTILE_KB}.msu"),
        config(lab, 3, transport, step_options={"diagnose": {"Note": HOSTILE}, "verify": {"Note": HOSTILE}}),
    ]
    summary = Runner(hosts, options(tmp_path)).run()

    assert_only_shipped_payloads(received)
    assert [p["Peer"] for p in params_of(received, "sync-time")] == [HOSTILE]
    assert [p["Source"] for p in params_of(received, "dism")] == [HOSTILE_SOURCE]
    assert [p["KbId"] for p in params_of(received, "install-kb")] == [HOSTILE_KB]
    # The hosts judged the values as values: w32tm got a peer name, DISM a path it cannot reach, the KB id
    # failed install-kb's own pattern; nothing ran the commands written inside them.
    assert summary.outcomes == {skew: "repaired", source: "needs-operator", kb: "failed", healthy: "healthy"}, \
        summary.causes
    for name, before in reboots_before.items():  # "Restart-Computer" inside a value restarted nothing
        assert lab.call(lambda n=name: lab.host(n).state.reboots) == before, name
    run_ids = {k.params.get("RunId") for k in received if "RunId" in k.params}
    assert run_ids == {summary.run_id}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hostile_host_names_stay_inside_the_run_directory(healthy_lab: Lab, tmp_path: Path, transport: str,
                                                          received: list[models.Known]) -> None:
    """Each name is only a label (every one points at the healthy lab host): paths, report and junit stay sound."""
    hosts = [config(healthy_lab, 0, transport, name=name) for name in HOSTILE_NAMES]
    state = tmp_path / "state"
    summary = Runner(hosts, options(state, "check")).run()
    assert summary.outcomes == {name: "checked" for name in HOSTILE_NAMES}, summary.causes

    run_dir = summary.run_dir.resolve()
    written = [p.resolve() for p in state.rglob("*")]
    assert all(p == state.resolve() or state.resolve() in p.parents for p in written)
    assert not (tmp_path / "etc").exists()
    transcripts = sorted(p.name for p in (run_dir / "transcripts").iterdir())
    assert len(transcripts) == len(HOSTILE_NAMES)  # one folder per host: no two names collide
    assert all(len(name) <= 100 and "/" not in name and "\\" not in name and name not in (".", "..")
               for name in transcripts)
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    assert set(report["hosts"]) == set(HOSTILE_NAMES)
    for host in report["hosts"].values():  # every transcript a report names is inside the run dir
        for step in host.get("steps", []):
            if step.get("transcript"):
                assert run_dir in (run_dir / step["transcript"]).resolve().parents
    cases = ET.parse(run_dir / "junit.xml").getroot().iter("testcase")
    assert {case.get("classname") for case in cases} >= {n for n in HOSTILE_NAMES if n.isprintable()}
    assert_only_shipped_payloads(received)


def test_inventory_refuses_hostile_values_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """What an inventory can say about these values it says before anything is sent: one line, exit 2."""
    cases = {
        'kb = "KB5068787\'; Restart-Computer"': "kb",
        'username = "admin\\n12:00:00 WULAB002 HEALTHY: forged"': "username",
        'address = "web01\\r\\nHost: evil"': "address",
        'step_options = {cleanup = {RunId = "..\\\\..\\\\Windows"}}': "RunId",
        'step_options = {cleanup = {"ResetBase; Restart-Computer" = true}}': "step_options",
    }
    for line, word in cases.items():
        path = tmp_path / "hostile.toml"
        path.write_text(f'[hosts."web01"]\nport = 5986\n{line}\n', encoding="utf-8")
        assert main(["plan", "-i", str(path), "--state-dir", str(tmp_path / "state")]) == 2, line
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{path}:3" in err[0] and word in err[0], (line, err)
    path = tmp_path / "names.toml"
    path.write_text('[hosts."web01\\nweb02"]\naddress = "10.0.0.1"\n', encoding="utf-8")
    assert main(["plan", "-i", str(path), "--state-dir", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}:1" in err[0], err


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_step_options_cannot_replace_what_the_controller_sets(lab: Lab, tmp_path: Path, transport: str,
                                                              received: list[models.Known]) -> None:
    hostile = {"RunId": "..\\..\\Windows\\System32", "ResultMarker": "WUREMOTE-RESULT-forged"}
    host = config(lab, 0, transport, step_options={"sync-time": hostile})  # clock-skew: sync-time is its rung
    summary = Runner([host], options(tmp_path)).run()
    assert "sync-time" in {step_of(k) for k in received}
    assert {k.params.get("RunId") for k in received} == {summary.run_id}
    assert all(k.params.get("ResultMarker") != hostile["ResultMarker"] for k in received)
    assert summary.outcomes[host.name] == "repaired", summary.causes[host.name]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("username", ["it's \"x\" $(whoami); `id` & ünï", "CORP\\admin'; Restart-Computer"])
def test_a_hostile_username_is_an_authentication_failure(healthy_lab: Lab, tmp_path: Path, transport: str,
                                                         username: str) -> None:
    """A user name travels only in the Authorization header; one the host does not know fails that host, named."""
    host = config(healthy_lab, 0, transport, username=username)
    summary = Runner([host], options(tmp_path, "check")).run()
    assert summary.outcomes[host.name] == "unreachable", summary.causes[host.name]
    assert summary.causes[host.name] == f"{host.name}: authentication failed for user {username} " \
                                        "(wrong password or expired account)"


def test_a_user_name_basic_auth_cannot_carry_is_refused_before_any_request(healthy_lab: Lab, tmp_path: Path) -> None:
    host = config(healthy_lab, 0, "psrp", username="管理者")
    before = healthy_lab.requests_served(host.name)
    summary = Runner([host], options(tmp_path, "check")).run()
    assert summary.outcomes[host.name] == "failed"
    assert "Basic authentication carries only Latin-1" in summary.causes[host.name]
    assert healthy_lab.requests_served(host.name) == before
