"""The lab's inventory carries the opt-ins its scenarios need, each with a comment, so `wuremote repair -i`
on a lab ends every host as `wuremote demo` does (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wuremote.cli import main
from wuremote.demo import EXPECTED
from wuremote.lab.lab import Lab


def test_the_lab_inventory_says_why_each_opt_in_is_there() -> None:
    with Lab(hosts=13, scenario="mixed", time_scale=0.002) as lab:
        text = lab.inventory_toml()
    blocks = {block.split('"')[1]: block for block in text.split("[hosts.")[1:]}
    by_scenario = {block.split("# scenario: ")[1].split()[0]: block for block in blocks.values()}
    assert 'opt_in = ["av-pause"]' in by_scenario["av-interference"] and "vendor_av" in by_scenario["av-interference"]
    assert 'opt_in = ["clean-boot"]' in by_scenario["third-party-service-conflict"]
    assert 'kb = "KB' in by_scenario["manual-kb"]
    for scenario in ("av-interference", "third-party-service-conflict", "manual-kb"):
        assert "repairs this host" in by_scenario[scenario]  # the comment saying why
    assert "opt_in" not in by_scenario["healthy"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_repair_with_the_lab_inventory_ends_as_the_demo(tmp_path: Path, capsys) -> None:
    with Lab(hosts=13, scenario="mixed", time_scale=0.002) as lab:
        inventory = tmp_path / "lab.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        scenarios = {e.name: e.scenario for e in lab.endpoints}
        main(["repair", "-i", str(inventory), "--plain", "--forks", "13", "--state-dir", str(tmp_path / "s")])
    capsys.readouterr()
    report = json.loads(next((tmp_path / "s" / "runs").glob("*/report.json")).read_text(encoding="utf-8"))
    for host, scenario in scenarios.items():
        expected = EXPECTED.get(scenario, "healthy" if scenario == "healthy" else "repaired")
        assert report["hosts"][host]["outcome"] == expected, (host, scenario, report["hosts"][host]["cause"])
