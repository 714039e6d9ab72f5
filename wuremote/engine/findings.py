"""What a step's answer says, in words: HRESULTs found, causes an operator reads, `check`'s findings.

Pure functions over step results and diagnose's facts; nothing here talks to a host.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from ..contract import StepResult
from .plan import HostPlan, PlannedStep

_HEX = re.compile(r"0x[0-9A-Fa-f]{8}")
_ROUND_TRIP_UTC = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z?$")


WSUS_SOURCE = "updates from WSUS"  # information about the host, not a problem on it
PENDING = "updates pending"  # check --install: information, as the last successful install is
LAST_INSTALL = "last successful install"
INFORMATION = (WSUS_SOURCE, PENDING, LAST_INSTALL)


def problems_of(findings: list[str]) -> list[str]:
    """The findings that are problems (`check` ends such a host needs-operator, exit 1), not information."""
    return [finding for finding in findings if not finding.startswith(INFORMATION)]


def pending_findings(search: StepResult, *, now: dt.datetime) -> list[str]:
    """check --install's lines: the updates a search selects, and how old the newest successful install is
    (the agent's history: install-updates' last_success_utc)."""
    facts = search.facts
    if search.exit_code != 0:
        return [f"update search failed (exit {search.exit_code}): {'; '.join(search.messages)[:200]}"]
    pending = [str(kb) for kb in facts.get("pending") or []]
    lines = [f"{PENDING}: {len(pending)}" + (f" ({', '.join(pending[:20])}{' ...' if len(pending) > 20 else ''})"
                                               if pending else "")]
    last = facts.get("last_success_utc")
    if isinstance(last, str) and last:
        when = _utc(last)
        age = f"{(now - when).days} days ago ({last[:10]})" if when is not None else last
        lines.append(f"{LAST_INSTALL} {age}")
    else:
        lines.append(f"{LAST_INSTALL}: none in the update agent's history")
    return lines


def prevention_findings(facts: dict[str, Any]) -> list[str]:
    """What `wuremote check` reports: the recipe's prevention advice, host by host."""
    findings = []
    disk = facts.get("disk") or {}
    if disk.get("low"):
        findings.append(f"low disk: {(disk.get('free_bytes') or 0) / 2**30:.1f} GB free (keep 15-20 GB)")
    skew = (facts.get("clock") or {}).get("skew_seconds")
    if isinstance(skew, (int, float)) and abs(skew) > 120:
        findings.append(f"clock {skew:+.0f} s off")
    pending = facts.get("pending_reboot") or []
    if pending:
        findings.append(f"reboot pending: {', '.join(pending)}")
    source = facts.get("update_source") or {}
    if source.get("kind") == "wsus":
        findings.append(f"{WSUS_SOURCE} {source.get('wsus_server')}")
    failures = facts.get("update_failures") or []
    if failures:
        newest = failures[0]
        findings.append(f"last update failure {newest.get('hresult')} at {newest.get('time_utc')}")
    shutdowns = facts.get("unexpected_shutdowns_30d") or 0
    if shutdowns:
        findings.append(f"{shutdowns} unexpected shutdown(s) in 30 days")
    return findings


def _utc(text: str) -> dt.datetime | None:
    """A time as .NET's ToString('o') writes it in UTC (7 fraction digits, Z), or None."""
    cleaned = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    try:
        when = dt.datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def hresults_of(result: StepResult) -> list[str]:
    """Failure HRESULTs a step reported (severity bit set); success codes such as 0x00000BC2 are not news."""
    found: list[str] = []
    for source in (json.dumps(result.facts), " ".join(result.messages)):
        for code in _HEX.findall(source):
            code = "0x" + code[2:].upper()
            if int(code, 16) & 0x80000000 and code not in found:
                found.append(code)
    return found


# Facts the report folds whatever their size: install-updates' per-update results and what is still
# pending (a fresh host may list dozens of updates; dropping them would drop them from the report).
WHOLE_FACTS = {"install-updates": frozenset({"results", "pending", "last_success_utc", "reboot_required"})}


def small_facts(facts: dict[str, Any], step: str = "") -> dict[str, Any]:
    """A step's facts for the journal, without bulky payloads (transcripts, echoed results)."""
    whole = WHOLE_FACTS.get(step, frozenset())
    return {k: v for k, v in facts.items() if k not in ("transcript", "result")
            and (k in whole or len(json.dumps(v, default=str)) < 4000)}


def verify_cause(verify: StepResult) -> str:
    codes = hresults_of(verify)
    return f"verify exit {verify.exit_code}" + (f" ({', '.join(codes)})" if codes else "")


def network_cause(verify: StepResult, plan: HostPlan) -> str:
    return plan.blocker or f"cannot reach the update server: {verify_cause(verify)}; fix the network, proxy or WSUS"


def needs_source_cause(rung: PlannedStep, result: StepResult) -> str:
    if rung.script == "dism":
        return "DISM needs a repair source (0x800F081F): set dism_source to install media of the same build"
    return f"{rung.rung}: {'; '.join(result.messages)[:200] or 'run dism first'}"


def bound_skew(result: StepResult) -> None:
    """Diagnose's clock skew as far as the controller can know it, set in place.

    The host measures its clock against ``ControllerUtc``, the controller's time when the call was
    made; but the call may wait before the host runs it (a queue for a request slot on a busy
    controller, a rung ahead of it in the same pipeline), and every second of that wait reads as
    skew: a host in sync looked minutes ahead, and sync-time ran on it (1 of 1,000 hosts with a CPU
    hog beside the fleet).  The host read its clock (``local_utc``) somewhere between that stamp and
    the controller getting the answer (``started + duration``), so the true skew lies between
    ``local_utc - answered`` and the host's figure; only what lies outside that whole interval is
    skew, and the figure kept is the one nearest zero.
    """
    clock = result.facts.get("clock")
    if not isinstance(clock, dict):
        return
    upper, local = clock.get("skew_seconds"), clock.get("local_utc")
    if not isinstance(upper, (int, float)) or not isinstance(local, str) or not result.started:
        return
    match = _ROUND_TRIP_UTC.match(local.strip())  # [DateTime]::UtcNow.ToString('o'): 7 fraction digits, Z
    if match is None:
        return
    fraction = (match.group(2) + "000000")[:7] if match.group(2) else ""  # what fromisoformat reads on 3.10
    host_read = dt.datetime.fromisoformat(match.group(1) + fraction).replace(tzinfo=dt.timezone.utc)
    answered = dt.datetime.fromtimestamp(result.started + result.duration, dt.timezone.utc)
    lower = (host_read - answered).total_seconds()
    if lower > upper:  # the host's clock moved between the two readings: keep its own figure
        return
    clock["skew_seconds"] = round(lower if lower > 0 else upper if upper < 0 else 0.0, 1)
