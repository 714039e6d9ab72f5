"""report.json: one fold of a run's typed events into the report every other output reads.

Everything here is built from the event stream alone (docs/design.md, §1), so a report can be
rebuilt from the journal at any time, including for a run that was killed.  JUnit, the HTML
page and the terminal summary are rendered from the report this module builds.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import events as ev
from ..contract import Outcome, hresult
from ..store.rundir import RunDir, atomic_write
from .html import render_html
from .junit import junit

SCHEMA_VERSION = 1


# --- report.json ------------------------------------------------------------------------------
def build_report(events: list[ev.Event]) -> dict[str, Any]:
    """report.json's content from one run's events (schema: wuremote/output/report_schema.json)."""
    starts = [e for e in events if isinstance(e, ev.RunStarted)]
    if not starts:
        raise ValueError("no run-started event: build a report from a run's events (Journal.events(run_id))")
    run_ids = sorted({e.run_id for e in events})
    if len(run_ids) > 1:
        raise ValueError(f"events of {len(run_ids)} runs ({', '.join(run_ids)}): build one report per run")
    first = starts[0]
    hosts: dict[str, _HostBuilder] = {str(h): _HostBuilder() for h in first.hosts}
    finished: ev.RunFinished | None = None
    for event in events:
        if isinstance(event, (ev.RunStarted, ev.RunFinished)):  # a resume reopens a finished run
            finished = event if isinstance(event, ev.RunFinished) else None
        elif event.host is not None:
            hosts.setdefault(event.host, _HostBuilder()).apply(event)
    run_stopped = finished is None or finished.interrupted
    host_reports = {name: builder.report() for name, builder in hosts.items()}
    counts: dict[str, int] = {}
    for host in host_reports.values():
        counts[host["outcome"]] = counts.get(host["outcome"], 0) + 1
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "id": first.run_id,
            "command": first.command,
            "version": first.version,
            "started": iso(first.time),
            "finished": iso(finished.time) if finished else None,
            "exit_code": _int(finished.exit_code) if finished else None,
            "interrupted": run_stopped,
            "resumed": len(starts) - 1,
            "counts": counts,
        },
        "hosts": host_reports,
    }


# wuremote's own bookkeeping on a host (its lock lease, the detached-step plumbing): changes these
# report are not changes to the host, so they never make `changed` true.
BOOKKEEPING_STEPS = frozenset({"lock", "detached-start", "detached-poll", "detached-cleanup"})


class _HostBuilder:
    """Folds one host's events into its report entry."""

    def __init__(self) -> None:
        self.started = False
        self.address: str | None = None
        self.transport: str | None = None
        self.groups: list[str] = []
        self.outcome: Outcome | None = None
        self.cause = ""
        self.steps: list[dict[str, Any]] = []
        self.reboot_log: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.facts: dict[str, Any] | None = None
        self.updates: _Updates | None = None  # from install-updates: None when none ran

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.HostStarted):
            self.started = True
            self.outcome = None
            self.address, self.transport, self.groups = event.address, event.transport, [str(g) for g in event.groups]
        elif isinstance(event, ev.StepStarted):
            self.steps.append(_step_entry(event))
        elif isinstance(event, ev.StepFinished):
            self._finish_step(event)
        elif isinstance(event, ev.RebootStarted):
            self.reboot_log.append({"reason": event.reason, "started": iso(event.time), "boot_before": event.boot_before,
                                    "ok": None, "duration": None, "boot_after": None, "message": ""})
        elif isinstance(event, ev.RebootFinished):
            if not self.reboot_log or self.reboot_log[-1]["ok"] is not None:
                self.reboot_log.append({"reason": "", "started": None, "boot_before": None})
            self.reboot_log[-1].update(ok=event.ok, duration=_num(event.duration), boot_after=event.boot_after,
                                       message=event.message)
        elif isinstance(event, ev.HostMessage):
            self._message(event, event.level, event.text)
        elif isinstance(event, ev.HostPlanned):
            self._message(event, "info", event.text)
        elif isinstance(event, ev.SessionClosed) and event.orphan:
            self._message(event, "info", event.summary)
        elif isinstance(event, ev.HostFinished):
            self.outcome = event.outcome
            self.cause = event.cause

    def _message(self, event: ev.Event, level: str, text: str) -> None:
        self.messages.append({"time": iso(event.time), "level": level, "text": text})

    def _finish_step(self, event: ev.StepFinished) -> None:
        # A host runs one step at a time: step-finished closes the latest open start of that step.
        entry = next((s for s in reversed(self.steps) if s["name"] == event.step and s["status"] == "interrupted"),
                     None)
        if entry is None:
            entry = _step_entry(event)
            self.steps.append(entry)
        entry.update(
            status=event.status, exit_code=_int(event.exit_code), duration=_num(event.duration),
            reboot_required=event.reboot_required, error_kind=event.error_kind,
            hresults=[_hresult(code) for code in event.hresults], changes=list(event.changes),
            messages=[str(m) for m in event.messages], transcript=event.transcript)
        if event.step == "diagnose" and event.facts:
            self.facts = _facts_summary(event.facts, event.time)
        if event.step == "install-updates" and event.facts:
            self.updates = self.updates or _Updates()
            self.updates.apply(event.facts)

    @property
    def changed(self) -> bool:
        """Whether the run changed the host (win_updates' `changed`): a step reported a change,
        or a restart was started; a repeat run of a healthy host must say false."""
        return bool(self.reboot_log) or any(
            step["changes"] for step in self.steps if step["name"] not in BOOKKEEPING_STEPS)

    def report(self) -> dict[str, Any]:
        outcome, cause = self.outcome, self.cause
        if outcome is None:  # no host-finished: the run was stopped or killed (or is still going)
            outcome = Outcome.INTERRUPTED if self.started else Outcome.SKIPPED
            cause = ("the run stopped before this host finished: resume the run" if self.started
                     else "the run stopped before this host started: resume the run")
        return {"outcome": str(outcome), "cause": cause, "address": self.address,
                "transport": self.transport, "groups": self.groups,
                "changed": self.changed,
                "reboots": sum(1 for r in self.reboot_log if r["ok"]), "reboot_log": self.reboot_log,
                "steps": self.steps, "messages": self.messages, "facts": self.facts,
                "updates": self.updates.report() if self.updates else None}


class _Updates:
    """The updates of one host across its install-updates runs: installed, failed (and not installed
    later), still pending after the last one; and the newest successful install the agent recorded."""

    def __init__(self) -> None:
        self.installed: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, dict[str, Any]] = {}
        self.pending: list[str] = []
        self.last_success: str | None = None

    def apply(self, facts: dict[str, Any]) -> None:
        for entry in facts.get("results") or []:
            if not isinstance(entry, dict):
                continue
            kb, title = str(entry.get("kb") or ""), str(entry.get("title") or "")
            if entry.get("result_code") in (2, 3):  # OperationResultCode succeeded (with errors)
                self.installed[kb] = {"kb": kb, "title": title}
                self.failed.pop(kb, None)
            else:
                self.failed[kb] = {"kb": kb, "title": title, "hresult": str(entry.get("hresult") or ""),
                                   "result_code": _int(entry.get("result_code"))}
        pending = facts.get("pending")
        if isinstance(pending, list):
            self.pending = [str(kb) for kb in pending]
        if isinstance(facts.get("last_success_utc"), str):
            self.last_success = facts["last_success_utc"]

    def report(self) -> dict[str, Any]:
        return {"installed": list(self.installed.values()), "failed": list(self.failed.values()),
                "pending": self.pending, "last_success": self.last_success}


def _step_entry(event: ev.StepStarted | ev.StepFinished) -> dict[str, Any]:
    """A step as started; status 'interrupted' until its step-finished arrives."""
    attempt = event.attempt if isinstance(event, ev.StepStarted) else 1
    reason = event.reason if isinstance(event, ev.StepStarted) else ""
    return {"name": str(event.step), "attempt": _int(attempt) or 1, "reason": reason, "started": iso(event.time),
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
        "collected": iso(when),
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
def write_report(run_dir: RunDir, events: list[ev.Event]) -> tuple[Path, Path]:
    """Write report.json, junit.xml and report.html of a run (each atomically: a reader sees the old file or the new).

    Returns report.json's and junit.xml's paths; report.html is always ``run_dir.report_html``.
    """
    report = build_report(events)
    if report["run"]["id"] != run_dir.run_id:
        raise ValueError(f"events of run {report['run']['id']} given for the run dir of {run_dir.run_id}")
    write_report_files(run_dir.path, report)
    return run_dir.report_json, run_dir.junit_xml


def write_report_files(folder: Path, report: dict[str, Any]) -> None:
    """report.json, junit.xml and report.html of one report (a run's, or shards merged) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "report.json", (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode(
        "utf-8", errors="backslashreplace"))
    tree = junit(report)
    ET.indent(tree)
    atomic_write(folder / "junit.xml", ET.tostring(tree, encoding="utf-8", xml_declaration=True))
    atomic_write(folder / "report.html", render_html(report).encode("utf-8", errors="backslashreplace"))


# --- helpers ----------------------------------------------------------------------------------
def iso(when: float) -> str:
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
