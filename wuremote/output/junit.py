"""junit.xml from report.json: a testsuite per host, a testcase per step run, and one "outcome" case.

The "outcome" case is the verdict: exactly one failing testcase per host that did not end well,
and none for the others (a CI job counts hosts, not verify attempts).  The step cases are the
detail: a step that failed (the first verify, a rung that did not help, a step of a host that
then failed) passes, with what happened in system-out; a step that did not apply is skipped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from ..contract import ExitCode, Outcome
from .terminal import escape_char, without_bidi

# What XML 1.0 cannot hold at all (escaping does not help): C0 controls but tab, LF, CR;
# surrogates; U+FFFE and U+FFFF.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def junit(report: dict[str, Any]) -> ET.Element:
    """JUnit XML: a testsuite per host, a testcase per step run; exit 2 (not applicable) is skipped."""
    root = ET.Element("testsuites", name=_xml(f"wuremote {report['run']['command']} {report['run']['id']}"))
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for name, host in report["hosts"].items():
        suite = ET.SubElement(root, "testsuite", name=_xml(name))
        properties = ET.SubElement(suite, "properties")
        for key in ("outcome", "cause", "address"):
            ET.SubElement(properties, "property", name=key, value=_xml(host[key] or ""))
        updates = host.get("updates")
        if updates:  # what install-updates did: installed, failed (with the HRESULT) and still pending
            for key in ("installed", "failed"):
                listed = [u["kb"] + (f" {u['hresult']}" if key == "failed" else "") for u in updates[key]]
                ET.SubElement(properties, "property", name=f"updates_{key}", value=_xml(", ".join(listed)))
            ET.SubElement(properties, "property", name="updates_pending", value=_xml(", ".join(updates["pending"])))
        ET.SubElement(properties, "property", name="reboots", value=str(host.get("reboots", 0)))
        ET.SubElement(properties, "property", name="changed", value=str(bool(host.get("changed"))).lower())
        counts = dict.fromkeys(totals, 0)
        ended_well = Outcome(host["outcome"]).ended_well
        for step in host["steps"]:
            verdict = _add_case(suite, name, step, detail="before the host was repaired" if ended_well
                                else f"on the way to {host['outcome']} (see the outcome testcase)")
            counts["tests"] += 1
            if verdict != "passed":
                counts[verdict] += 1
        for step in [_host_case(host)]:
            verdict = _add_case(suite, name, step)
            counts["tests"] += 1
            if verdict != "passed":
                counts[verdict] += 1
        seconds = sum(step["duration"] or 0 for step in host["steps"])
        suite.attrib.update({key: str(n) for key, n in counts.items()}, time=f"{seconds:.3f}")
        for key, n in counts.items():
            totals[key] += n
    root.attrib.update({key: str(n) for key, n in totals.items()})
    return root


def _host_case(host: dict[str, Any]) -> dict[str, Any]:
    """Every host ends with one "outcome" testcase: the verdict a CI job reads first."""
    outcome = Outcome(host["outcome"])
    exit_code = int(ExitCode.NOT_APPLICABLE if outcome is Outcome.SKIPPED else (
        ExitCode.OK if outcome.ended_well else ExitCode.FAILED))
    return {"name": "outcome", "attempt": 1, "status": host["outcome"], "exit_code": exit_code, "duration": None,
            "error_kind": None, "messages": [f"{host['outcome']}: {host['cause']}" if host["cause"] else host["outcome"]],
            "hresults": [], "transcript": None}


def _add_case(suite: ET.Element, host: str, step: dict[str, Any], *, detail: str | None = None) -> str:
    """One testcase; returns its verdict: passed, failures, errors or skipped.

    ``detail`` (a step case, not the outcome): a step that failed is detail of the host's
    verdict, not a verdict of its own; it passes with what happened, and ``detail``, in system-out.
    """
    name = step["name"] if step["attempt"] == 1 else f"{step['name']}#{step['attempt']}"
    case = ET.SubElement(suite, "testcase", classname=_xml(host), name=_xml(name),
                         time=f"{step['duration'] or 0:.3f}")
    reason = _reason(step)
    exit_code = step["exit_code"]
    if detail is not None and not ExitCode.is_ok(exit_code) and exit_code != ExitCode.NOT_APPLICABLE:
        what = f"exit code {exit_code}" if exit_code is not None else (step["error_kind"] or step["status"])
        ET.SubElement(case, "system-out").text = _xml(f"{what} {detail}\n{reason}".rstrip()
                                                      + (f"\ntranscript: {step['transcript']}" if step["transcript"] else ""))
        return "passed"
    if exit_code == ExitCode.NOT_APPLICABLE:
        ET.SubElement(case, "skipped", message=_xml(reason.splitlines()[0] if reason else "not applicable"))
        verdict = "skipped"
    elif ExitCode.is_ok(exit_code):
        verdict = "passed"
    elif exit_code is None:
        kind = step["error_kind"] or step["status"]
        element = ET.SubElement(case, "error", type=_xml(kind), message=_xml(reason.splitlines()[0] if reason else kind))
        element.text = _xml(reason)
        verdict = "errors"
    else:
        first = reason.splitlines()[0] if reason else f"exit code {exit_code}"
        kind = step["status"] if step["name"] == "outcome" else f"exit {exit_code}"
        element = ET.SubElement(case, "failure", type=_xml(kind), message=_xml(first))
        element.text = _xml(f"exit code {exit_code}\n{reason}".rstrip())
        verdict = "failures"
    if step["transcript"]:
        ET.SubElement(case, "system-out").text = _xml(f"transcript: {step['transcript']}")
    return verdict


def _reason(step: dict[str, Any]) -> str:
    """Why a step did not pass, for people: its messages, then what each HRESULT means and what fixes it."""
    lines = list(step["messages"])
    lines += [f"{h['code']} {h['name']}: {h['meaning']} -> {h['fix']}" for h in step["hresults"]]
    if step["status"] == "interrupted" and not lines:
        lines.append("interrupted: the controller stopped before the step finished")
    return "\n".join(lines)


def _xml(text: str) -> str:
    """Text XML 1.0 can hold: each forbidden character becomes a visible \\xNN or \\uNNNN (ElementTree escapes the rest)."""
    return without_bidi(_XML_FORBIDDEN.sub(escape_char, str(text)))
