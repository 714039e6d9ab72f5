"""What a user of Ansible or PSWindowsUpdate expects (issue 15): --version, --list-hosts, `runs`, a config
file and WUREMOTE_* defaults with their precedence, shell completion, and resume's manners."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from wuremote import __version__
from wuremote.cli import main
from wuremote.engine.runner import Runner
from wuremote.lab.lab import Lab


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("wuremote: warning:")]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def lab_inventory(tmp_path_factory) -> tuple[Lab, Path]:
    root = tmp_path_factory.mktemp("lab")
    with Lab(hosts=2, scenario="healthy", time_scale=0.002) as lab:
        inventory = root / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        yield lab, inventory


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path) -> None:
    for name in ("WUREMOTE_FORKS", "WUREMOTE_STATE_DIR", "WUREMOTE_USER", "WUREMOTE_INVENTORY", "WUREMOTE_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"wuremote {__version__} ")


UNREACHABLE = """
[vars]
username = "CORP\\\\svc"
password_env = "NOT_SET_FOR_LISTING"
[hosts."web[01:02]"]
address = "192.0.2.1"
[groups.web]
hosts = ["web[01:02]"]
[hosts."db01"]
scheme = "http"
"""


def test_list_hosts_shows_hosts_and_connection_and_connects_to_none(tmp_path, capsys) -> None:
    inventory = tmp_path / "hosts.toml"
    inventory.write_text(UNREACHABLE, encoding="utf-8")
    assert main(["repair", "-i", str(inventory), "--limit", "web*,db01", "--list-hosts",
                 "--state-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["host", "address", "connection", "user", "groups"]
    assert out[1].split() == ["web01", "192.0.2.1:5986", "psrp", "https", "negotiate", "CORP\\svc", "web"]
    assert out[3].split() == ["db01", "db01:5985", "psrp", "http", "negotiate", "CORP\\svc", "-"]
    assert out[-1] == "3 host(s); no connection made"
    assert not (tmp_path / "s").exists()


def listed_user(capsys) -> str:
    return capsys.readouterr().out.splitlines()[1].split()[5]


def test_precedence_flag_inventory_env_config(tmp_path, capsys, monkeypatch) -> None:
    """Connection: flag > inventory > WUREMOTE_* > config file.  Run options: flag > WUREMOTE_* > config."""
    (tmp_path / "wuremote.toml").write_text('user = "from-config"\nforks = 3\n', encoding="utf-8")
    assert main(["check", "srv01", "--list-hosts"]) == 0
    assert listed_user(capsys) == "from-config"
    monkeypatch.setenv("WUREMOTE_USER", "from-env")
    assert main(["check", "srv01", "--list-hosts"]) == 0
    assert listed_user(capsys) == "from-env"
    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[vars]\nusername = "from-inventory"\n[hosts.srv01]\n', encoding="utf-8")
    assert main(["check", "-i", str(inventory), "--list-hosts"]) == 0
    assert listed_user(capsys) == "from-inventory"
    assert main(["check", "-i", str(inventory), "--list-hosts", "--user", "from-flag"]) == 0
    assert listed_user(capsys) == "from-flag"


def test_config_file_and_environment_set_run_options(lab_inventory, tmp_path, capsys, monkeypatch) -> None:
    _, inventory = lab_inventory
    (tmp_path / "wuremote.toml").write_text(f'state_dir = "from-config"\ninventory = "{inventory}"\n',
                                            encoding="utf-8")
    assert main(["check", "--plain"]) == 0  # the inventory and the state dir come from the config file
    assert (tmp_path / "from-config" / "journal.sqlite3").is_file()
    monkeypatch.setenv("WUREMOTE_STATE_DIR", str(tmp_path / "from-env"))
    assert main(["check", "--plain"]) == 0
    assert (tmp_path / "from-env" / "journal.sqlite3").is_file()
    assert main(["check", "--plain", "--state-dir", str(tmp_path / "from-flag")]) == 0
    assert (tmp_path / "from-flag" / "journal.sqlite3").is_file()
    capsys.readouterr()


def test_user_config_under_xdg_config_home(tmp_path, capsys) -> None:
    (tmp_path / "xdg" / "wuremote").mkdir(parents=True)
    (tmp_path / "xdg" / "wuremote" / "config.toml").write_text('user = "xdg-user"\n', encoding="utf-8")
    assert main(["plan", "srv01", "--list-hosts"]) == 0
    assert listed_user(capsys) == "xdg-user"


@pytest.mark.parametrize(("text", "env", "words"), [
    ("forks = 0\n", {}, "wuremote.toml:1: forks must be a whole number of 1 or more"),
    ("\nforkz = 3\n", {}, "wuremote.toml:2: unknown setting 'forkz' (did you mean 'forks'?)"),
    ("forks = [\n", {}, "wuremote.toml: "),
    ("", {"WUREMOTE_FORKS": "many"}, "WUREMOTE_FORKS: forks must be a whole number"),
])
def test_bad_defaults_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, text, env, words) -> None:
    (tmp_path / "wuremote.toml").write_text(text, encoding="utf-8")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "srv01", "--list-hosts"]) == 2
    assert words in one_line_error(capsys)


def test_runs_lists_the_runs_of_a_state_dir(lab_inventory, tmp_path, capsys) -> None:
    _, inventory = lab_inventory
    state = tmp_path / "s"
    assert main(["check", "-i", str(inventory), "--plain", "--state-dir", str(state)]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1].split()[1].rstrip(":")
    assert main(["runs", "--state-dir", str(state)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "id", "command", "started", "status", "outcomes", "resumable"]
    row = lines[1]
    assert row.startswith(run_id) and " check " in row and "finished" in row and "checked 2" in row
    assert row.rstrip().endswith("no")


def test_runs_and_resume_of_an_unknown_state_dir_are_errors_and_create_nothing(tmp_path, capsys) -> None:
    missing = tmp_path / "typo"
    assert main(["runs", "--state-dir", str(missing)]) == 2
    assert "holds no wuremote journal" in one_line_error(capsys)
    assert main(["resume", "20990101-000000-dead", "--state-dir", str(missing)]) == 2
    assert "holds no wuremote journal" in one_line_error(capsys)
    assert not missing.exists()


def test_resuming_a_finished_run_needs_no_password(lab_inventory, tmp_path, capsys, monkeypatch) -> None:
    _, inventory = lab_inventory
    state = tmp_path / "s"
    assert main(["check", "-i", str(inventory), "--plain", "--state-dir", str(state)]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1].split()[1].rstrip(":")
    monkeypatch.delenv("WUREMOTE_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())  # no terminal: asking for a password would fail
    assert main(["resume", run_id, "--state-dir", str(state), "--plain"]) == 0
    out = capsys.readouterr().out
    assert "finished already; nothing to resume" in out and run_id in out


def test_the_resume_hint_names_a_non_default_state_dir(lab_inventory, tmp_path, capsys, monkeypatch) -> None:
    _, inventory = lab_inventory
    original = Runner.run

    def interrupted(self: Runner):  # type: ignore[no-untyped-def]
        self.cancel()  # what Ctrl-C does, before any host starts
        return original(self)

    monkeypatch.setattr(Runner, "run", interrupted)
    state = tmp_path / "elsewhere"
    assert main(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)]) == 130
    out = capsys.readouterr().out
    assert f"--state-dir {state}`" in out and "wuremote resume " in out


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(shell, capsys) -> None:
    assert main(["completion", shell]) == 0
    text = capsys.readouterr().out
    for word in ("repair", "runs", "--list-hosts", "--limit", "--state-dir"):
        assert word in text
    binary = shutil.which(shell)
    if binary is not None:  # the script parses in that shell
        checked = subprocess.run([binary, "-n"], input=text, text=True, capture_output=True, check=False)
        assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("transport", ["psrp", "winrm"])
def test_very_verbose_shows_the_wsman_exchange_without_the_password(lab_inventory, tmp_path, capsys,
                                                                    transport) -> None:
    lab, inventory = lab_inventory
    assert main(["check", "-i", str(inventory), "-vv", "--transport", transport, "--auth", "basic",
                 "--state-dir", str(tmp_path / "s")]) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "wsman Sending message" in err and "wsman Received message" in err
    assert f" {lab.endpoints[0].name} wsman Sending message" in err  # whose message it is
    assert "Envelope" in err and ("rsp:Shell" if transport == "winrm" else "creationXml") in err
    password = lab.credentials.password
    basic = base64.b64encode(f"{lab.credentials.username}:{password}".encode()).decode()
    for secret in (password, basic, "Authorization"):
        assert secret not in captured.out + err


def test_the_wsman_trace_escapes_what_a_host_sends() -> None:
    import logging
    import threading

    from wuremote.engine.runner import HOST_THREAD
    from wuremote.secret import Secret
    from wuremote.wsman_trace import stop_trace, trace_wsman

    out = io.StringIO()
    handler = trace_wsman([Secret("hunter2")], out)
    try:
        thread = threading.Thread(name=HOST_THREAD + "web\u202e01", target=lambda: logging.getLogger(
            "wuremote.winrs.wsman").debug("Received message: %s", "<s:Envelope>\x1b[2Jhunter2\n"
                                          "12:00:00 db01 wsman forged</s:Envelope>"))
        thread.start()
        thread.join()
    finally:
        stop_trace(handler)
    text = out.getvalue()
    assert text.count("\n") == 1 and "\x1b" not in text and "\u202e" not in text and "hunter2" not in text
    assert " web\\u202e01 wsman Received message: <s:Envelope>\\x1b[2J***\\x0a12:00:00 db01" in text
