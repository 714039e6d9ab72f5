"""Installing updates, as asked for (issue 16, item 1): --install and the inventory's install vars,
checked before any connection, mapped to install-updates' parameters; check --install lists what
is pending and the age of the last successful install."""

from __future__ import annotations

from pathlib import Path

import pytest

from wuremote.cli import main
from wuremote.contract.updates import DEFAULT_CATEGORIES, UnknownCategory, parse_categories
from wuremote.engine.plan import install_params
from wuremote.inventory import load_inventory
from wuremote.lab.lab import Lab

LAB_SCALE = 0.002
INVENTORY = """\
[vars]
username = "admin"
password_env = "INSTALL_TEST_PASSWORD"
auth = "basic"

[hosts.srv01]
{extra}
"""


def write(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(INVENTORY.format(extra=extra), encoding="utf-8")
    return path


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("wuremote: warning:")]
    assert len(err) == 1, err
    return err[0]


def test_categories_take_either_spelling_and_bare_install_is_security_and_critical() -> None:
    assert parse_categories("") == DEFAULT_CATEGORIES == ("SecurityUpdates", "CriticalUpdates")
    assert parse_categories("security updates, UpdateRollups,SecurityUpdates") == ("SecurityUpdates", "UpdateRollups")
    assert parse_categories("*") == ("*",)
    with pytest.raises(UnknownCategory, match="'Securty'"):
        parse_categories("Securty")


def test_an_unknown_category_on_the_command_line_is_one_line_before_connecting(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("INSTALL_TEST_PASSWORD", "x")
    state = tmp_path / "s"
    assert main(["repair", "-i", str(write(tmp_path)), "--install", "SecurityUpdates,Securty", "--plain",
                 "--state-dir", str(state)]) == 2
    line = one_line_error(capsys)
    assert line.startswith("wuremote: --install: unknown update category 'Securty'; use * or any of ")
    assert "SecurityUpdates" in line and "--install=SecurityUpdates" in line
    assert not state.exists()


@pytest.mark.parametrize("extra, message", [
    ('install = ["SecurityUpdates", "Bogus"]', "install item 2 is not a Windows Update category; use * or any of "),
    ('install_accept = ["5034441"]', "install_accept is not a KB id"),
    ('install_optional = "maybe"', "install_optional must be true or false"),
])
def test_a_bad_install_var_names_the_file_and_line(tmp_path, capsys, monkeypatch, extra: str, message: str) -> None:
    monkeypatch.setenv("INSTALL_TEST_PASSWORD", "x")
    path = write(tmp_path, extra)
    assert main(["repair", "-i", str(path), "--plain", "--state-dir", str(tmp_path / "s")]) == 2
    line = one_line_error(capsys)
    assert f"{path}:7: " in line and message in line, line


def test_install_vars_become_the_script_parameters_as_win_updates_names_them(tmp_path) -> None:
    extra = ('install = "Security Updates, DefinitionUpdates"\ninstall_accept = ["kb5068787"]\n'
             'install_reject = "KB890830"\ninstall_optional = true')
    host = load_inventory(write(tmp_path, extra), environ={"INSTALL_TEST_PASSWORD": "x"}).hosts[0]
    assert host.install == ("SecurityUpdates", "DefinitionUpdates")
    assert install_params(host.policy) == {"CategoryNames": ["Security Updates", "Definition Updates"],
                                           "AcceptKb": ["KB5068787"], "RejectKb": ["KB890830"], "IncludeOptional": True}
    assert load_inventory(write(tmp_path, "install = true"), environ={"INSTALL_TEST_PASSWORD": "x"}).hosts[0].install == (
        DEFAULT_CATEGORIES)


@pytest.fixture(scope="module")
def healthy_lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    with Lab(hosts=2, scenario="healthy", time_scale=LAB_SCALE) as lab:
        inventory = root / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        yield lab, inventory


def test_check_install_lists_what_is_pending_and_the_last_successful_install(healthy_lab, tmp_path, capsys) -> None:
    lab, inventory = healthy_lab
    name = lab.endpoints[0].name
    assert main(["check", "-i", str(inventory), "--limit", name, "--install", "--plain",
                 "--state-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "updates pending: 2 (KB5068787, KB5068862)" in out
    assert "last successful install 38 days ago" in out
    assert lab.call(lambda: lab.host(name).state.install_counts) == {}  # a search only: nothing installed


def test_repair_install_flag_reaches_the_host_and_only_its_categories_install(healthy_lab, tmp_path, capsys) -> None:
    lab, inventory = healthy_lab
    name = lab.endpoints[1].name
    code = main(["repair", "-i", str(inventory), "--limit", name, "--install=UpdateRollups,DefinitionUpdates",
                 "--plain", "--state-dir", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{name} PATCHED" in out
    assert lab.call(lambda: dict(lab.host(name).state.install_counts)) == {"KB890830": 1, "KB2267602": 1}
    assert "install-updates 2/2 done 100%" in out  # the poll that sees the end always reports it


def test_the_live_view_shows_which_update_of_how_many_and_its_percent() -> None:
    from wuremote import events as ev
    from wuremote.output.live import describe, progress_text

    event = ev.StepProgress("r", "srv01", "install-updates", percent=45, message="3/7 KB5034441")
    assert progress_text(event) == "3/7 KB5034441 45%"
    assert describe(event) == "install-updates 3/7 KB5034441 45%"
    dism = ev.StepProgress("r", "srv01", "dism", percent=40, message="running")
    assert describe(dism) == "dism 40% running"  # other steps read as before


def test_install_failures_the_old_run_called_healthy_now_reach_the_operator(tmp_path, capsys) -> None:
    """Without opt-ins or a kb, these hosts used to end "HEALTHY: verify passed; nothing to repair"
    although their updates cannot install (issue 16)."""
    scenarios = tmp_path / "two.toml"
    scenarios.write_text('[[hosts]]\nscenario = "third-party-service-conflict"\nname = "TP"\n\n'
                         '[[hosts]]\nscenario = "manual-kb"\nname = "MK"\n', encoding="utf-8")
    with Lab(scenario=scenarios, time_scale=LAB_SCALE) as lab:
        inventory = tmp_path / "inventory.toml"
        bare = [line for line in lab.inventory_toml().splitlines() if not line.startswith(("opt_in", "kb"))]
        inventory.write_text("\n".join(bare), encoding="utf-8")  # no opt-in, no kb: as a new user's first inventory
        code = main(["repair", "-i", str(inventory), "--install", "--plain", "--state-dir", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert ("TP01 NEEDS-OPERATOR: KB5068787 failed to install with 0x80070020 ERROR_SHARING_VIOLATION" in out
            and "add clean-boot to opt_in to let wuremote do it" in out), out
    assert 'MK01 NEEDS-OPERATOR: KB5068787 failed to install with 0x8024200B' in out and 'set kb = "KB5068787"' in out


def test_plan_says_updates_would_be_installed(healthy_lab, tmp_path, capsys) -> None:
    lab, inventory = healthy_lab
    assert main(["plan", "-i", str(inventory), "--limit", lab.endpoints[0].name, "--install=*", "--plain",
                 "--state-dir", str(tmp_path / "s")]) == 0
    assert "plan: verify only (no failure recorded; the ladder is climbed only if verify fails); then install-updates (*)" in (
        capsys.readouterr().out)


def test_many_updates_results_reach_the_journal_whole() -> None:
    from wuremote.engine.findings import small_facts

    results = [{"kb": f"KB{5000000 + i}", "title": "x" * 200, "result_code": 2, "hresult": "0x00000000"} for i in range(60)]
    kept = small_facts({"results": results, "pending": [], "skipped": results, "transcript": "t"}, "install-updates")
    assert kept["results"] == results and "skipped" not in kept and "transcript" not in kept


def test_servicing_that_waits_for_a_restart_is_never_installed_over(tmp_path, capsys) -> None:
    scenarios = tmp_path / "busy.toml"
    scenarios.write_text('[[hosts]]\nscenario = "healthy"\nname = "BUSY"\n[hosts.state]\nservicing_in_progress = true\n',
                         encoding="utf-8")
    with Lab(scenario=scenarios, time_scale=LAB_SCALE) as lab:
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        code = main(["repair", "-i", str(inventory), "--install", "--plain", "--state-dir", str(tmp_path / "s")])
        counts = lab.call(lambda: dict(lab.host("BUSY01").state.install_counts))
    out = capsys.readouterr().out
    assert code == 1, out
    assert "BUSY01 NEEDS-OPERATOR: install-updates refused: servicing is pending a reboot (pending.xml)" in out, out
    assert counts == {}
