"""report.html: the fleet report people look at, rendered from report.json's content alone.

One self-contained file (inline CSS and script, no network) that stays usable at 1,000 hosts:
one compact row per host (outcome, cause, a timeline bar) whose steps, HRESULTs, facts and
transcript links open in a ``<details>`` below it, so the browser lays out little until asked.
Everything a host reported reaches the page through Jinja2's autoescaping; the script reads
only ``data-*`` attributes, never host text pasted into code.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from ..contract import ExitCode
from .terminal import without_bidi

# Outcomes in the order a reader wants them: what needs attention first.
OUTCOME_ORDER = ("failed", "unreachable", "needs-operator", "interrupted", "skipped", "patched", "repaired", "healthy",
                 "planned", "checked")
ALWAYS_COUNTED = ("healthy", "repaired", "failed")
REBOOT_STATE = {True: "back", False: "did not come back", None: "never recorded its end"}
# The schema's transcript pattern: anything else (a hand-edited report) is shown, never linked.
_TRANSCRIPT_RE = re.compile(r"^transcripts/[^/]+/[^/]+\.log$")
_MIN_SEGMENT = 0.25  # percent of the bar: a 50 ms step in a two-hour run stays visible

_env = Environment(loader=PackageLoader("wuremote.output", "templates"), autoescape=select_autoescape(default=True),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                   # Host-sent text never reorders the page: bidirectional controls shown as \uNNNN.
                   finalize=lambda value: value if isinstance(value, Markup) or not isinstance(value, str)
                   else without_bidi(value))
# Our own CSS and script go in verbatim (escaping would break them); the page's Content-Security-Policy
# allows that one script by its hash and loads nothing, so even a script smuggled past escaping would not run.
_STYLE = Markup(_env.loader.get_source(_env, "report.css")[0])  # type: ignore[union-attr]
_SCRIPT = Markup(_env.loader.get_source(_env, "report.js")[0])  # type: ignore[union-attr]
_SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")


@dataclass(frozen=True)
class Segment:
    """One step or reboot on a host's timeline bar, in percent of the run's span."""

    kind: str  # ok | failed | na | interrupted | reboot
    left: float
    width: float
    title: str


@dataclass
class HostView:
    """What the page shows of one host; ``report`` is the host's report.json entry."""

    name: str
    anchor: str
    rank: int
    report: dict[str, Any]
    start_offset: float | None
    duration: float | None
    hresults: list[dict[str, Any]]
    segments: list[Segment] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    search: str = ""


@dataclass(frozen=True)
class CauseGroup:
    outcome: str
    cause: str
    hosts: int


def render_html(report: dict[str, Any]) -> str:
    """The page for one report.json (schema: wuremote/output/report_schema.json)."""
    run = report["run"]
    t0 = _seconds(run["started"])
    end = max([_seconds(run["finished"]) if run["finished"] else t0]
              + [t for host in report["hosts"].values() for t in _ends(host)])
    span = max(end - t0, 1e-3)
    hosts = [_host_view(i, name, host, t0, span) for i, (name, host) in enumerate(report["hosts"].items())]
    # healthy, repaired and failed always show, at 0 too: "0 failed" is news a reader looks for.
    counts = sorted({**dict.fromkeys(ALWAYS_COUNTED, 0), **run["counts"]}.items(),
                    key=lambda item: _outcome_rank(item[0]))
    return _env.get_template("report.html").render(
        run=run, hosts=hosts, counts=counts, total=len(hosts), causes=_cause_groups(report["hosts"]),
        hresults=_fleet_hresults(report["hosts"]), span=span, fmt_duration=_fmt_duration,
        transcript_href=_transcript_href, reboot_state=REBOOT_STATE, style=_STYLE, script=_SCRIPT,
        script_hash=_SCRIPT_HASH)


def _host_view(index: int, name: str, host: dict[str, Any], t0: float, span: float) -> HostView:
    starts = [_seconds(s["started"]) for s in host["steps"]] + [_seconds(r["started"]) for r in host["reboot_log"]
                                                                 if r["started"]]
    ends = _ends(host)
    first = min(starts) if starts else None
    view = HostView(name=name, anchor=f"host-{index}", rank=_outcome_rank(host["outcome"]), report=host,
                    start_offset=first - t0 if first is not None else None,
                    duration=max(ends) - first if first is not None and ends else None,
                    hresults=_distinct_hresults(host["steps"]))
    for step in host["steps"]:
        started = _seconds(step["started"])
        label = step["name"] if step["attempt"] == 1 else f"{step['name']}#{step['attempt']}"
        kind = _step_kind(step)
        duration = step["duration"] if step["duration"] is not None else t0 + span - started
        what = f"exit {step['exit_code']}" if step["exit_code"] is not None else (step["error_kind"] or step["status"])
        view.segments.append(_segment(kind, started - t0, duration, span,
                                      f"{label}: {what}, {_fmt_duration(step['duration'])}"))
        view.steps.append({**step, "label": label, "kind": kind, "offset": started - t0})
    for reboot in host["reboot_log"]:
        if reboot["started"] is None:  # its start was never recorded: nothing to place
            continue
        started = _seconds(reboot["started"])
        duration = reboot["duration"] if reboot["duration"] is not None else t0 + span - started
        kind = {True: "reboot", False: "failed", None: "interrupted"}[reboot["ok"]]
        view.segments.append(_segment(kind, started - t0, duration, span, f"reboot ({reboot['reason']}): "
                                      f"{REBOOT_STATE[reboot['ok']]}, {_fmt_duration(reboot['duration'])}"))
    view.search = " ".join([name, host["outcome"], host["cause"], host["address"] or "", *host["groups"],
                            *(h["code"] for h in view.hresults), *(h["name"] for h in view.hresults)]).lower()
    return view


def _segment(kind: str, offset: float, duration: float, span: float, title: str) -> Segment:
    left = min(max(offset / span * 100, 0.0), 100.0 - _MIN_SEGMENT)
    width = min(max(duration / span * 100, _MIN_SEGMENT), 100.0 - left)
    return Segment(kind, round(left, 3), round(width, 3), title)


def _step_kind(step: dict[str, Any]) -> str:
    if step["status"] == "interrupted" and step["duration"] is None:
        return "interrupted"
    if ExitCode.is_ok(step["exit_code"]):
        return "ok"
    if step["exit_code"] == 2:
        return "na"
    return "failed"


def _cause_groups(hosts: dict[str, dict[str, Any]]) -> list[CauseGroup]:
    """Hosts grouped by identical (outcome, cause), the biggest group first."""
    groups: dict[tuple[str, str], int] = {}
    for host in hosts.values():
        key = (host["outcome"], host["cause"])
        groups[key] = groups.get(key, 0) + 1
    return [CauseGroup(outcome, cause, n) for (outcome, cause), n in
            sorted(groups.items(), key=lambda item: (_outcome_rank(item[0][0]), -item[1], item[0][1]))]


def _fleet_hresults(hosts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every HRESULT seen in the run, with how many hosts reported it, the most widespread first."""
    seen: dict[str, dict[str, Any]] = {}
    for host in hosts.values():
        for record in _distinct_hresults(host["steps"]):
            entry = seen.setdefault(record["code"], {**record, "hosts": 0})
            entry["hosts"] += 1
    return sorted(seen.values(), key=lambda h: (-h["hosts"], h["code"]))


def _distinct_hresults(steps: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    distinct: dict[str, dict[str, Any]] = {}
    for step in steps:
        for record in step["hresults"]:
            distinct.setdefault(record["code"], record)
    return list(distinct.values())


def _transcript_href(path: str | None) -> str | None:
    """A relative link that opens from the run dir: the file name's own '%XX' must survive the browser's decoding."""
    if not path or not _TRANSCRIPT_RE.match(path) or ".." in path.split("/"):
        return None
    return quote(path, safe="/")


def _ends(host: dict[str, Any]) -> list[float]:
    ends = [_seconds(s["started"]) + s["duration"] for s in host["steps"] if s["duration"] is not None]
    ends += [_seconds(r["started"]) + r["duration"] for r in host["reboot_log"]
             if r["started"] and r["duration"] is not None]
    return ends


def _outcome_rank(outcome: str) -> int:
    return OUTCOME_ORDER.index(outcome) if outcome in OUTCOME_ORDER else len(OUTCOME_ORDER)


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"
