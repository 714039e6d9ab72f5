"""The secret canary: a lab whose password is random, repaired for real, then every artifact searched.

A password can leak through many doors (report.json, junit.xml, transcripts, the journal and
its WAL, --json events, plain terminal lines, log records, exception messages and
tracebacks, the repr of a public object, a script parameter).  Each door is opened here
and searched for the canary's bytes, its UTF-16 form and the Basic-auth token that carries
it; a leak anywhere fails with the place named.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import secrets
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_settings, refused_port

from wuremote.cli import main
from wuremote.engine.reboot import RebootSettings
from wuremote.engine.runner import Runner, RunOptions
from wuremote.inventory import HostConfig, Inventory, load_inventory
from wuremote.lab import models
from wuremote.lab.lab import LAB_USERNAME, Lab
from wuremote.secret import Secret
from wuremote.transport import TransportError, TransportSettings, open_transport

LAB_SCALE = 0.001
# Loopback answers come at once; these bounds only stop a loaded CI machine from turning slowness into failures.
PATIENT = TransportSettings(connect_timeout=10.0, operation_timeout=5, read_timeout=20, open_retries=0, backoff=0.01)
# "labadmin:" is 9 characters; a canary whose length is a multiple of 3 makes the Basic token
# of the canary a prefix of the token of any longer password that starts with it.
CANARY = "Cnry" + secrets.token_hex(10)
WRONG = CANARY + "-wrong"  # a wrong password that still holds the canary: its leaks are caught too
# Repaired in place, repaired by a restart (reboot.py's paths), left for the operator (collect-logs' files).
SCENARIOS = ("healthy", "corrupt-download-cache", "servicing-in-progress", "wsus-unreachable")


def needles(password: str = CANARY) -> dict[str, bytes]:
    token = base64.b64encode(f"{LAB_USERNAME}:{password}".encode())
    return {"utf-8": password.encode(), "utf-16": password.encode("utf-16-le"), "basic-token": token.rstrip(b"=")[:-4]}


def leaks(data: bytes | str) -> list[str]:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return [name for name, needle in needles().items() if needle in raw]


def assert_clean(what: str, data: bytes | str) -> None:
    found = leaks(data)
    assert not found, f"the password leaked into {what} ({', '.join(found)})"


def scan_tree(root: Path) -> int:
    """Every file under a state dir (journal.sqlite3 and its -wal, reports, transcripts, logs): no canary."""
    count = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            assert_clean(str(path.relative_to(root)), path.read_bytes())
            count += 1
    return count


def reachable(obj: Any, seen: set[int] | None = None, depth: int = 0) -> Iterator[Any]:
    """Every object a user can reach from ``obj``: wuremote's records, containers, exceptions.

    A Secret is yielded (its str/repr must mask) but not opened; third-party objects (sockets,
    locks, clients) are yielded for their repr but not walked.
    """
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 40:
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, (Secret, str, bytes, int, float, bool, type(None), Path)):
        return
    children: list[Any] = []
    if isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif isinstance(obj, BaseException):
        children = [*obj.args, obj.__cause__, obj.__context__, *vars(obj).values()]
    elif type(obj).__module__.startswith("wuremote"):
        if dataclasses.is_dataclass(obj):
            children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
        children += list(getattr(obj, "__dict__", {}).values())
        children += [getattr(obj, s, None) for s in getattr(type(obj), "__slots__", ())]
    for child in children:
        yield from reachable(child, seen, depth + 1)


def assert_objects_clean(what: str, *roots: Any) -> int:
    count = 0
    for obj in reachable(list(roots)):
        assert_clean(f"str/repr of a {type(obj).__name__} reachable from {what}", str(obj) + repr(obj))
        count += 1
    return count


def assert_exception_clean(what: str, exc: BaseException) -> None:
    assert_clean(f"{what}: message", str(exc) + repr(exc))
    assert_clean(f"{what}: traceback", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    assert_objects_clean(what, exc)


@pytest.fixture(scope="module")
def canary_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    spec = tmp_path_factory.mktemp("lab") / "fleet.toml"
    spec.write_text("".join(f'[[hosts]]\nscenario = "{name}"\n\n' for name in SCENARIOS), encoding="utf-8")
    with Lab(scenario=spec, time_scale=LAB_SCALE, password=CANARY) as lab:
        yield lab


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # everyone's debug records: pypsrp, pywinrm, requests, urllib3
    return caplog


def inventory_without_password(lab: Lab, path: Path) -> Path:
    """The lab's inventory with its password line removed: the password comes from WUREMOTE_PASSWORD."""
    lines = [line for line in lab.inventory_toml().splitlines() if not line.startswith("password")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def host(lab: Lab, index: int, transport: str, **overrides: Any) -> HostConfig:
    endpoint = lab.endpoints[index]
    values: dict[str, Any] = dict(name=endpoint.name, address=endpoint.address, port=endpoint.port,
                                  scheme=endpoint.scheme, transport=transport, auth="basic",
                                  username=endpoint.username, password=Secret(CANARY), ca_file=endpoint.ca_file)
    values.update(overrides)
    return HostConfig(**values)


def free_port() -> int:
    return refused_port()  # kept bound: no other xdist worker's lab can be given it meanwhile


def fast_options(state_dir: Path, command: str) -> RunOptions:
    return RunOptions(command=command, forks=8, state_dir=state_dir, poll_interval=0.05, time_scale=LAB_SCALE * 100,
                      host_timeout=120.0, transport=PATIENT,
                      reboot=RebootSettings(poll_interval=0.05, shutdown_timeout=20, boot_timeout=20,
                                            readiness_timeout=20, stability_window=0.1, probe_timeout=5))


def test_cli_repair_and_check_never_show_the_password(canary_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture,
                                                      received: list[models.Known]) -> None:
    monkeypatch.setenv("WUREMOTE_PASSWORD", CANARY)
    inventory = inventory_without_password(canary_lab, tmp_path / "lab.toml")
    state = tmp_path / "state"

    first_two = ",".join(e.name for e in canary_lab.endpoints[:2])  # the CLI's reboot timings are real-world
    assert main(["repair", "-i", str(inventory), "--limit", first_two, "--json", "--state-dir", str(state)]) == 0
    json_run = capsys.readouterr()
    events = [json.loads(line) for line in json_run.out.splitlines()]
    assert {e["data"].get("outcome") for e in events if e["kind"] == "host-finished"} == {"healthy", "repaired"}
    assert_clean("--json stdout", json_run.out)
    assert_clean("--json stderr", json_run.err)

    # 1: the broken scenarios' problems are found (their hosts end NEEDS-OPERATOR, the others CHECKED)
    assert main(["check", "-i", str(inventory), "--plain", "--state-dir", str(state)]) == 1
    plain_run = capsys.readouterr()
    assert plain_run.out.count(" CHECKED: ") + plain_run.out.count(" NEEDS-OPERATOR: ") == len(SCENARIOS)
    assert_clean("--plain stdout", plain_run.out)
    assert_clean("--plain stderr", plain_run.err)

    run_ids = [p.name for p in (state / "runs").iterdir()]
    assert main(["report", run_ids[0], "--state-dir", str(state)]) in (0, 1)
    assert_clean("`wuremote report` output", capsys.readouterr().out)

    files = scan_tree(state)
    assert files >= 10 and (state / "journal.sqlite3").is_file()
    assert any(p.suffix == ".log" for p in state.rglob("*")) and any(p.name == "junit.xml" for p in state.rglob("*"))
    assert logs.records, "debug logging was captured"
    assert_clean("log records", "\n".join(f"{r.name} {r.getMessage()}" for r in logs.records))
    assert received and all(k.text.startswith("# wuremote-script") for k in received)
    for known in received:
        assert_clean(f"the parameters of a script sent to the host ({sorted(known.params)})",
                     json.dumps(known.params, default=str))
        assert_clean("a script payload sent to the host", known.text)
    assert_objects_clean("the loaded inventory", load_inventory(inventory, environ={"WUREMOTE_PASSWORD": CANARY}))


def test_runner_failures_and_their_exceptions_never_show_the_password(
        canary_lab: Lab, tmp_path: Path, logs: pytest.LogCaptureFixture, received: list[models.Known]) -> None:
    first = canary_lab.endpoints[0]
    hosts = [
        host(canary_lab, 0, "winrm"),  # good runs over WinRS: parameters travel on stdin
        host(canary_lab, 2, "winrm"),
        host(canary_lab, 3, "psrp"),
        host(canary_lab, 1, "winrm", name="wrong-pw", password=Secret(WRONG)),
        host(canary_lab, 1, "psrp", name="wrong-pw-psrp", password=Secret(WRONG)),
        host(canary_lab, 0, "psrp", name="refused", port=free_port()),
        host(canary_lab, 0, "psrp", name="untrusted", ca_file=None),
        host(canary_lab, 0, "winrm", name="cleartext", scheme="http"),  # refused before any request
    ]
    seen: list[Any] = []
    runner = Runner(hosts, fast_options(tmp_path / "state", "repair"), subscribers=[seen.append])
    summary = runner.run()
    restarted, offline = canary_lab.endpoints[2].name, canary_lab.endpoints[3].name
    assert summary.outcomes[first.name] in ("healthy", "repaired"), summary.causes[first.name]
    assert summary.outcomes[restarted] == "repaired" and any(e.kind == "reboot-finished" for e in seen)
    assert summary.outcomes[offline] == "needs-operator"
    assert summary.outcomes["wrong-pw"] == summary.outcomes["wrong-pw-psrp"] == "unreachable"
    assert "authentication failed" in summary.causes["wrong-pw"]
    assert summary.outcomes["refused"] == "unreachable" and summary.outcomes["untrusted"] == "unreachable"
    assert summary.outcomes["cleartext"] == "failed" and "plain HTTP" in summary.causes["cleartext"]

    scan_tree(tmp_path / "state")
    assert (summary.run_dir / "logs").is_dir()  # collect-logs' files were written and searched
    inventory = Inventory(hosts=hosts, groups={"all": [h.name for h in hosts]})
    assert assert_objects_clean("the run", summary, runner, inventory, seen) > 200
    assert any(k.params.get("ResultMarker") for k in received)  # WinRS steps were seen by the lab
    for known in received:
        assert_clean("the parameters of a script sent to the host", json.dumps(known.params, default=str))

    # The exceptions themselves, as an API user catches them, with their tracebacks.
    for kind, overrides in (("winrm", {}), ("psrp", {})):
        transport = open_transport(host(canary_lab, 1, kind, password=Secret(WRONG), **overrides),
                                   fast_settings(open_retries=0))
        with pytest.raises(TransportError) as caught:
            transport.run_command("hostname", timeout=5)
        transport.close()
        assert caught.value.kind == "auth"
        assert_exception_clean(f"the {kind} authentication failure", caught.value)
        assert_objects_clean(f"the {kind} transport", transport)
    assert_clean("log records", "\n".join(f"{r.name} {r.getMessage()}" for r in logs.records))


def test_secret_masks_every_way_it_is_turned_into_text() -> None:
    secret = Secret(CANARY)
    for text in (str(secret), repr(secret), f"{secret}", f"{secret!r}", f"{secret:>40}", "%s %r" % (secret, secret),  # noqa: UP031 - %-formatting must mask too
                 str([secret]), str({"password": secret}), repr(HostConfig(name="h", address="h", password=secret))):
        assert_clean("a formatted Secret", text)
    assert secret.reveal() == CANARY and secret == Secret(CANARY) and secret != Secret(WRONG)
    with pytest.raises(TypeError) as caught:
        json.dumps({"password": secret})
    assert_clean("json.dumps' refusal", str(caught.value))
