"""The lab as a user starts it: `python -m wuremote.lab` / `wuremote lab`."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import winrm
from conftest import wait_for

LAB = [sys.executable, "-m", "wuremote.lab"]


def run_lab(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--hosts", "0"], "--hosts must be at least 1"),
        (["--scenario", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
        (["--time-scale", "0"], "--time-scale must be greater than 0"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(args: list[str], expected: str, tmp_path: Path) -> None:
    result = run_lab(*args, "--state-file", str(tmp_path / "s.json"))
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.json").exists()


def test_bad_scenario_file_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.toml"
    bad.write_text('[[hosts]]\nscenario = "clock-skew"\n\n[[hosts]]\nscenario = "bogus"\n', encoding="utf-8")
    result = run_lab("--scenario", str(bad), "--state-file", str(tmp_path / "s.json"))
    assert result.returncode == 2
    assert f"{bad}:5: unknown scenario 'bogus'" in result.stderr

    bad.write_text("[[hosts]\n", encoding="utf-8")
    result = run_lab("--scenario", str(bad), "--state-file", str(tmp_path / "s.json"))
    assert result.returncode == 2
    assert f"{bad}:1: not valid TOML" in result.stderr


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_lab("--port", str(port), "--hosts", "1", "--state-file", str(tmp_path / "s.json"))
    assert result.returncode == 2
    assert "another program holds the port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_lab_writes_state_and_inventory_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    state_file = tmp_path / "not-yet" / "lab.json"  # its folder is created
    process = subprocess.Popen(
        [*LAB, "--hosts", "2", "--scenario", "clock-skew", "--state-file", str(state_file), "--seed", "7"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: state_file.exists() or process.poll() is not None, interval=0.05, what="the lab's state file")
        state = json.loads(state_file.read_text(encoding="utf-8"))
        assert [h["name"] for h in state["hosts"]] == ["WULAB001", "WULAB002"]
        host = state["hosts"][0]
        assert host["scheme"] == "https" and host["address"] == "127.0.0.1"
        assert host["scenario"] == "clock-skew"
        assert Path(host["ca_file"]).is_file()
        inventory = Path(state["inventory"]).read_text(encoding="utf-8")
        assert f"port = {host['port']}" in inventory
        session = winrm.Session(
            f"https://127.0.0.1:{host['port']}/wsman", auth=(host["username"], host["password"]), transport="basic",
            ca_trust_path=host["ca_file"], operation_timeout_sec=5, read_timeout_sec=10,
        )
        assert session.run_cmd("hostname").std_out.strip() == b"WULAB001"
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
        assert process.returncode == 0
        assert "stopped" in out
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", host["port"]), timeout=2).close()
    finally:
        if process.poll() is None:
            process.kill()


def test_same_seed_same_credentials(tmp_path: Path) -> None:
    from wuremote.lab import Lab

    with Lab(hosts=1, seed=3) as first, Lab(hosts=1, seed=3) as second, Lab(hosts=1, seed=4) as third:
        assert first.endpoints[0].password == second.endpoints[0].password
        assert first.endpoints[0].password != third.endpoints[0].password


def test_wuremote_lab_subcommand_has_the_same_options() -> None:
    result = subprocess.run([sys.executable, "-m", "wuremote.cli", "lab", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for option in ("--hosts", "--scenario", "--time-scale", "--state-file", "--http", "--seed"):
        assert option in result.stdout
