"""The `wuremote` command as a user meets it: exit codes, one-line errors, views, and a lab run.

Runs `cli.main()` in-process against a lab on loopback (real HTTPS and PSRP), with the
inventory the lab writes, so the command line, the inventory loader and the runner are
exercised together.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wuremote.cli import main
from wuremote.lab.lab import Lab

LAB_SCALE = 0.002


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory) -> tuple[Lab, Path]:
    root = tmp_path_factory.mktemp("lab")
    spec = root / "fleet.toml"
    spec.write_text('[[hosts]]\nscenario = "healthy"\n\n[[hosts]]\nscenario = "corrupt-download-cache"\n',
                    encoding="utf-8")
    with Lab(scenario=spec, time_scale=LAB_SCALE) as lab:
        inventory = root / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        yield lab, inventory


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("repair", "check", "plan", "resume", "report", "demo", "lab"):
        assert command in out


@pytest.mark.parametrize(("argv", "words"), [
    (["repair"], "no hosts"),
    (["repair", "-i", "missing.toml"], "missing.toml"),
    (["check", "a", "-i", "x.toml"], "not both"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, words, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert words in one_line_error(capsys)


def test_malformed_inventory_names_file_and_line(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[hosts."a"]\nport = "five"\n', encoding="utf-8")
    assert main(["plan", "-i", str(bad), "--state-dir", str(tmp_path)]) == 2
    line = one_line_error(capsys)
    assert "bad.toml:2" in line and "port" in line


def test_bad_flag_values_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["repair", "h1", "--forks", "0"])
    assert exit_info.value.code == 2
    assert "--forks" in capsys.readouterr().err


def test_unknown_run_id_is_one_line(tmp_path, capsys) -> None:
    assert main(["report", "20990101-000000-dead", "--state-dir", str(tmp_path)]) == 2
    assert "20990101-000000-dead" in one_line_error(capsys)


def test_plan_sends_no_host_changing_script(small_lab, tmp_path, capsys) -> None:
    lab, inventory = small_lab
    before = {e.name: len(lab.call(lambda n=e.name: lab.host(n).state.scripts_run)) for e in lab.endpoints}
    assert main(["plan", "-i", str(inventory), "--plain", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "plan: " in out and "reset-components:gentle" in out
    for endpoint in lab.endpoints:
        sent = lab.call(lambda n=endpoint.name: lab.host(n).state.scripts_run)[before[endpoint.name]:]
        assert sent == ["diagnose"], sent


def test_json_view_is_one_event_per_line(small_lab, tmp_path, capsys) -> None:
    lab, inventory = small_lab
    # 1: the check finds the corrupt host's recorded update failure, a problem (test_check_exit.py)
    assert main(["check", "-i", str(inventory), "--json", "--state-dir", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    events = [json.loads(line) for line in lines]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run-started" and kinds[-1] == "run-finished"
    assert {e["host"] for e in events if e["kind"] == "host-finished"} == {e.name for e in lab.endpoints}


@pytest.mark.slow
def test_repair_then_report(small_lab, tmp_path, capsys) -> None:
    lab, inventory = small_lab
    code = main(["repair", "-i", str(inventory), "--plain", "--state-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    run_id = out.strip().splitlines()[-1].split()[1].rstrip(":")
    assert (tmp_path / "runs" / run_id / "report.json").is_file()
    assert main(["report", run_id, "--state-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    for endpoint in lab.endpoints:
        assert endpoint.name in text
    assert "repaired" in text and "healthy" in text


def test_wrong_password_fails_that_host_only_and_never_prints_it(small_lab, tmp_path, capsys) -> None:
    lab, inventory = small_lab
    wrong = "Wrong-" + "x9" * 8
    first, second = lab.endpoints[0].name, lab.endpoints[1].name
    text = inventory.read_text(encoding="utf-8").replace(f'[hosts."{first}"]\n', f'[hosts."{first}"]\npassword = "{wrong}"\n')
    bad = inventory.parent / "wrong.toml"
    bad.write_text(text, encoding="utf-8")
    state = tmp_path / "state"
    assert main(["check", "-i", str(bad), "--plain", "--state-dir", str(state)]) == 1
    captured = capsys.readouterr()
    assert f"{first} UNREACHABLE: {first}: authentication failed" in captured.out
    assert f"{second} NEEDS-OPERATOR: last update failure 0x80070002" in captured.out
    assert wrong not in captured.out + captured.err
    for path in state.rglob("*"):
        if path.is_file():
            assert wrong.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_demo_repairs_the_mixed_fleet_and_says_where_the_artifacts_are(tmp_path, capsys) -> None:
    assert main(["demo", "--plain", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "demo: every host ended as its scenario should" in out
    run_dir = next((tmp_path / "runs").iterdir())
    assert f"artifacts: {run_dir}" in out.replace("\n", "")
    assert (run_dir / "report.json").is_file() and (run_dir / "junit.xml").is_file()
    assert "wsus-unreachable" in out and "needs-operator" in out
