"""`wuremote plan` as a person reads it (issue 15): each plan printed once, a healthy host planned as what
would run on it, and the marker explained on the line that uses it."""

from __future__ import annotations

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
