"""A run's artifacts: report.json, junit.xml, report.html and per-step transcripts under ``runs/<run-id>/``.

Everything here is built from the event stream alone (design.md section 1), so a report can
be rebuilt from the journal at any time, including for a run that was killed.  Host names,
messages and transcripts come from the hosts: they never choose a path outside the run dir
and never break the XML or the terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .contract import hresult
from .events import (HOST_FINISHED, HOST_MESSAGE, HOST_STARTED, REBOOT_FINISHED, REBOOT_STARTED, RUN_FINISHED,
                     RUN_STARTED, STEP_FINISHED, STEP_STARTED, Event)
from .report_html import render_html
from .contract import StepResult

SCHEMA_VERSION = 1
ENDED_WELL = ("healthy", "repaired", "planned", "checked")  # outcomes a CI job counts as success
NOT_APPLICABLE = 2  # the script contract's exit code for "not applicable"
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]")
_WINDOWS_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?$", re.IGNORECASE)
_MAX_NAME = 100
# What XML 1.0 cannot hold at all (escaping does not help): C0 controls but tab, LF, CR;
# surrogates; U+FFFE and U+FFFF.  The terminal summary also hides tab, LF, CR, DEL and the C1 controls.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class RunDir:
    """``<state dir>/runs/<run id>/``: the one place a run's files go."""

    state_dir: Path
    run_id: str

    def __post_init__(self) -> None:
        if not _RUN_ID_RE.match(self.run_id):
            raise ValueError(f"run id {self.run_id!r} is not a run id (letters, digits, '.', '_', '-'); "
                             "take it from the list of runs")

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / "runs" / self.run_id

    @property
    def report_json(self) -> Path:
        return self.path / "report.json"

    @property
    def junit_xml(self) -> Path:
        return self.path / "junit.xml"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    def transcript_name(self, host: str, step: str, attempt: int = 1) -> str:
        return transcript_name(host, step, attempt)

    def logs_dir(self, host: str) -> Path:
        """Where a host's collected log tails go (hosts that did not end well)."""
        return self.path / "logs" / safe_name(host)

    def transcript_path(self, host: str, step: str, attempt: int = 1) -> Path:
        return self.path / self.transcript_name(host, step, attempt)


def transcript_name(host: str, step: str, attempt: int = 1) -> str:
    """The transcript's path relative to the run dir, as step-finished events carry it."""
    suffix = "" if attempt == 1 else f"-{attempt}"
    return f"transcripts/{safe_name(host)}/{safe_name(step)}{suffix}.log"


def write_transcript(path: Path, result: StepResult | None, *, host_transcript: str | None,
                     error: str | None) -> None:
    """``render_transcript`` written to ``path`` (from ``RunDir.transcript_path``: it cannot leave the run dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_transcript(result, host_transcript=host_transcript, error=error)
    _write_atomically(path, text.encode("utf-8", errors="backslashreplace"))


def render_transcript(result: StepResult | None, *, host_transcript: str | None, error: str | None) -> str:
    """The controller's timestamped streams, then the error that ended the step, then the host's own transcript."""
    lines: list[str] = []
    if result is not None:
        for record in result.streams:
            stamp = _iso(record.time)
            lines.extend(f"{stamp} [{record.stream}] {line}" for line in record.text.splitlines() or [""])
        if result.truncated_bytes:
            lines.append(f"{_iso(time.time())} [controller] {result.truncated_bytes} bytes of output dropped "
                         "past the controller's output cap")
    if error:
        lines.append(f"{_iso(time.time())} [controller] error: {error}")
    if host_transcript is not None:
        lines.append("----- the host's transcript -----")
        lines.append(host_transcript.rstrip("\n"))
    return "\n".join(lines) + "\n"


def safe_name(name: str) -> str:
    """A single, readable path component for any host or step name.

    Letters, digits, '_', '-' and inner dots stay; anything else (slashes, backslashes,
    colons, controls, non-ASCII) becomes %XX of its UTF-8 bytes, as do leading and
    trailing dots, so "../../etc/passwd" is "%2E.%2F..%2Fetc%2Fpasswd" and never climbs.
    Windows device names get their first letter encoded; long names keep a hash tail.
    """
    if not name:
        raise ValueError("an empty host or step name has no file name; give every host a name in the inventory")
    encoded = "".join(ch if _NAME_CHARS.match(ch) else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
                      for ch in name)
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if encoded.endswith("."):
        encoded = encoded[:-1] + "%2E"
    if _WINDOWS_RESERVED.match(encoded):
        encoded = f"%{ord(encoded[0]):02X}" + encoded[1:]
    if len(encoded) > _MAX_NAME:
        encoded = encoded[:_MAX_NAME - 9] + "-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return encoded


# --- report.json ------------------------------------------------------------------------------
def build_report(events: list[Event]) -> dict[str, Any]:
    """report.json's content from one run's events (schema: wuremote/report_schema.json)."""
    starts = [e for e in events if e.kind == RUN_STARTED]
    if not starts:
        raise ValueError("no run-started event: build a report from a run's events (Journal.events(run_id))")
    run_ids = sorted({e.run_id for e in events})
    if len(run_ids) > 1:
        raise ValueError(f"events of {len(run_ids)} runs ({', '.join(run_ids)}): build one report per run")
    first = starts[0]
    hosts: dict[str, _HostBuilder] = {str(h): _HostBuilder() for h in first.data.get("hosts", [])}
    finished: Event | None = None
    for event in events:
        if event.kind in (RUN_STARTED, RUN_FINISHED):  # a resume reopens a finished run
            finished = event if event.kind == RUN_FINISHED else None
        elif event.host is not None:
            hosts.setdefault(event.host, _HostBuilder()).apply(event)
    run_stopped = finished is None or bool(finished.data.get("interrupted"))
    host_reports = {name: builder.report() for name, builder in hosts.items()}
    counts: dict[str, int] = {}
    for host in host_reports.values():
        counts[host["outcome"]] = counts.get(host["outcome"], 0) + 1
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "id": first.run_id,
            "command": str(first.data.get("command", "")),
            "version": str(first.data.get("version", "")),
            "started": _iso(first.time),
            "finished": _iso(finished.time) if finished else None,
            "exit_code": _int(finished.data.get("exit_code")) if finished else None,
            "interrupted": run_stopped,
            "resumed": len(starts) - 1,
            "counts": counts,
        },
        "hosts": host_reports,
    }


class _HostBuilder:
    """Folds one host's events into its report entry."""

    def __init__(self) -> None:
        self.started = False
        self.address: str | None = None
        self.transport: str | None = None
        self.groups: list[str] = []
        self.outcome: str | None = None
        self.cause = ""
        self.steps: list[dict[str, Any]] = []
        self.reboot_log: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.facts: dict[str, Any] | None = None

    def apply(self, event: Event) -> None:
        data = event.data
        if event.kind == HOST_STARTED:
            self.started = True
            self.outcome = None
            self.address = _str_or_none(data.get("address"))
            self.transport = _str_or_none(data.get("transport"))
            self.groups = [str(g) for g in data.get("groups") or []]
        elif event.kind == STEP_STARTED:
            self.steps.append(_step_entry(event))
        elif event.kind == STEP_FINISHED:
            self._finish_step(event)
        elif event.kind == REBOOT_STARTED:
            self.reboot_log.append({"reason": str(data.get("reason", "")), "started": _iso(event.time),
                                    "boot_before": _str_or_none(data.get("boot_before")), "ok": None,
                                    "duration": None, "boot_after": None, "message": ""})
        elif event.kind == REBOOT_FINISHED:
            if not self.reboot_log or self.reboot_log[-1]["ok"] is not None:
                self.reboot_log.append({"reason": "", "started": None, "boot_before": None})
            self.reboot_log[-1].update(ok=bool(data.get("ok")), duration=_num(data.get("duration")),
                                       boot_after=_str_or_none(data.get("boot_after")),
                                       message=str(data.get("message", "")))
        elif event.kind == HOST_MESSAGE and data.get("level") != "debug":  # debug: journal bookkeeping
            self.messages.append({"time": _iso(event.time), "level": str(data.get("level", "info")),
                                  "text": str(data.get("text", ""))})
        elif event.kind == HOST_FINISHED:
            self.outcome = str(data.get("outcome", ""))
            self.cause = str(data.get("cause", ""))

    def _finish_step(self, event: Event) -> None:
        # A host runs one step at a time: step-finished closes the latest open start of that step.
        entry = next((s for s in reversed(self.steps) if s["name"] == event.step and s["status"] == "interrupted"),
                     None)
        if entry is None:
            entry = _step_entry(event)
            self.steps.append(entry)
        data = event.data
        entry.update(
            status=str(data.get("status", "")), exit_code=_int(data.get("exit_code")),
            duration=_num(data.get("duration")), reboot_required=bool(data.get("reboot_required")),
            error_kind=_str_or_none(data.get("error_kind")),
            hresults=[_hresult(code) for code in data.get("hresults") or []],
            changes=list(data.get("changes") or []), messages=[str(m) for m in data.get("messages") or []],
            transcript=_str_or_none(data.get("transcript")))
        if event.step == "diagnose" and isinstance(data.get("facts"), dict) and data["facts"]:
            self.facts = _facts_summary(data["facts"], event.time)

    def report(self) -> dict[str, Any]:
        outcome, cause = self.outcome, self.cause
        if outcome is None:  # no host-finished: the run was stopped or killed (or is still going)
            outcome = "interrupted" if self.started else "skipped"
            cause = ("the run stopped before this host finished: resume the run" if self.started
                     else "the run stopped before this host started: resume the run")
        return {"outcome": outcome, "cause": cause, "address": self.address,
                "transport": self.transport, "groups": self.groups,
                "reboots": sum(1 for r in self.reboot_log if r["ok"]), "reboot_log": self.reboot_log,
                "steps": self.steps, "messages": self.messages, "facts": self.facts}


def _step_entry(event: Event) -> dict[str, Any]:
    """A step as started; status 'interrupted' until its step-finished arrives."""
    return {"name": str(event.step), "attempt": _int(event.data.get("attempt")) or 1,
            "reason": str(event.data.get("reason", "")), "started": _iso(event.time),
            "status": "interrupted", "exit_code": None, "duration": None, "reboot_required": False,
            "error_kind": None, "hresults": [], "changes": [], "messages": [], "transcript": None}


def _hresult(value: Any) -> dict[str, Any]:
    try:
        record = hresult.describe(value)
    except (TypeError, ValueError):
        return {"code": str(value), "name": "INVALID", "meaning": "the host reported a value that is not an HRESULT",
                "fix": "read the step's transcript", "category": "unknown"}
    return {"code": record.hex, "name": record.name, "meaning": record.meaning, "fix": record.fix,
            "category": record.category}


def _facts_summary(facts: dict[str, Any], when: float) -> dict[str, Any]:
    """The few diagnose facts an operator reads first; the full set is in the diagnose transcript."""
    disk = _dict(facts.get("disk"))
    clock = _dict(facts.get("clock"))
    source = _dict(facts.get("update_source"))
    servicing = _dict(facts.get("servicing"))
    free = _int(disk.get("free_bytes"))
    pending = facts.get("pending_reboot")
    return {
        "collected": _iso(when),
        "free_bytes": free,
        "free_gb": round(free / 2**30, 1) if free is not None else None,
        "disk_low": _bool_or_none(disk.get("low")),
        "clock_skew_seconds": _num(clock.get("skew_seconds")),
        "pending_reboot": [str(p) for p in pending] if isinstance(pending, list) else [],
        "servicing_in_progress": _bool_or_none(servicing.get("in_progress")),
        "update_source": _str_or_none(source.get("kind")),
        "wsus_server": _str_or_none(source.get("wsus_server")) or None,
        "winhttp_proxy": _str_or_none(source.get("winhttp_proxy")) or None,
        "errors": [str(e) for e in facts.get("errors") or []],
    }


# --- writing ----------------------------------------------------------------------------------
def write_report(run_dir: RunDir, events: list[Event]) -> tuple[Path, Path]:
    """Write report.json, junit.xml and report.html (each atomically: a reader sees the old file or the new).

    Returns report.json's and junit.xml's paths; report.html is always ``run_dir.report_html``.
    """
    report = build_report(events)
    if report["run"]["id"] != run_dir.run_id:
        raise ValueError(f"events of run {report['run']['id']} given for the run dir of {run_dir.run_id}")
    run_dir.path.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    _write_atomically(run_dir.report_json, text.encode("utf-8", errors="backslashreplace"))
    tree = junit(report)
    ET.indent(tree)
    _write_atomically(run_dir.junit_xml, ET.tostring(tree, encoding="utf-8", xml_declaration=True))
    _write_atomically(run_dir.report_html, render_html(report).encode("utf-8", errors="backslashreplace"))
    return run_dir.report_json, run_dir.junit_xml


def junit(report: dict[str, Any]) -> ET.Element:
    """JUnit XML: a testsuite per host, a testcase per step run; exit 2 (not applicable) is skipped."""
    root = ET.Element("testsuites", name=_xml(f"wuremote {report['run']['command']} {report['run']['id']}"))
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for name, host in report["hosts"].items():
        suite = ET.SubElement(root, "testsuite", name=_xml(name))
        properties = ET.SubElement(suite, "properties")
        for key in ("outcome", "cause", "address"):
            ET.SubElement(properties, "property", name=key, value=_xml(host[key] or ""))
        counts = dict.fromkeys(totals, 0)
        ended_well = host["outcome"] in ENDED_WELL
        for step in host["steps"] + [_host_case(host)]:
            verdict = _add_case(suite, name, step, on_the_way=ended_well and step["name"] != "outcome")
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
    exit_code = {"healthy": 0, "repaired": 0, "planned": 0, "checked": 0, "skipped": NOT_APPLICABLE}.get(
        host["outcome"], 1)
    return {"name": "outcome", "attempt": 1, "status": host["outcome"], "exit_code": exit_code, "duration": None,
            "error_kind": None, "messages": [f"{host['outcome']}: {host['cause']}" if host["cause"] else host["outcome"]],
            "hresults": [], "transcript": None}


def _add_case(suite: ET.Element, host: str, step: dict[str, Any], *, on_the_way: bool = False) -> str:
    """One testcase; returns its verdict: passed, failures, errors or skipped.

    ``on_the_way``: the host ended healthy or repaired, so a step that failed before the repair
    (the first verify, a rung that did not help) is what climbing the ladder looks like, not a
    failure for a CI job; it passes with what happened in system-out.
    """
    name = step["name"] if step["attempt"] == 1 else f"{step['name']}#{step['attempt']}"
    case = ET.SubElement(suite, "testcase", classname=_xml(host), name=_xml(name),
                         time=f"{step['duration'] or 0:.3f}")
    reason = _reason(step)
    exit_code = step["exit_code"]
    if on_the_way and exit_code not in (0, 3010, NOT_APPLICABLE):
        what = f"exit code {exit_code}" if exit_code is not None else (step["error_kind"] or step["status"])
        ET.SubElement(case, "system-out").text = _xml(f"{what} before the host was repaired\n{reason}".rstrip()
                                                      + (f"\ntranscript: {step['transcript']}" if step["transcript"] else ""))
        return "passed"
    if exit_code == NOT_APPLICABLE:
        ET.SubElement(case, "skipped", message=_xml(reason.splitlines()[0] if reason else "not applicable"))
        verdict = "skipped"
    elif exit_code in (0, 3010):
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


def render_text(report: dict[str, Any]) -> str:
    """A short summary for the terminal: the run, then one line per host (outcome, steps, cause)."""
    run = report["run"]
    if run["finished"] is None:
        state = "did not finish (killed, or still running)"
    else:
        state = f"{'interrupted' if run['interrupted'] else 'finished'}, exit {run['exit_code']}"
    counts = ", ".join(f"{n} {outcome}" for outcome, n in run["counts"].items()) or "no hosts"
    lines = [printable(f"run {run['id']} ({run['command']}) {state}: {counts}")]
    width = max((len(printable(name)) for name in report["hosts"]), default=0)
    for name, host in report["hosts"].items():
        steps = ", ".join(_step_label(step) for step in host["steps"]) or "no steps"
        reboots = f"; {host['reboots']} reboot{'s' if host['reboots'] != 1 else ''}" if host["reboots"] else ""
        line = f"  {printable(name):<{width}}  {host['outcome']:<14}  {steps}{reboots}"
        if host["cause"]:
            line += f"  -- {host['cause']}"
        lines.append(printable(line))
    return "\n".join(lines) + "\n"


def _step_label(step: dict[str, Any]) -> str:
    label = step["name"] if step["attempt"] == 1 else f"{step['name']}#{step['attempt']}"
    if step["status"] == "interrupted":
        return f"{label}(interrupted)"
    if step["exit_code"] is None:
        return f"{label}({step['error_kind'] or step['status']})"
    return label if step["exit_code"] == 0 else f"{label}({step['exit_code']})"


# --- helpers ----------------------------------------------------------------------------------
def _xml(text: str) -> str:
    """Text XML 1.0 can hold: each forbidden character becomes a visible \\xNN or \\uNNNN (ElementTree escapes the rest)."""
    return _XML_FORBIDDEN.sub(_escape_char, str(text))


def printable(text: str) -> str:
    """No terminal escape sequence or control character from a host reaches the operator's terminal."""
    return _UNPRINTABLE.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _write_atomically(target: Path, content: bytes) -> None:
    with tempfile.NamedTemporaryFile("wb", dir=target.parent, prefix=f".{target.name}-", delete=False) as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, target)


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
