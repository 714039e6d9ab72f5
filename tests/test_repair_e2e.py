"""The orchestrator end to end against the lab: real HTTPS, real pypsrp/pywinrm, shipped scripts.

Each built-in scenario must be repaired by the step its fixture names (``repaired_by``)
and by no rung the ladder puts after it; a network fault climbs no ladder; owed restores
always run; reboot policy and caps hold; artifacts parse.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import pytest
from conftest import MovableClock

from wuremote import events as ev
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.plan import LADDER
from wuremote.engine.runner import Runner, RunSummary
from wuremote.events import Event
from wuremote.lab.lab import Lab

LAB_SCALE = 0.002
NOT_REPAIRS = {"lock", "diagnose", "verify", "boot-info", "detached-start", "detached-poll", "detached-cleanup",
               "av-resume", "clean-boot-restore", "collect-logs"}


def fixture(scenario: str) -> dict:
    path = files("wuremote.lab").joinpath("fixtures", f"{scenario}.json")
    return json.loads(path.read_text(encoding="utf-8"))


def run_fleet(lab: Lab, state_dir: Path, transport: str = "psrp", **overrides) -> tuple[RunSummary, list[Event]]:
    seen: list[Event] = []
    hosts = [replace(h, **overrides) for h in demo_hosts(lab, transport)]
    summary = Runner(hosts, demo_options(state_dir), subscribers=[seen.append]).run()
    return summary, seen


def repair_steps(events: list[Event], host: str) -> list[str]:
    """Repair rungs run on a host, in order (restarts asked for by a gate count as "restart")."""
    steps = []
    for event in events:
        if event.host != host:
            continue
        if isinstance(event, ev.StepFinished) and event.step not in NOT_REPAIRS:
            steps.append(event.step)
        if isinstance(event, ev.RebootStarted) and "restart before repairs" in event.reason:
            steps.append("restart")
    return steps


# The 13-host mixed run takes 10-15 s of real time: every test that reads it is slow.
@pytest.fixture(scope="module", params=[pytest.param(t, marks=pytest.mark.slow) for t in ("psrp", "winrm")])
def mixed_run(request, tmp_path_factory) -> tuple[Lab, RunSummary, list[Event], dict[str, str]]:
    with Lab(scenario="mixed", hosts=13, time_scale=LAB_SCALE) as lab:
        before = {e.name: lab.call(lambda n=e.name: {s.name: s.start_type for s in lab.host(n).state.services.values()})
                  for e in lab.endpoints}
        summary, seen = run_fleet(lab, tmp_path_factory.mktemp("state"), transport=request.param)
        lab.start_types_before = before
        yield lab, summary, seen, {e.name: e.scenario for e in lab.endpoints}


def test_every_scenario_is_repaired_by_its_own_step_and_no_later_rung(mixed_run) -> None:
    lab, summary, seen, scenarios = mixed_run
    for host, scenario in scenarios.items():
        expected = fixture(scenario)["repaired_by"]
        steps = repair_steps(seen, host)
        outcome = summary.outcomes[host]
        if expected is None:
            assert steps == [], f"{host} ({scenario}) ran {steps}"
            continue
        assert steps, f"{host} ({scenario}) ran no repair step: {outcome}: {summary.causes[host]}"
        assert steps[-1].split(":")[0] == expected, f"{host} ({scenario}) ran {steps}"
        if expected in {r.split(':')[0] for r in LADDER}:
            last = max(i for i, rung in enumerate(LADDER) if rung.split(":")[0] == expected)
            later = [s for s in steps if s in LADDER and LADDER.index(s) > last]
            assert not later, f"{host} ({scenario}) climbed past {expected}: {steps}"


def test_outcomes_match_what_each_scenario_allows(mixed_run) -> None:
    lab, summary, seen, scenarios = mixed_run
    for host, scenario in scenarios.items():
        outcome, cause = summary.outcomes[host], summary.causes[host]
        if scenario == "healthy":
            assert outcome == "healthy", cause
        elif scenario == "wsus-unreachable":
            assert outcome == "needs-operator" and "0x8024402C" in cause, cause
        elif scenario == "component-store-needs-source":
            assert outcome == "needs-operator" and "dism_source" in cause, cause
        elif scenario == "disabled-services":
            assert outcome == "needs-operator" and "Group Policy" in cause, cause
        else:
            assert outcome == "repaired", f"{host} ({scenario}): {outcome}: {cause}"
    assert summary.exit_code == 1  # three hosts need the operator


def test_owed_restores_ran_and_hosts_are_left_as_found(mixed_run) -> None:
    lab, summary, seen, scenarios = mixed_run
    by_scenario = {s: h for h, s in scenarios.items()}
    av_host, cb_host = by_scenario["av-interference"], by_scenario["third-party-service-conflict"]
    assert "av-resume" in [e.step for e in seen if e.host == av_host and isinstance(e, ev.StepFinished)]
    assert "clean-boot-restore" in [e.step for e in seen if e.host == cb_host and isinstance(e, ev.StepFinished)]
    av_state = lab.call(lambda: lab.host(av_host).state.antivirus.realtime_enabled)
    assert av_state is True
    disabled = [e for e in seen if e.host == cb_host and e.step == "clean-boot" and isinstance(e, ev.StepFinished)]
    assert disabled and disabled[0].exit_code == 3010  # it did disable something, then put it back
    after = lab.call(lambda: {s.name: s.start_type for s in lab.host(cb_host).state.services.values()})
    assert after == lab.start_types_before[cb_host]
    for host in scenarios:
        pending = lab.call(lambda h=host: set(lab.host(h).state.pending_reboot))
        if summary.outcomes[host] in ("healthy", "repaired"):
            assert not pending, f"{host} left with a pending reboot {pending}"


def test_artifacts_parse_and_agree_with_the_run(mixed_run) -> None:
    lab, summary, seen, scenarios = mixed_run
    report = json.loads(summary.report_json.read_text(encoding="utf-8"))
    assert report["schema_version"] == 1
    assert {h: report["hosts"][h]["outcome"] for h in scenarios} == summary.outcomes
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.skip("jsonschema not installed")
    schema = json.loads(files("wuremote.output").joinpath("report_schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(report, schema)
    suites = ET.parse(summary.junit_xml).getroot()
    names = {suite.get("name") for suite in suites.iter("testsuite")}
    assert names == set(scenarios)
    for step in report["hosts"][next(iter(scenarios))]["steps"]:
        assert (summary.run_dir / step["transcript"]).is_file()


def test_network_fault_climbs_no_ladder(tmp_path) -> None:
    with Lab(scenario="wsus-unreachable", hosts=1, time_scale=LAB_SCALE) as lab:
        summary, seen = run_fleet(lab, tmp_path)
    host = lab.endpoints[0].name
    assert summary.outcomes[host] == "needs-operator"
    assert repair_steps(seen, host) == []
    assert "WSUS" in summary.causes[host] or "network" in summary.causes[host]


def test_reboot_never_is_obeyed(tmp_path) -> None:
    with Lab(scenario="servicing-in-progress", hosts=1, time_scale=LAB_SCALE) as lab:
        summary, seen = run_fleet(lab, tmp_path, reboot="never")
        reboots = lab.call(lambda: lab.host(lab.endpoints[0].name).state.reboots)
    host = lab.endpoints[0].name
    assert summary.outcomes[host] == "needs-operator"
    assert "reboot = never" in summary.causes[host]
    assert reboots == 0 and not [e for e in seen if isinstance(e, ev.RebootStarted)]


def test_domain_controller_is_not_rebooted_unless_allowed(tmp_path) -> None:
    with Lab(scenario="servicing-in-progress", hosts=2, time_scale=LAB_SCALE) as lab:
        for endpoint in lab.endpoints:
            lab.call(lambda n=endpoint.name: setattr(lab.host(n).state, "domain_role", "domain-controller"))
        hosts = demo_hosts(lab)
        hosts[1] = replace(hosts[1], allow_reboot_roles=("domain-controller",))
        summary = Runner(hosts, demo_options(tmp_path)).run()
    assert summary.outcomes[hosts[0].name] == "needs-operator" and "domain-controller" in summary.causes[hosts[0].name]
    assert summary.outcomes[hosts[1].name] == "repaired"


@pytest.mark.slow
def test_reboot_cap_per_group_is_never_exceeded(tmp_path) -> None:
    seen: list[Event] = []
    with Lab(scenario="servicing-in-progress", hosts=4, time_scale=LAB_SCALE) as lab:
        hosts = [replace(h, groups=("web",), reboot_group_cap=1) for h in demo_hosts(lab)]
        summary = Runner(hosts, demo_options(tmp_path), subscribers=[seen.append]).run()
    assert set(summary.outcomes.values()) == {"repaired"}
    rebooting, most = 0, 0
    for event in seen:
        if isinstance(event, ev.RebootStarted):
            rebooting += 1
        elif isinstance(event, ev.RebootFinished):
            rebooting -= 1
        most = max(most, rebooting)
    assert most == 1


def test_max_fail_percent_stops_starting_new_hosts(tmp_path) -> None:
    from wuremote.secret import Secret

    with Lab(scenario="healthy", hosts=4, time_scale=LAB_SCALE) as lab:
        hosts = [replace(h, password=Secret("not-the-password")) for h in demo_hosts(lab)]
        options = demo_options(tmp_path)
        options.forks, options.max_fail_percent = 1, 20.0  # one failure of four is 25%
        summary = Runner(hosts, options).run()
    outcomes = [summary.outcomes[h.name] for h in hosts]
    assert outcomes[0] == "unreachable" and "authentication failed" in summary.causes[hosts[0].name]
    assert outcomes[1:] == ["skipped"] * 3
    assert summary.exit_code == 1


def test_host_timeout_fails_the_slow_host_and_keeps_what_it_collected(tmp_path, monkeypatch) -> None:
    from wuremote.engine import steps as host_steps

    # The host's clock passes its timeout the moment diagnose has finished, however fast or slow
    # the machine: lock and diagnose always finish first, and the repair never does.
    clock = MovableClock()
    monkeypatch.setattr(host_steps, "time", clock)

    def past_the_timeout_after_diagnose(event: Event) -> None:
        if isinstance(event, ev.StepFinished) and event.step == "diagnose":
            clock.skipped = 2 * options.host_timeout

    with Lab(scenario="component-store-corrupt", hosts=1, time_scale=LAB_SCALE) as lab:
        options = demo_options(tmp_path)
        options.host_timeout = 60.0
        summary = Runner(demo_hosts(lab), options, subscribers=[past_the_timeout_after_diagnose]).run()
    host = lab.endpoints[0].name
    assert summary.outcomes[host] == "failed" and "host timeout (60 s) reached before" in summary.causes[host]
    report = json.loads(summary.report_json.read_text(encoding="utf-8"))
    assert [s["name"] for s in report["hosts"][host]["steps"]][:2] == ["lock", "diagnose"]


def test_hosts_that_did_not_end_well_leave_their_log_tails(mixed_run) -> None:
    lab, summary, seen, scenarios = mixed_run
    for host, scenario in scenarios.items():
        logs = summary.run_dir / "logs" / host
        if summary.outcomes[host] in ("healthy", "repaired"):
            assert not logs.exists()
            continue
        names = sorted(p.name for p in logs.iterdir())
        assert names == ["CBS.log", "WindowsUpdateClient", "dism.log"], (host, names)
        if scenario == "component-store-needs-source":
            assert "0x800f081f" in (logs / "dism.log").read_text(encoding="utf-8").lower()
