"""Pushing a KB's .msu from the controller (issue 16): picked for the host's build and architecture,
sent in chunks over the host's own transport (PSRP pipeline input, WinRS stdin), checked by SHA-256
on the host, continued from what the host holds, and installed by install-kb from where it landed.

Against the lab over real HTTPS: the lab keeps a pushed file's size and hash (not its bytes) and
counts every byte push-kb wrote, so a test can tell what was sent again."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from wuremote import events as ev
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine import packages
from wuremote.engine.ledger import Ledger
from wuremote.engine.runner import Runner, RunSummary
from wuremote.engine.steps import StepRunner
from wuremote.events import Event
from wuremote.lab.lab import Lab

KB = "KB5068787"  # the manual-kb scenario's update, which only installs by hand
CATALOG_NAME = f"windows10.0-{KB.lower()}-x64_0123456789abcdef0123456789abcdef01234567.msu"  # Server 2022, AMD64


def msu(folder: Path, name: str = CATALOG_NAME, size: int = 700_000) -> Path:
    """A cabinet-shaped file (MSCF: what a signed .msu starts with) of ``size`` bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"MSCF" + os.urandom(size - 4))
    return path


def run(lab: Lab, state_dir: Path, transport: str, *, kb_dir: Path | None = None,
        **overrides: Any) -> tuple[RunSummary, list[Event]]:
    seen: list[Event] = []
    hosts = [replace(h, kb=KB, kb_url=None, **overrides) for h in demo_hosts(lab, transport)]
    options = replace(demo_options(state_dir), kb_dir=str(kb_dir) if kb_dir else None)
    summary = Runner(hosts, options, subscribers=[seen.append]).run()
    return summary, seen


def lab_push(lab: Lab, name: str) -> tuple[int, dict[str, tuple[int, str]], set[str]]:
    """Bytes push-kb wrote on the host, the pushed files (size, SHA-256) by path, the KBs installed."""
    def read() -> tuple[int, dict[str, tuple[int, str]], set[str]]:
        state = lab.host(name).state
        return (state.push_bytes_received, {path: (f.size, f.sha256) for path, f in state.pushed.items()},
                set(state.installed_kbs))
    return lab.call(read)


@pytest.mark.parametrize("transport", ["psrp", "winrm"])
def test_kb_file_is_pushed_in_chunks_checked_and_installed(tmp_path: Path, transport: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from wuremote.transport.psrp import PSRPTransport
    from wuremote.transport.winrm import WinRSTransport

    for kind in (PSRPTransport, WinRSTransport):  # several runs of several chunks, even for a small file
        monkeypatch.setattr(kind, "input_item_bytes", 64 * 1024)
        monkeypatch.setattr(kind, "input_run_bytes", 256 * 1024)
    path = msu(tmp_path / "kbs")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with Lab(scenario="manual-kb", hosts=1, time_scale=0.002) as lab:
        name = lab.endpoints[0].name
        summary, seen = run(lab, tmp_path / "state", transport, kb_file=str(path))
        received, pushed, installed = lab_push(lab, name)
    assert summary.outcomes[name] == "repaired", summary.causes[name]
    assert KB in installed
    assert received == path.stat().st_size  # every byte once
    staged = [value for key, value in pushed.items() if key.endswith("\\install-kb\\packages\\" + CATALOG_NAME)]
    assert staged == [(path.stat().st_size, digest)]
    held = [e.bytes_held for e in seen if isinstance(e, ev.StepProgress) and e.step == "push-kb"]
    assert held == sorted(held) and len(held) >= 3 and held[-1] == path.stat().st_size
    install = [e for e in seen if isinstance(e, ev.StepFinished) and e.step == "install-kb"]
    assert install[-1].exit_code == 3010


def test_kb_dir_gives_each_host_the_file_for_its_build_and_architecture(tmp_path: Path) -> None:
    folder = tmp_path / "kbs"
    msu(folder, f"windows11.0-{KB.lower()}-x64_{'1' * 40}.msu", 1000)
    msu(folder, f"windows10.0-{KB.lower()}-arm64_{'2' * 40}.msu", 1000)
    right = msu(folder, f"windows10.0-{KB.lower()}-x64_{'3' * 40}.msu", 5000)
    with Lab(scenario="manual-kb", hosts=1, time_scale=0.002) as lab:
        name = lab.endpoints[0].name
        summary, _ = run(lab, tmp_path / "state", "psrp", kb_dir=folder)
        received, pushed, installed = lab_push(lab, name)
    assert summary.outcomes[name] == "repaired", summary.causes[name]
    assert received == 5000 and KB in installed
    assert [key.rsplit("\\", 1)[-1] for key in pushed] == [right.name.lower()]


def test_no_fitting_package_is_one_line_naming_the_host(tmp_path: Path) -> None:
    folder = tmp_path / "kbs"
    msu(folder, f"windows11.0-{KB.lower()}-x64_{'1' * 40}.msu", 1000)
    with Lab(scenario="manual-kb", hosts=1, time_scale=0.002) as lab:
        name = lab.endpoints[0].name
        lab.call(lambda: setattr(lab.host(name).state, "architecture", "ARM64"))
        summary, _ = run(lab, tmp_path / "state", "psrp", kb_dir=folder)
        received, _, installed = lab_push(lab, name)
    cause = summary.causes[name]
    assert summary.outcomes[name] == "needs-operator"
    assert cause.startswith(f"{name}: no package for {KB} fits this host (build 20348, ARM64)") and "\n" not in cause
    assert "windows10.0-kb5068787-arm64" in cause
    assert received == 0 and KB not in installed


def test_a_file_already_staged_is_not_sent_again(tmp_path: Path) -> None:
    """install-kb is asked again on a resumed run or after a restart: the staged file is checked, not resent."""
    path = msu(tmp_path / "kbs", size=300_000)
    with Lab(scenario="manual-kb", hosts=1, time_scale=0.002) as lab:
        name = lab.endpoints[0].name
        host = replace(demo_hosts(lab, "winrm")[0], kb=KB, kb_url=None, kb_file=str(path))
        pkg = packages.package(path)
        seen: list[Event] = []
        runner = Runner([host], demo_options(tmp_path / "state"), subscribers=[seen.append])
        results = []

        class Ctx:  # what a walk gets from its run: events out, no cancellation, no orphans
            run_id = "run-staged"
            options = runner.options
            cancelled = False
            wants_streams = False
            controller = "test-controller@lab"

            def emit(self, event: Event) -> None:
                seen.append(event)

            def write_artifact(self, relative: str, text: str) -> None:
                pass

            def take_orphans(self, host: str) -> list[str]:
                return []

        steps = StepRunner(Ctx(), host, Ledger(), set())  # type: ignore[arg-type]
        steps.open()
        try:
            for _ in range(2):
                results.append(packages.push(steps, pkg, reason="test"))
        finally:
            steps.close()
        received, _, _ = lab_push(lab, name)
    assert [r.facts["staged"] for r in results] == [True, True]
    assert [r.facts["written"] for r in results] == [300_000, 0]
    assert received == 300_000


def test_a_missing_kb_file_or_kb_dir_is_one_line_exit_2_before_connecting(tmp_path: Path, capsys: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from wuremote.cli import main

    monkeypatch.setenv("WUREMOTE_PASSWORD", "x")
    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[vars]\nusername = "u"\nauth = "ntlm"\n[hosts."srv01"]\nkb_file = "kbs/nothere.msu"\n',
                         encoding="utf-8")
    state = tmp_path / "state"
    assert main(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "srv01" in lines[0] and "kb_file" in lines[0] and "nothere.msu" in lines[0]
    inventory.write_text('[vars]\nusername = "u"\nauth = "ntlm"\n[hosts."srv01"]\nkb = "KB5034441"\n', encoding="utf-8")
    assert main(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state), "--kb-dir", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--kb-dir" in lines[0] and "no .msu" in lines[0]
    assert not (state / "runs").exists() and not (state / "journal.sqlite3").exists()  # no run, no host touched


def test_catalog_names_and_builds() -> None:
    parsed = packages.catalog_name("windows10.0-kb5034441-x64_efb4b3fd5c4e8ac4a9a0a1d6bb1a8bbd3e0bdb5a.msu")
    assert parsed == packages.CatalogName("windows10.0", "KB5034441", "x64")
    assert packages.catalog_name("Windows6.1-KB961367-v2-x86.msu") == packages.CatalogName("windows6.1", "KB961367", "x86")
    assert packages.catalog_name("windows10.0-kb5033909-x64-ndp48_" + "a" * 40 + ".msu") is not None
    assert packages.catalog_name("kb5034441.msu") is None
    assert [packages.os_token(b) for b in (7601, 9200, 9600, 14393, 17763, 20348, 22631, 26100)] == [
        "windows6.1", "windows8-rt", "windows8.1", "windows10.0", "windows10.0", "windows10.0", "windows11.0",
        "windows11.0"]


def faulty_lab(tmp_path: Path, **faults: Any) -> Lab:
    scenario = tmp_path / "scenario.toml"
    lines = ["[[hosts]]", 'scenario = "manual-kb"', 'name = "push"', "[hosts.faults]"]
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in faults.items()]
    scenario.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Lab(scenario=scenario, time_scale=0.002)


@pytest.mark.parametrize("transport", ["psrp", "winrm"])
def test_a_push_cut_off_mid_file_continues_from_what_the_host_holds(tmp_path: Path, transport: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from wuremote.transport.psrp import PSRPTransport
    from wuremote.transport.winrm import WinRSTransport

    for kind in (PSRPTransport, WinRSTransport):
        monkeypatch.setattr(kind, "input_item_bytes", 64 * 1024)
        monkeypatch.setattr(kind, "input_run_bytes", 512 * 1024)
    path = msu(tmp_path / "kbs", size=2_000_000)
    with faulty_lab(tmp_path, reset_send_after_kb=1200) as lab:
        name = lab.endpoints[0].name
        summary, seen = run(lab, tmp_path / "state", transport, kb_file=str(path))
        received, pushed, installed = lab_push(lab, name)
        injected = lab.call(lambda: dict(lab.faults(name).injected))
    assert injected.get("send-reset") == 1
    assert summary.outcomes[name] == "repaired", summary.causes[name]
    assert KB in installed
    assert received == path.stat().st_size  # what the host held was not sent again; what was lost was
    warnings = [e.text for e in seen if isinstance(e, ev.HostMessage) and "push-kb" in e.text]
    assert any("fresh connection" in text for text in warnings)
    finished = [e for e in seen if isinstance(e, ev.StepFinished) and e.step == "push-kb"]
    assert [e.status for e in finished] == ["ok"] and finished[0].facts["staged"] is True


def _push_held(rows: list[tuple[str, str | None, str | None, str]]) -> bool:
    """The journal holds a push run's answer that is neither the first byte nor the last."""
    return any(kind == "step-progress" and step == "push-kb" and '"percent": 100' not in data
               for kind, _, step, data in rows)


def _install_started(rows: list[tuple[str, str | None, str | None, str]]) -> bool:
    return any(kind == "step-started" and step == "install-kb" for kind, _, step, _ in rows)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("transport", "size", "moment"), [
    ("psrp", 20_000_000, _push_held), ("winrm", 4_000_000, _push_held), ("psrp", 20_000_000, _install_started)])
def test_kill_9_mid_push_then_resume_installs_once_and_sends_only_what_the_host_lacks(
        tmp_path: Path, transport: str, size: int, moment: Any) -> None:
    """A real `wuremote repair` killed with SIGKILL once the journal shows part of the file on the host
    (or once install-kb has started), then `wuremote resume`: the update is installed once and the host
    receives each byte of the file once."""
    from test_interrupt_resume import events_recorded, run_id_of, start, wait_until

    path = msu(tmp_path / "kbs", size=size)
    with Lab(scenario="manual-kb", hosts=1, time_scale=0.002) as lab:
        name = lab.endpoints[0].name
        inventory = tmp_path / "inventory.toml"
        text = lab.inventory_toml().replace('transport = "psrp"', f'transport = "{transport}"')
        text = "\n".join(f"kb_file = {json.dumps(str(path))}" if line.startswith("kb_url = ") else line
                         for line in text.splitlines())
        inventory.write_text(text + "\n", encoding="utf-8")
        env = {**os.environ, "WUREMOTE_PASSWORD": lab.endpoints[0].password}
        state = tmp_path / "state"
        first = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
        wait_until(state, moment, timeout=120)
        first.kill()
        first.communicate(timeout=30)
        held_at_kill = [json.loads(data).get("bytes_held") for kind, _, step, data in events_recorded(state)
                        if kind == "step-progress" and step == "push-kb"]
        resumed = start(["resume", run_id_of(state), "--plain", "--state-dir", str(state)], env)
        out, _ = resumed.communicate(timeout=240)
        received, pushed, installed = lab_push(lab, name)
        bodies = lab.call(lambda: lab.host(name).state.scripts_run.count("install-kb"))
    assert resumed.returncode == 0, out[-3000:]
    assert held_at_kill and 0 < held_at_kill[0] < size
    assert KB in installed and bodies == 1  # installed once
    # Sent at most once more than what was lost: the host held every byte it had acknowledged, so nothing it
    # held was sent again (the lab counts every byte push-kb wrote, re-sent ones included).
    assert received == size
    assert list(pushed.values()) == [(size, hashlib.sha256(path.read_bytes()).hexdigest())]


def test_a_run_of_chunks_refused_for_the_operations_quota_is_sent_whole_on_a_fresh_shell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows frees a WinRS shell's operations only when the shell is deleted: the host refuses a Command
    for MaxConcurrentOperationsPerUser and the transport sends it again on a fresh shell, chunks and all."""
    from wuremote.transport.winrm import WinRSTransport

    monkeypatch.setattr(WinRSTransport, "input_item_bytes", 64 * 1024)
    monkeypatch.setattr(WinRSTransport, "input_run_bytes", 256 * 1024)
    path = msu(tmp_path / "kbs", size=1_500_000)
    with faulty_lab(tmp_path, max_operations_per_user=6) as lab:
        name = lab.endpoints[0].name
        summary, _ = run(lab, tmp_path / "state", "winrm", kb_file=str(path))
        received, _, installed = lab_push(lab, name)
        injected = lab.call(lambda: dict(lab.faults(name).injected))
    assert injected.get("operation-quota", 0) >= 1, injected
    assert summary.outcomes[name] == "repaired", summary.causes[name]
    assert KB in installed and received == path.stat().st_size


def test_inventory_kb_file_names_the_kb_is_read_beside_the_file_and_excludes_other_sources(tmp_path: Path) -> None:
    from wuremote.engine.plan import rung_params
    from wuremote.inventory import InventoryError, load_inventory

    inventory = tmp_path / "inv" / "hosts.toml"
    inventory.parent.mkdir()
    inventory.write_text(f'[vars]\nusername = "u"\n[hosts."srv01"]\nkb_file = "kbs/{CATALOG_NAME}"\n'
                         '[hosts."srv02"]\nkb = "KB5034441"\nmsu_path = "\\\\\\\\files01\\\\updates"\n', encoding="utf-8")
    hosts = {h.name: h for h in load_inventory(inventory, environ={"WUREMOTE_PASSWORD": "x"}).hosts}
    assert hosts["srv01"].kb == KB and hosts["srv01"].kb_file == str(tmp_path / "inv" / "kbs" / CATALOG_NAME)
    assert rung_params("install-kb", hosts["srv02"].policy) == {"KbId": "KB5034441", "MsuPath": "\\\\files01\\updates"}
    inventory.write_text(f'[vars]\nusername = "u"\n[hosts."srv01"]\nkb_file = "{CATALOG_NAME}"\n'
                         'kb_url = "https://files/x.msu"\n', encoding="utf-8")
    with pytest.raises(InventoryError, match="srv01: kb_file and kb_url both say where the .msu is"):
        load_inventory(inventory, environ={"WUREMOTE_PASSWORD": "x"})


def test_a_kb_file_for_another_version_or_platform_is_refused_and_an_operator_name_taken() -> None:
    server_2022 = {"os": {"build": 20348, "architecture": "AMD64"}}
    with pytest.raises(ValueError, match=r"^srv01: no package for KB5068787 fits this host \(build 20348, AMD64\)"):
        packages.pick("srv01", KB, server_2022, kb_file=f"/kbs/windows11.0-{KB.lower()}-x64.msu", kb_dir=None)
    with pytest.raises(ValueError, match="windows10.0-kb5068787-x64"):
        packages.pick("srv01", KB, server_2022, kb_file=f"/kbs/windows10.0-{KB.lower()}-x86.msu", kb_dir=None)
    assert packages.pick("srv01", KB, server_2022, kb_file="/kbs/KB5068787.msu", kb_dir=None) == Path("/kbs/KB5068787.msu")
    with pytest.raises(ValueError, match="rename it"):
        packages.pick("srv01", KB, server_2022, kb_file="/kbs/KB5068787 (1).msu", kb_dir=None)


def test_the_lab_installs_a_pushed_package_only_when_its_hash_matches(tmp_path: Path) -> None:
    """The lab keeps no bytes of a pushed file, yet install-kb there checks -Sha256 against what arrived."""
    from conftest import fast_settings

    from wuremote.contract.scripts import get_script
    from wuremote.transport import open_transport

    path = msu(tmp_path / "kbs", size=200_000)
    pkg = packages.package(path)
    with Lab(scenario="manual-kb", hosts=1, time_scale=0.002) as lab:
        name = lab.endpoints[0].name
        host = replace(demo_hosts(lab, "psrp")[0], kb=KB, kb_url=None)
        transport = open_transport(host, fast_settings())
        try:
            pushed = transport.run_step(get_script("push-kb"), {"RunId": "r1", **packages.push_params(pkg, 0)},
                                        timeout=30, input=packages.Chunks(pkg, 0, pkg.size, 64 * 1024))
            wrong = transport.run_step(get_script("install-kb"), {"RunId": "r1", "KbId": KB, "Sha256": "0" * 64},
                                       timeout=30)
            right = transport.run_step(get_script("install-kb"), {"RunId": "r1", "KbId": KB, "Sha256": pkg.sha256},
                                       timeout=30)
        finally:
            transport.close()
        record = lab.call(lambda: next(iter(lab.host(name).state.pushed.values())))
    assert pushed.facts["staged"] is True
    assert (record.size, record.sha256, record.head) == (pkg.size, pkg.sha256, path.read_bytes()[:8])
    assert wrong.exit_code == 1 and "does not match the expected" in wrong.messages[0]
    assert right.exit_code == 3010


def test_winrs_runs_stay_inside_the_bootstraps_json_limit(tmp_path: Path) -> None:
    """The WinRS bootstrap reads its parameter line with Windows PowerShell 5.1's ConvertFrom-Json, which
    refuses more than 2,097,152 characters: a run of the transport's size passes, a larger one would not."""
    from conftest import fast_settings

    from wuremote.contract.scripts import get_script
    from wuremote.transport import open_transport
    from wuremote.transport.winrm import WinRSTransport

    path = msu(tmp_path / "kbs", size=1_600_000)
    pkg = packages.package(path)
    script = get_script("push-kb")
    with Lab(scenario="manual-kb", hosts=1, time_scale=0.002) as lab:
        transport = open_transport(replace(demo_hosts(lab, "winrm")[0]), fast_settings())
        try:
            run_bytes = WinRSTransport.input_run_bytes
            fits = transport.run_step(script, {"RunId": "r1", **packages.push_params(pkg, 0)}, timeout=30,
                                      input=packages.Chunks(pkg, 0, run_bytes, 96 * 1024))
            too_long = transport.run_step(script, {"RunId": "r1", **packages.push_params(pkg, run_bytes)}, timeout=30,
                                          input=packages.Chunks(pkg, 0, pkg.size, 96 * 1024))
        finally:
            transport.close()
    assert fits.exit_code == 0 and fits.facts["have"] == run_bytes
    assert too_long.exit_code == 1 and any("maxJsonLength" in error for error in too_long.errors)
