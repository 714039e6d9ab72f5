"""What is broken on each lab host: built-in scenarios and the scenario file format.

A scenario file (TOML) lists groups of hosts:

    [[hosts]]
    scenario = "clock-skew"      # a built-in scenario name (required)
    count = 2                    # how many hosts like this (default 1)
    name = "web"                 # name prefix: web01, web02 (default WULAB + a number)
    [hosts.state]                # optional overrides of the host model
    clock_skew_seconds = 900

Errors name the file and line and say what to write instead.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .host import Antivirus, HostState, Service, default_services


class ScenarioError(ValueError):
    """A scenario name or file the lab cannot use (the message names the place and the fix)."""


def _healthy(state: HostState) -> None:
    pass


def _clock_skew(state: HostState) -> None:
    state.clock_skew_seconds = 7 * 60 + 30
    state.update_error = 0x80072F8F  # certificate/time validation failure


def _corrupt_download_cache(state: HostState) -> None:
    state.download_cache_corrupt = True
    state.update_error = 0x80070002


def _stopped_services(state: HostState) -> None:
    for name in ("wuauserv", "bits", "cryptsvc"):
        state.services[name].status = "Stopped"
    state.update_error = 0x80070422


def _disabled_services(state: HostState) -> None:
    state.services["bits"].start_type = "Disabled"
    state.services["bits"].status = "Stopped"
    state.services["wuauserv"].start_type = "Disabled"
    state.services["wuauserv"].policy_start_type = "Disabled"
    state.services["wuauserv"].status = "Stopped"
    state.update_error = 0x80070422


def _component_store_corrupt(state: HostState) -> None:
    state.component_store = "repairable"
    state.system_files_corrupt = True
    state.update_error = 0x80073712


def _component_store_needs_source(state: HostState) -> None:
    state.component_store = "needs-source"
    state.update_error = 0x800F081F


def _av_interference(state: HostState) -> None:
    state.antivirus = Antivirus(product="Contoso Endpoint Shield", third_party=True, interferes=True)
    state.update_error = 0x80070005


def _third_party_service_conflict(state: HostState) -> None:
    state.services["contosofilter"] = Service(
        "contosofilter", "Contoso File Filter Agent", "Automatic", "Running", company="Contoso Ltd.", role="third-party"
    )
    state.update_error = 0x80070020


def _manual_kb(state: HostState) -> None:
    state.manual_kb = "KB5034439"
    state.update_error = 0x80070643


def _low_disk(state: HostState) -> None:
    state.free_disk_gb = 3.5
    state.update_error = 0x80070070


def _wsus_unreachable(state: HostState) -> None:
    state.update_source = "wsus"
    state.wsus_server = "http://wsus.corp.example:8530"
    state.update_error = 0x8024402C


def _servicing_in_progress(state: HostState) -> None:
    state.servicing_in_progress = True
    state.pending_reboot.add("cbs-reboot-pending")
    state.update_error = 0x800F0922


def _reboot_never_returns(state: HostState) -> None:
    state.reboot_never_returns = True
    state.pending_reboot.add("wu-reboot-required")


BUILTIN: dict[str, tuple[str, Callable[[HostState], None]]] = {
    "healthy": ("nothing is wrong", _healthy),
    "clock-skew": ("the clock is 7.5 minutes off; TLS to the update service fails", _clock_skew),
    "corrupt-download-cache": ("SoftwareDistribution\\Download is corrupt: 0x80070002", _corrupt_download_cache),
    "stopped-services": ("wuauserv, bits and cryptsvc are stopped", _stopped_services),
    "disabled-services": ("bits disabled by hand, wuauserv disabled by Group Policy", _disabled_services),
    "component-store-corrupt": ("the component store is corrupt, repairable online: 0x80073712", _component_store_corrupt),
    "component-store-needs-source": ("the component store needs a repair source: 0x800F081F", _component_store_needs_source),
    "av-interference": ("a third-party antivirus blocks the update agent: 0x80070005", _av_interference),
    "third-party-service-conflict": ("a third-party filter service holds files the update needs", _third_party_service_conflict),
    "manual-kb": ("one KB installs only by hand from its .msu", _manual_kb),
    "low-disk": ("3.5 GB free on the system drive", _low_disk),
    "wsus-unreachable": ("the WSUS server cannot be reached: a network fix, not a repair", _wsus_unreachable),
    "servicing-in-progress": ("TrustedInstaller is servicing; a reboot is pending", _servicing_in_progress),
    "reboot-never-returns": ("the host goes down on restart and never comes back", _reboot_never_returns),
}
# Scenarios a "mixed" fleet cycles through (every built-in one except the one that never comes back).
MIXED = [name for name in BUILTIN if name != "reboot-never-returns"]

_OVERRIDABLE = {
    f.name: f.type
    for f in fields(HostState)
    if f.name not in ("name", "scenario", "services", "files", "antivirus", "pending_reboot", "last_boot",
                      "installed_kbs", "scheduled_tasks")
}


@dataclass
class HostSpec:
    name: str
    scenario: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def build(self) -> HostState:
        state = HostState(name=self.name, scenario=self.scenario, services=default_services())
        BUILTIN[self.scenario][1](state)
        for key, value in self.overrides.items():
            setattr(state, key, value)
        return state


def default_name(index: int) -> str:
    return f"WULAB{index + 1:03d}"


def from_name(name: str, count: int) -> list[HostSpec]:
    if name == "mixed":
        return [HostSpec(default_name(i), MIXED[i % len(MIXED)]) for i in range(count)]
    if name not in BUILTIN:
        raise ScenarioError(f"unknown scenario {name!r}; use 'mixed', a TOML file, or one of: {', '.join(BUILTIN)}")
    return [HostSpec(default_name(i), name) for i in range(count)]


def _line_of(text: str, key: str, start: int = 1) -> int:
    """The line (from `start`) where `key` is assigned or opens a table; `start` if there is none.

    tomllib gives no positions, so a group's keys are looked for from its own [[hosts]] line on.
    """
    pattern = re.compile(rf"""^\s*(?:\[+\s*)?(?:[\w.-]+\.)?(?:{re.escape(key)}|"{re.escape(key)}")\s*(?:=|\]|\.)""")
    for number, line in enumerate(text.splitlines(), start=1):
        if number >= start and pattern.match(line):
            return number
    return start


def _group_lines(text: str) -> list[int]:
    """The line of each [[hosts]] header, in order."""
    return [n for n, line in enumerate(text.splitlines(), start=1) if re.match(r"^\s*\[\[\s*hosts\s*\]\]", line)]


def from_file(path: Path) -> list[HostSpec]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = match.group(1) if match else "1"
        raise ScenarioError(f"{path}:{line}: not valid TOML ({exc}); see the scenario file format in the README") from None
    unknown_top = set(data) - {"hosts"}
    if unknown_top:
        key = sorted(unknown_top)[0]
        raise ScenarioError(f"{path}:{_line_of(text, key)}: unknown key {key!r}; a scenario file holds [[hosts]] tables only")
    groups = data.get("hosts")
    if not isinstance(groups, list) or not groups:
        raise ScenarioError(f"{path}:1: no [[hosts]] tables; add at least one with a 'scenario' key")
    specs: list[HostSpec] = []
    seen: set[str] = set()
    starts = _group_lines(text)
    for index, group in enumerate(groups):
        start = starts[index] if index < len(starts) else 1

        def line(key: str) -> int:
            return _line_of(text, key, start)

        if not isinstance(group, dict):
            raise ScenarioError(f"{path}:{start}: each [[hosts]] entry must be a table")
        scenario = group.get("scenario")
        if not isinstance(scenario, str):
            raise ScenarioError(f"{path}:{start}: a [[hosts]] table needs scenario = \"NAME\"")
        if scenario not in BUILTIN:
            raise ScenarioError(f"{path}:{line('scenario')}: unknown scenario {scenario!r}; known: {', '.join(BUILTIN)}")
        for key in group:
            if key not in ("scenario", "count", "name", "state"):
                raise ScenarioError(f"{path}:{line(key)}: unknown key {key!r}; use scenario, count, name, state")
        count = group.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 5000:
            raise ScenarioError(f"{path}:{line('count')}: count must be a whole number from 1 to 5000")
        overrides = group.get("state", {})
        if not isinstance(overrides, dict):
            raise ScenarioError(f"{path}:{line('state')}: state must be a table ([hosts.state])")
        for key, value in overrides.items():
            if key not in _OVERRIDABLE:
                raise ScenarioError(
                    f"{path}:{line(key)}: {key!r} is not a host setting; known: {', '.join(sorted(_OVERRIDABLE))}"
                )
            if isinstance(value, (dict, list)):
                raise ScenarioError(f"{path}:{line(key)}: {key} takes a single value")
        prefix = group.get("name")
        for i in range(count):
            name = f"{prefix}{i + 1:02d}" if prefix else default_name(len(specs))
            if name.lower() in seen:
                raise ScenarioError(f"{path}:{line('name') if prefix else start}: host name {name} is used twice")
            seen.add(name.lower())
            specs.append(HostSpec(name, scenario, dict(overrides)))
    return specs


def resolve(scenario: str | Path, count: int | None) -> list[HostSpec]:
    """A built-in name (for `count` hosts) or a scenario file (whose own counts win unless `count` is given)."""
    candidate = Path(scenario)
    if isinstance(scenario, Path) or str(scenario).endswith(".toml") or candidate.exists():
        specs = from_file(candidate)
        if count is not None and count != len(specs):
            raise ScenarioError(f"{candidate}: describes {len(specs)} hosts but --hosts {count} was given; drop --hosts or change the file")
        return specs
    return from_name(str(scenario), count if count is not None else 1)
