"""`wuremote plan` as a person reads it (issue 15): each plan printed once, a healthy host planned as what
would run on it, and the marker explained on the line that uses it."""

from __future__ import annotations

import re
from pathlib import Path

from wuremote.cli import main
from wuremote.lab.lab import Lab


def test_plan_prints_each_plan_once_and_a_healthy_host_runs_only_verify(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "fleet.toml"
    spec.write_text('[[hosts]]\nscenario = "healthy"\n\n[[hosts]]\nscenario = "corrupt-download-cache"\n',
                    encoding="utf-8")
    with Lab(scenario=spec, time_scale=0.002) as lab:
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        healthy, broken = (e.name for e in lab.endpoints)
        assert main(["plan", "-i", str(inventory), "--plain", "--state-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    for host in (healthy, broken):
        assert sum("plan: " in line for line in out if f" {host} " in line) == 1, out
    healthy_plan = next(line for line in out if f" {healthy} " in line and "plan: " in line)
    assert "plan: verify only" in healthy_plan and "troubleshooter" not in healthy_plan
    broken_plan = next(line for line in out if f" {broken} " in line and "plan: " in line)
    assert "reset-components:gentle*" in broken_plan and "(* runs: a recorded failure needs it" in broken_plan


def test_plan_says_which_package_install_kb_pushes_and_its_size_or_that_none_fits(tmp_path: Path, capsys) -> None:
    kb = "KB5068787"  # the manual-kb scenario's KB, named in the inventory; the package comes from --kb-dir
    fits = tmp_path / "fits"
    fits.mkdir()
    (fits / f"windows10.0-{kb.lower()}-x64_{'3' * 40}.msu").write_bytes(b"MSCF" + bytes(3 * 2**20))
    (fits / f"windows11.0-{kb.lower()}-x64_{'1' * 40}.msu").write_bytes(b"MSCF")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / f"windows11.0-{kb.lower()}-x64_{'1' * 40}.msu").write_bytes(b"MSCF")
    with Lab(hosts=1, scenario="manual-kb", time_scale=0.002) as lab:
        inventory = tmp_path / "inventory.toml"
        inventory.write_text("\n".join(line for line in lab.inventory_toml().splitlines()
                                       if not line.startswith("kb_url")), encoding="utf-8")
        host = lab.endpoints[0].name
        lines = {}
        for name, folder in (("fits", fits), ("wrong", wrong)):
            main(["plan", "-i", str(inventory), "--plain", "--state-dir", str(tmp_path / name), "--kb-dir", str(folder)])
            out = capsys.readouterr().out.splitlines()
            lines[name] = next(line for line in out if f" {host} " in line and "plan: " in line)
    assert (f"(install-kb: pushes windows10.0-{kb.lower()}-x64_{'3' * 40}.msu (3.0 MB) from the controller)"
            in lines["fits"]), lines["fits"]
    assert f"(install-kb: no package for {kb} fits this host (build 20348, AMD64)" in lines["wrong"], lines["wrong"]
    assert f"has no windows10.0-{kb.lower()}-x64*.msu" in lines["wrong"]


def test_plan_after_a_repair_names_the_old_failure_and_the_verify_that_settled_it(tmp_path: Path, capsys) -> None:
    """Diagnose still lists the failure the repair fixed (the event log keeps it); the plan line says
    it is settled and by which verify, not "no failure recorded"."""
    with Lab(hosts=1, scenario="corrupt-download-cache", time_scale=0.002) as lab:
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        host = lab.endpoints[0].name
        common = ["-i", str(inventory), "--plain", "--state-dir", str(tmp_path / "s")]
        assert main(["repair", *common]) == 0
        capsys.readouterr()
        assert main(["plan", *common]) == 0
        out = capsys.readouterr().out.splitlines()
    line = next(line for line in out if f" {host} " in line and "plan: " in line)
    assert re.search(r"plan: verify only \(last failure 0x80070002 on \d{4}-\d\d-\d\d \d\d:\d\d UTC, settled by "
                     r"verify on \d{4}-\d\d-\d\d \d\d:\d\d UTC; the ladder is climbed only if verify fails\)", line), line
