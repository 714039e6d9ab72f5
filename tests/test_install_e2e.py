"""Installing updates end to end against the lab (issue 16): the demo's fleet run with --install.

Every host ends as its scenario should: patched where updates work (including install failures a
rung repairs: 0x80070002 by reset-components, 0x80073712 by dism, 0x80070020 by clean-boot), and
needs-operator, naming the update, the code and the fix, where no rung repairs the failure.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from wuremote import events as ev
from wuremote.contract.updates import DEFAULT_CATEGORIES
from wuremote.demo import check_expected, demo_hosts, demo_options
from wuremote.engine.runner import Runner
from wuremote.lab.lab import Lab
from wuremote.lab.scenarios import MIXED

LAB_SCALE = 0.002
EXTRA = """
[[hosts]]
scenario = "healthy"
name = "STALE"            # the download cache lists the updates, their files are gone: 0x80070002 at install
[hosts.state]
download_cache_stale = true

[[hosts]]
scenario = "healthy"
name = "STORE"            # a corrupt component store no recorded failure shows: 0x80073712 at install
[hosts.state]
component_store = "repairable"

[[hosts]]
scenario = "manual-kb"
name = "BYHAND"           # the KB that installs only by hand, and no kb in the inventory
"""


def scenario_file(folder: Path) -> Path:
    path = folder / "install-fleet.toml"
    path.write_text("".join(f'[[hosts]]\nscenario = "{name}"\n\n' for name in MIXED) + EXTRA, encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=[pytest.param(t, marks=pytest.mark.slow) for t in ("psrp", "winrm")])
def install_run(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("install")
    with Lab(scenario=scenario_file(folder), time_scale=LAB_SCALE) as lab:
        seen: list[ev.Event] = []
        hosts = [replace(h, kb=None, kb_url=None) if h.name == "BYHAND01" else h
                 for h in demo_hosts(lab, request.param, DEFAULT_CATEGORIES)]
        summary = Runner(hosts, demo_options(folder / "state"), subscribers=[seen.append]).run()
        counts = {e.name: lab.call(lambda n=e.name: dict(lab.host(n).state.install_counts)) for e in lab.endpoints}
        yield summary, seen, {e.name: e.scenario for e in lab.endpoints}, counts


def test_every_host_ends_as_its_scenario_should_when_installing(install_run) -> None:
    summary, _, scenarios, counts = install_run
    mixed = {host: scenario for host, scenario in scenarios.items() if host.startswith("WULAB")}
    assert check_expected(summary, mixed, install=True) == []  # as `wuremote demo --install` judges its fleet
    assert {h: summary.outcomes[h] for h in ("STALE01", "STORE01", "BYHAND01")} == {
        "STALE01": "patched", "STORE01": "patched", "BYHAND01": "needs-operator"}
    # The cumulative update and the second wave (offered only after the first restart) are installed, once.
    assert counts["STALE01"] == {"KB5068787": 1, "KB5068862": 1, "KB5068794": 1}


def test_install_failures_climb_from_the_rung_that_repairs_them(install_run) -> None:
    summary, seen, _, _ = install_run

    def climbed(host: str) -> list[str]:
        return [e.step for e in seen if isinstance(e, ev.StepStarted) and e.host == host and "climb from" in e.reason]

    assert climbed("STALE01") == ["reset-components:gentle"]
    assert climbed("STORE01") == ["dism"]
    third_party = next(h for h, o in summary.outcomes.items() if h.startswith("WULAB") and "clean-boot" in climbed(h))
    assert summary.outcomes[third_party] == "patched"
    assert "repaired by" in summary.causes["STALE01"] and "KB5068794" in summary.causes["STALE01"]


def test_an_install_failure_no_rung_repairs_names_the_update_code_and_fix(install_run) -> None:
    summary, _, _, _ = install_run
    cause = summary.causes["BYHAND01"]
    assert "KB5068787 failed to install with 0x8024200B WU_E_UH_INSTALLERFAILURE" in cause
    assert 'set kb = "KB5068787"' in cause


def test_the_report_carries_updates_installed_failed_and_pending(install_run) -> None:
    summary, _, _, _ = install_run
    report = json.loads(summary.report_json.read_text(encoding="utf-8"))
    schema = json.loads((Path(__file__).parent.parent / "wuremote" / "output" / "report_schema.json").read_text())
    jsonschema.validate(report, schema)
    stale = report["hosts"]["STALE01"]["updates"]
    assert [u["kb"] for u in stale["installed"]] == ["KB5068787", "KB5068862", "KB5068794"]
    assert stale["failed"] == [] and stale["pending"] == []
    byhand = report["hosts"]["BYHAND01"]["updates"]
    assert [u["kb"] for u in byhand["failed"]] == ["KB5068787"] and byhand["failed"][0]["hresult"] == "0x8024200B"
    assert "KB5068787" in byhand["pending"]
    assert report["hosts"]["STALE01"]["changed"] is True
    junit = summary.junit_xml.read_text(encoding="utf-8")
    assert "KB5068794" in junit
