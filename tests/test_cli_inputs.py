"""Inputs checked before any connection (issue 15): connection flags over the inventory, the
inputs a connection needs refused with one line and exit 2 before a host is touched, passwords
looked up only for the hosts a run takes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from wuremote.cli import main
from wuremote.lab.lab import Lab

LAB_SCALE = 0.002


@pytest.fixture(scope="module")
def healthy_lab(tmp_path_factory) -> tuple[Lab, Path]:
    root = tmp_path_factory.mktemp("lab")
    with Lab(hosts=1, scenario="healthy", time_scale=LAB_SCALE) as lab:
        inventory = root / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        yield lab, inventory


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("wuremote: warning:")]
    assert len(err) == 1, err
    return err[0]


def untouched(state: Path) -> bool:
    """No run was started: no journal, no run folder."""
    return not (state / "runs").exists() and not (state / "journal.sqlite3").exists()


def test_connection_flags_override_the_inventory(healthy_lab, tmp_path, capsys) -> None:
    lab, inventory = healthy_lab
    port = lab.endpoints[0].port
    # Every connection setting in the file is wrong; the flags given make it right, as Ansible's -u/-c do.
    text = inventory.read_text(encoding="utf-8").replace(f"port = {port}", "port = 1")
    text = text.replace('transport = "psrp"', 'transport = "winrm"')
    text = text.replace(f'username = "{lab.credentials.username}"', 'username = "nobody"')
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text, encoding="utf-8")
    code = main(["check", "-i", str(wrong), "--plain", "--state-dir", str(tmp_path / "s"), "--port", str(port),
                 "--transport", "psrp", "--user", lab.credentials.username])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{lab.endpoints[0].name} CHECKED" in out


def test_a_missing_ca_file_is_one_line_before_connecting(healthy_lab, tmp_path, capsys) -> None:
    _, inventory = healthy_lab
    state = tmp_path / "s"
    assert main(["check", "-i", str(inventory), "--plain", "--state-dir", str(state),
                 "--ca-file", str(tmp_path / "nowhere.pem")]) == 2
    line = one_line_error(capsys)
    assert "nowhere.pem is not a readable file" in line and "fix the path" in line
    assert untouched(state)


def test_a_host_argument_without_a_user_is_one_line_before_connecting(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("WUREMOTE_PASSWORD", "x")
    state = tmp_path / "s"
    assert main(["check", "srv01", "--plain", "--state-dir", str(state)]) == 2
    line = one_line_error(capsys)
    assert "srv01" in line and "needs a user name" in line and "--user" in line
    assert untouched(state)


def test_a_missing_password_is_one_line_before_connecting(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("WUREMOTE_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())  # not a terminal: no prompt
    state = tmp_path / "s"
    assert main(["check", "srv01", "--user", "CORP\\svc", "--plain", "--state-dir", str(state)]) == 2
    line = one_line_error(capsys)
    assert "WUREMOTE_PASSWORD" in line and "CORP\\svc" in line
    assert untouched(state)


def test_an_unset_password_variable_is_one_line_before_connecting(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[vars]\nusername = "u"\npassword_env = "NOT_SET_ANYWHERE"\n[hosts.web01]\n',
                         encoding="utf-8")
    state = tmp_path / "s"
    assert main(["check", "-i", str(inventory), "--plain", "--state-dir", str(state)]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"wuremote: {inventory}:3:") and "NOT_SET_ANYWHERE" in line
    assert untouched(state)


def test_passwords_are_resolved_after_limit(healthy_lab, tmp_path, capsys, monkeypatch) -> None:
    lab, inventory = healthy_lab
    monkeypatch.delenv("ONLY_FOR_EXCLUDED", raising=False)
    text = inventory.read_text(encoding="utf-8") + ('[hosts."excluded01"]\naddress = "127.0.0.1"\nport = 1\n'
                                                    'password_env = "ONLY_FOR_EXCLUDED"\n')
    both = tmp_path / "both.toml"
    both.write_text(text, encoding="utf-8")
    name = lab.endpoints[0].name
    code = main(["check", "-i", str(both), "--limit", name, "--plain", "--state-dir", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{name} CHECKED" in out and "excluded01" not in out
