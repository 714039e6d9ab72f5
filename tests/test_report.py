"""report.json, junit.xml, transcripts and the text summary, from a realistic run's events."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from wuremote import events as ev
from wuremote.contract import StepResult, StreamRecord
from wuremote.events import Event
from wuremote.output.report import build_report, write_report
from wuremote.output.terminal import render_text
from wuremote.output.transcript import render_transcript
from wuremote.store.journal import Journal
from wuremote.store.rundir import RunDir, safe_name, transcript_name

# The kinds as the journal names them: RunScript builds each event as a journal row is read back.
RUN_STARTED, HOST_STARTED, STEP_STARTED, STEP_FINISHED = (ev.RunStarted.kind, ev.HostStarted.kind, ev.StepStarted.kind,
                                                          ev.StepFinished.kind)
REBOOT_STARTED, REBOOT_FINISHED, HOST_MESSAGE = ev.RebootStarted.kind, ev.RebootFinished.kind, ev.HostMessage.kind
HOST_FINISHED, RUN_FINISHED = ev.HostFinished.kind, ev.RunFinished.kind

RUN = "20261126-093700-ab12"
T0 = 1_795_685_820.0  # 2026-11-26T09:37:00Z
HOSTILE = "../../etc/passwd"
NASTY = "bad <tag> & \"quote\" \x00nul \x1b[31mred\x1b[0m \x07bell \ufffe end"


class RunScript:
    """Builds a run's events in order, each a second after the last."""

    def __init__(self, hosts: list[str]) -> None:
        self.events: list[Event] = []
        self.add(RUN_STARTED, command="repair", hosts=hosts, options={"forks": 4}, version="0.1.0")

    def add(self, kind: str, host: str | None = None, step: str | None = None, **data: Any) -> None:
        self.events.append(Event.from_record(kind, RUN, host, step, data, T0 + len(self.events)))

    def host(self, name: str) -> None:
        self.add(HOST_STARTED, name, address=f"{name}.lab.example", transport="psrp", groups=["web"])

    def step(self, host: str, step: str, exit_code: int | None, attempt: int = 1, **data: Any) -> None:
        self.add(STEP_STARTED, host, step, attempt=attempt, reason="plan", idempotent=True, detached=False)
        status = {0: "ok", 3010: "ok", 2: "not-applicable", None: "failed"}.get(exit_code, "failed")
        fields: dict[str, Any] = {"exit_code": exit_code, "status": status, "duration": 2.5, "hresults": [],
                                  "messages": [], "changes": [], "reboot_required": exit_code == 3010,
                                  "error_kind": None,
                                  "transcript": transcript_name(host, step, attempt)}
        fields.update(data)
        self.add(STEP_FINISHED, host, step, **fields)  # no attempt: the runner's step-finished has none

    def finish(self, host: str, outcome: str, cause: str = "") -> None:
        self.add(HOST_FINISHED, host, outcome=outcome, cause=cause, steps_run=0, reboots=0)


FACTS = {"disk": {"free_bytes": 32 * 2**30, "low": False}, "clock": {"skew_seconds": -1.5},
         "pending_reboot": ["wu-reboot-required"], "servicing": {"in_progress": False},
         "update_source": {"kind": "wsus", "wsus_server": "http://wsus:8530", "winhttp_proxy": None}, "errors": []}


def fleet_run() -> list[Event]:
    """Healthy, repaired (3010 + reboot), needs-operator (0x8024402C), unreachable; interrupted mid-DISM."""
    run = RunScript(["web01", "web02", "db01", "dc01", "app01", "late"])
    run.host("web01")
    run.step("web01", "diagnose", 0, facts=FACTS)
    run.step("web01", "verify", 0)
    run.finish("web01", "healthy")

    run.host("web02")
    run.step("web02", "diagnose", 0, facts={**FACTS, "disk": {"free_bytes": 5 * 2**30, "low": True}})
    run.step("web02", "verify", 1, hresults=["0x80070002"], messages=["search failed"])
    run.step("web02", "troubleshooter", 2, messages=["the troubleshooting pack is retired on this build"])
    run.step("web02", "reset-components", 3010, changes=[{"moved": "SoftwareDistribution\\DataStore"}])
    run.add(REBOOT_STARTED, "web02", reason="reset-components", boot_before="2026-11-20T08:00:00Z")
    run.add(REBOOT_FINISHED, "web02", ok=True, duration=48.0, boot_after="2026-11-26T09:40:00Z", message="")
    run.step("web02", "verify", 0, attempt=2)
    run.finish("web02", "repaired", "0x80070002 fixed by reset-components")

    run.host("db01")
    run.step("db01", "diagnose", 0, facts=FACTS)
    run.step("db01", "verify", 7, hresults=["0x8024402C"], messages=["cannot reach the update server"])
    run.add(HOST_MESSAGE, "db01", level="warning", text="no repair step fixes a network failure")
    run.finish("db01", "needs-operator", "WSUS server unreachable: fix the network, proxy or WSUS")

    run.host("dc01")
    run.step("dc01", "diagnose", None, error_kind="unreachable", messages=["connection refused on 5986"])
    run.finish("dc01", "unreachable", "WinRM refused: enable WinRM over HTTPS")

    run.host("app01")
    run.step("app01", "diagnose", 0, facts=FACTS)
    run.add(STEP_STARTED, "app01", "dism", attempt=1, reason="0x80073712", idempotent=False, detached=True)
    run.add(RUN_FINISHED, exit_code=130, counts={}, interrupted=True)
    return run.events


def test_report_says_each_hosts_outcome_steps_hresults_and_facts() -> None:
    report = build_report(fleet_run())
    run = report["run"]
    assert report["schema_version"] == 1
    assert run["id"] == RUN and run["command"] == "repair" and run["started"] == "2026-11-26T09:37:00.000Z"
    assert run["interrupted"] and run["exit_code"] == 130
    assert run["counts"] == {"healthy": 1, "repaired": 1, "needs-operator": 1, "unreachable": 1, "interrupted": 1,
                             "skipped": 1}
    hosts = report["hosts"]
    assert list(hosts) == ["web01", "web02", "db01", "dc01", "app01", "late"]

    web02 = hosts["web02"]
    assert web02["outcome"] == "repaired" and web02["reboots"] == 1
    assert [(s["name"], s["attempt"], s["exit_code"]) for s in web02["steps"]] == [
        ("diagnose", 1, 0), ("verify", 1, 1), ("troubleshooter", 1, 2), ("reset-components", 1, 3010), ("verify", 2, 0)]
    assert web02["steps"][3]["reboot_required"] and web02["steps"][4]["transcript"] == "transcripts/web02/verify-2.log"
    assert web02["steps"][1]["hresults"][0]["name"] == "ERROR_FILE_NOT_FOUND"
    assert web02["facts"]["free_gb"] == 5.0 and web02["facts"]["disk_low"] is True

    db01 = hosts["db01"]
    assert db01["cause"] == "WSUS server unreachable: fix the network, proxy or WSUS"
    hres = db01["steps"][1]["hresults"][0]
    assert (hres["code"], hres["name"], hres["category"]) == ("0x8024402C", "WU_E_PT_WINHTTP_NAME_NOT_RESOLVED", "network")
    assert "proxy" in hres["fix"]
    assert db01["messages"][0]["level"] == "warning"
    assert db01["facts"]["update_source"] == "wsus" and db01["facts"]["clock_skew_seconds"] == -1.5

    assert hosts["dc01"]["steps"][0]["error_kind"] == "unreachable" and hosts["dc01"]["facts"] is None
    app01 = hosts["app01"]
    assert app01["outcome"] == "interrupted" and app01["steps"][-1]["status"] == "interrupted"
    assert app01["steps"][-1]["exit_code"] is None and app01["steps"][-1]["reason"] == "0x80073712"
    assert hosts["late"]["outcome"] == "skipped" and hosts["late"]["steps"] == []


def test_report_validates_against_the_shipped_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(resources.files("wuremote.output").joinpath("report_schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    report = build_report(fleet_run() + hostile_events())
    validator.validate(json.loads(json.dumps(report)))
    report["hosts"]["web01"]["outcome"] = "fine"
    assert not validator.is_valid(report)


def junit_counts(element: ET.Element) -> tuple[int, int, int, int]:
    return tuple(int(element.get(key, "-1")) for key in ("tests", "failures", "errors", "skipped"))  # type: ignore[return-value]


def test_junit_has_a_suite_per_host_and_the_right_failures_errors_and_skips(tmp_path: Path) -> None:
    report_path, junit_path = write_report(RunDir(tmp_path, RUN), fleet_run())
    assert json.loads(report_path.read_text(encoding="utf-8"))["run"]["id"] == RUN
    root = ET.parse(junit_path).getroot()
    suites = {suite.get("name"): suite for suite in root.iter("testsuite")}
    assert list(suites) == ["web01", "web02", "db01", "dc01", "app01", "late"]
    assert junit_counts(root) == (18, 3, 0, 2)  # every host ends with an "outcome" testcase, the verdict
    # web02 ended repaired: its first verify failing is the ladder at work, not a CI failure
    assert junit_counts(suites["web02"]) == (6, 0, 0, 1)
    names = [case.get("name") for case in suites["web02"].iter("testcase")]
    assert names == ["diagnose", "verify", "troubleshooter", "reset-components", "verify#2", "outcome"]
    assert "exit code 1 before the host was repaired" in suites["web02"].find("testcase[@name='verify']/system-out").text
    assert suites["db01"].find("testcase[@name='outcome']/failure").get("type") == "needs-operator"
    assert {case.get("classname") for case in suites["web02"].iter("testcase")} == {"web02"}

    # a step of a host that did not end well is detail of its one failing outcome case
    detail = suites["db01"].find("testcase[@name='verify']/system-out")
    assert detail is not None and "exit code 7 on the way to needs-operator" in (detail.text or "")
    assert "0x8024402C WU_E_PT_WINHTTP_NAME_NOT_RESOLVED" in (detail.text or "")
    assert suites["db01"].find("properties/property[@name='outcome']").get("value") == "needs-operator"  # type: ignore[union-attr]
    assert suites["dc01"].find("testcase[@name='outcome']/failure").get("type") == "unreachable"  # type: ignore[union-attr]
    assert suites["app01"].find("testcase[@name='outcome']/failure").get("type") == "interrupted"  # type: ignore[union-attr]
    assert suites["late"].find("testcase[@name='outcome']/skipped") is not None
    out = suites["web02"].find("testcase[@name='verify#2']/system-out")
    assert out is not None and out.text == "transcript: transcripts/web02/verify-2.log"


def test_junit_fails_exactly_one_testcase_per_unhealthy_host(tmp_path: Path) -> None:
    """Four hosts that failed after verify failed three or four times each: four failing testcases, not 14."""
    names = ["h1", "h2", "h3", "h4"]
    run = RunScript(names)
    for index, name in enumerate(names):
        run.host(name)
        for attempt in range(1, 4 + index % 2):
            run.step(name, "verify", 1, attempt=attempt, hresults=["0x80070002"])
        run.finish(name, "failed", "verify still fails after the last rung")
    run.add(RUN_FINISHED, exit_code=1, counts={"failed": 4}, interrupted=False)
    _, junit_path = write_report(RunDir(tmp_path, RUN), run.events)
    root = ET.parse(junit_path).getroot()
    failing = [(case.get("classname"), case.get("name")) for case in root.iter("testcase")
               if case.find("failure") is not None or case.find("error") is not None]
    assert failing == [(name, "outcome") for name in names]
    assert junit_counts(root)[1:3] == (4, 0)
    # the step cases stay, for the detail
    assert [c.get("name") for c in root.find("testsuite").iter("testcase")] == ["verify", "verify#2", "verify#3", "outcome"]


def hostile_events() -> list[Event]:
    run = RunScript([HOSTILE, NASTY])
    for name in (HOSTILE, NASTY):
        run.host(name)
        run.step(name, "verify", 1, hresults=["0x80070002", "not-a-code"], messages=[NASTY, "line\r\nbreak\x0c"])
        run.add(HOST_MESSAGE, name, level="error", text=NASTY)
        run.finish(name, "failed", NASTY)
    run.add(RUN_FINISHED, exit_code=1, counts={"failed": 2}, interrupted=False)
    return run.events


def test_hostile_host_names_and_messages_still_give_well_formed_files(tmp_path: Path) -> None:
    report_path, junit_path = write_report(RunDir(tmp_path, RUN), hostile_events())
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert list(report["hosts"]) == [HOSTILE, NASTY]
    assert report["hosts"][HOSTILE]["steps"][0]["hresults"][1]["name"] == "INVALID"
    root = ET.parse(junit_path).getroot()  # raises on anything XML 1.0 forbids
    names = [suite.get("name") for suite in root.iter("testsuite")]
    assert names[0] == HOSTILE and names[1].startswith("bad <tag> & \"quote\" \\x00nul \\x1b[31mred")
    failure = root.find("testsuite/testcase[@name='outcome']/failure")
    assert failure is not None and "<tag>" in failure.get("message", "")
    detail = root.find("testsuite/testcase[@name='verify']/system-out")
    assert detail is not None and "\\x0c" in (detail.text or "")
    assert junit_counts(root) == (4, 2, 0, 0)

    text = render_text(report)
    assert "\x1b" not in text and "\x07" not in text and "\x00" not in text
    assert len(text.splitlines()) == 3  # the run, then one line per host


def test_transcripts_stay_under_the_run_dir_whatever_the_host_name(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "state", RUN)
    assert transcript_name(HOSTILE, "verify", 2) == "transcripts/%2E.%2F..%2Fetc%2Fpasswd/verify-2.log"
    result = StepResult(HOSTILE, "verify", 1, {"status": "failed"}, started=T0, duration=3.0, truncated_bytes=10,
                        streams=[StreamRecord(T0, "output", "searching\nfound 0"), StreamRecord(T0 + 1, "error", "boom")])
    path = run_dir.write(transcript_name(HOSTILE, "verify", 2),
                         render_transcript(result, host_transcript="host side\n", error="connection reset"))
    assert path.resolve().is_relative_to(run_dir.path.resolve())
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["2026-11-26T09:37:00.000Z [output] searching", "2026-11-26T09:37:00.000Z [output] found 0",
                         "2026-11-26T09:37:01.000Z [error] boom"]
    assert "10 bytes of output dropped" in lines[3] and lines[4].endswith("[controller] error: connection reset")
    assert lines[5:7] == ["----- the host's transcript -----", "host side"]
    assert lines[7:] == ["----- result -----", "verify: failed, exit code 1, 3.0 s"]
    assert not (tmp_path / "etc").exists()

    lost = run_dir.write(transcript_name("a/b", "dism"),
                         render_transcript(None, host_transcript=None, error="connection reset"))
    assert lost.parent.parent == run_dir.path / "transcripts"
    assert lost.read_text(encoding="utf-8").splitlines()[1:] == ["----- result -----", "no result: connection reset"]


def test_a_transcript_is_plain_text_with_the_result_summarised_at_the_end(tmp_path: Path) -> None:
    payload = {"wuremote_result": 1, "step": "verify", "status": "failed", "exit_code": 1,
               "messages": ["search failed with 0x80070002"], "changes": [{"kind": "x"}], "facts": {"big": [1] * 50}}
    result = StepResult("web01", "verify", 1, payload, started=T0, duration=2.0,
                        streams=[StreamRecord(T0, "verbose", "searching"), StreamRecord(T0 + 1, "output", json.dumps(payload))])
    text = render_transcript(result, host_transcript=None, error=None)
    assert "{" not in text  # no JSON: the result object is in report.json
    lines = text.splitlines()
    assert lines[0] == "2026-11-26T09:37:00.000Z [verbose] searching"
    assert lines[1] == "2026-11-26T09:37:01.000Z [output] result of verify: failed (exit 1); in full in report.json"
    assert lines[2:] == ["----- result -----", "verify: failed, exit code 1, 2.0 s",
                         "message: search failed with 0x80070002", "changes: 1 (listed in report.json)"]


def test_safe_names_are_single_readable_components_and_never_collide() -> None:
    names = ["web01.corp.example", "a/b", "a_b", "a%2Fb", "a\\b", "..", ".", "CON", "con.txt", "héllo", "x" * 300,
             "x" * 299 + "y"]
    safe = [safe_name(name) for name in names]
    assert safe[0] == "web01.corp.example"
    assert len(set(safe)) == len(names)
    for name in safe:
        assert "/" not in name and "\\" not in name and name not in (".", "..") and len(name) <= 100
        assert not name.startswith(".") and not name.lower().startswith("con")
    with pytest.raises(ValueError, match="empty"):
        safe_name("")


def test_a_bad_run_id_cannot_become_a_path() -> None:
    with pytest.raises(ValueError, match="not a run id"):
        RunDir(Path("state"), "../other")


def test_text_summary_has_one_line_per_host_with_outcome_steps_and_cause() -> None:
    text = render_text(build_report(fleet_run()))
    lines = text.splitlines()
    assert lines[0] == (f"run {RUN} (repair) interrupted, exit 130: 1 healthy, 1 repaired, 1 needs-operator, "
                        "1 unreachable, 1 interrupted, 1 skipped")
    web02 = next(line for line in lines if line.strip().startswith("web02"))
    assert "repaired" in web02 and "verify(1), troubleshooter(2), reset-components(3010), verify#2" in web02
    assert "1 reboot" in web02
    db01 = next(line for line in lines if line.strip().startswith("db01"))
    assert db01.endswith("-- WSUS server unreachable: fix the network, proxy or WSUS")
    assert "dism(interrupted)" in next(line for line in lines if line.strip().startswith("app01"))
    assert len(lines) == 7


def test_text_summary_on_a_terminal_folds_between_words_with_each_host_at_the_margin() -> None:
    report = build_report(fleet_run())
    folded = render_text(report, width=40).splitlines()
    assert all(len(line) <= 40 for line in folded)
    hosts = [line for line in folded if line.startswith("  ") and not line.startswith("      ")]
    assert [line.split()[0] for line in hosts] == list(report["hosts"])  # each host's line starts at the margin
    words = " ".join(render_text(report).split())
    assert " ".join(" ".join(folded).split()) == words  # only folded: no word cut, dropped or added
    assert any("reset-components(3010)," in line.split() for line in folded)  # a step's name is never cut


def test_events_of_two_runs_or_none_are_refused() -> None:
    with pytest.raises(ValueError, match="no run-started"):
        build_report([])
    other = ev.RunStarted("20261126-000000-0000", command="check")
    with pytest.raises(ValueError, match="one report per run"):
        build_report(fleet_run() + [other])


def test_the_report_rebuilt_from_the_journal_equals_the_live_one(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        for event in fleet_run():
            journal.record(event)
        assert build_report(journal.events(RUN)) == build_report(fleet_run())


def test_a_resumed_run_reports_the_resume_and_its_new_end() -> None:
    events = fleet_run()
    resume = RunScript(["app01", "late"])
    resume.events[0] = ev.RunStarted(RUN, command="resume", hosts=["app01", "late"], time=T0 + 100)
    resume.host("app01")
    resume.step("app01", "dism", 0)
    resume.finish("app01", "repaired", "component store repaired")
    report = build_report(events + resume.events)
    assert report["run"]["resumed"] == 1 and report["run"]["finished"] is None and report["run"]["interrupted"]
    app01 = report["hosts"]["app01"]
    assert app01["outcome"] == "repaired"
    assert [(s["name"], s["status"]) for s in app01["steps"]] == [("diagnose", "ok"), ("dism", "interrupted"),
                                                                   ("dism", "ok")]


def test_a_plan_only_host_passes_in_junit(tmp_path: Path) -> None:
    run = RunScript(["p1"])
    run.host("p1")
    run.finish("p1", "planned", "would run: reset-components, verify")
    run.add(RUN_FINISHED, exit_code=0, counts={"planned": 1}, interrupted=False)
    _, junit_path = write_report(RunDir(tmp_path, RUN), run.events)
    root = ET.parse(junit_path).getroot()
    assert junit_counts(root) == (1, 0, 0, 0) and root.find("testsuite/testcase[@name='outcome']") is not None
