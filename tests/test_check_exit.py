"""`wuremote check` exits 1 when it finds a problem (issue 15): the host ends needs-operator with the
findings as its cause, and fails in junit; information alone (updates from WSUS) is no problem."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from wuremote.cli import main
from wuremote.engine.findings import prevention_findings, problems_of
from wuremote.lab.lab import Lab


def test_check_exits_1_when_it_finds_a_problem(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "fleet.toml"
    spec.write_text('[[hosts]]\nscenario = "healthy"\n\n[[hosts]]\nscenario = "clock-skew"\n', encoding="utf-8")
    with Lab(scenario=spec, time_scale=0.002) as lab:
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        healthy, skewed = (e.name for e in lab.endpoints)
        state = tmp_path / "s"
        assert main(["check", "-i", str(inventory), "--plain", "--state-dir", str(state)]) == 1
        out = capsys.readouterr().out
        assert f"{healthy} CHECKED: nothing to report" in out
        assert f"{skewed} NEEDS-OPERATOR: clock " in out
        run_dir = next((state / "runs").iterdir())
        report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
        assert report["run"]["exit_code"] == 1
        failing = [case.get("classname") for case in ET.parse(run_dir / "junit.xml").getroot().iter("testcase")
                   if case.find("failure") is not None]
        assert failing == [skewed]
        assert main(["check", "-i", str(inventory), "--plain", "--limit", healthy, "--state-dir", str(state)]) == 0


def test_information_alone_is_not_a_problem() -> None:
    findings = prevention_findings({"update_source": {"kind": "wsus", "wsus_server": "http://wsus:8530"}})
    assert findings and problems_of(findings) == []
    assert problems_of(prevention_findings({"pending_reboot": ["CBS"]})) != []
