"""What is broken on each lab host: built-in scenarios and the scenario file format.

Each built-in scenario (but `reboot-never-returns`) is built from its fixture,
wuremote/lab/fixtures/<scenario>.json: the host model is set from the fixture's `facts`
(what diagnose returns on such a host), and the few conditions facts cannot show (a
component store that needs a source, a corrupt download cache, a KB that installs only by
hand) from its `cmdlets` answers or, where nothing there says it, from the small tables
below.  So the lab, the Pester mocks and the fixtures cannot drift apart.  Times in a
fixture keep their distance from the fixture's own clock: a failure a day before the
fixture's "now" is a day before the lab's start.

A scenario file (TOML) lists groups of hosts:

    [[hosts]]
    scenario = "clock-skew"      # a built-in scenario name (required)
    count = 2                    # how many hosts like this (default 1)
    name = "web"                 # name prefix: web01, web02 (default WULAB + a number)
    [hosts.state]                # optional overrides of the host model
    clock_skew_seconds = 900
    [hosts.faults]               # optional transport faults (see wuremote/lab/faults.py)
    reset_receive_every = 3

Errors name the file and line and say what to write instead.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..contract import hresult
from .faults import FaultPlan, FaultPlanError
from .host import (
    BITS_DOWNLOADER,
    CATROOT2,
    DATASTORE,
    DOWNLOAD,
    GIB,
    SOFTWARE_DISTRIBUTION,
    Antivirus,
    Folder,
    HostState,
    Service,
    default_services,
    parse_windows_utc,
    windows_utc,
)


class ScenarioError(ValueError):
    """A scenario name or file the lab cannot use (the message names the place and the fix)."""


@dataclass(frozen=True)
class ThirdPartyService:
    """What a fixture's Win32_Service row cannot say about a non-Microsoft service."""

    company: str
    role: str  # third-party | edr | backup | guest-tools | networking | storage
    antivirus: str | None = None  # the product name when the service is an active antivirus
    interferes: bool = False  # an antivirus that blocks the update agent until paused
    control_path: str | None = None  # the vendor's command-line tool (pause/resume)


# Non-Microsoft services the fixtures' Win32_Service rows name, by lower-case service name.
THIRD_PARTY: dict[str, ThirdPartyService] = {
    "contosoav": ThirdPartyService("Contoso Ltd.", "edr", antivirus="Contoso Endpoint Protection", interferes=True,
                                   control_path="C:\\Program Files\\Contoso\\Endpoint\\avctl.exe"),
    "fabrikamsync": ThirdPartyService("Fabrikam, Inc.", "third-party"),
}
# Space cleanup can free, which no fact shows (the default is HostState's).
RECLAIMABLE: dict[str, dict[str, float]] = {
    "low-disk": {"component_store_reclaimable_gb": 10.0, "old_temp_gb": 3.0},
}
UPDATE_SERVICES = ("wuauserv", "bits", "cryptsvc", "msiserver", "trustedinstaller", "appidsvc", "usosvc")
_START_MODES = {"Auto": "Automatic", "Manual": "Manual", "Disabled": "Disabled"}
_ROLES = (("domain_controller", "domain-controller"), ("cluster_node", "cluster-node"), ("hyperv_host", "hyperv-host"),
          ("domain_member", "member-server"))
_W32TM_TIME = "%m/%d/%Y %I:%M:%S %p"  # "11/20/2025 9:58:12 AM", as w32tm /query /status prints it
_KB = re.compile(r"\bKB\d{6,8}\b")


@functools.cache
def _fixture_text(name: str) -> str:
    return files("wuremote.lab").joinpath("fixtures").joinpath(f"{name}.json").read_text(encoding="utf-8")


def fixture(name: str) -> dict[str, Any]:
    """A scenario's fixture (a fresh copy: callers may change it)."""
    data: dict[str, Any] = json.loads(_fixture_text(name))
    return data


def _hresult_of(answer: dict[str, Any]) -> int | None:
    code = answer.get("hresult")
    return hresult.normalize(code) if code else None


def _apply_fixture(name: str, state: HostState) -> None:
    """Sets the host model from the fixture's facts, then what only its cmdlet answers and the tables say."""
    data = fixture(name)
    facts, cmdlets = data["facts"], data["cmdlets"]
    state.clock_skew_seconds = float(facts["clock"]["skew_seconds"] or 0.0)
    fixture_now = parse_windows_utc(cmdlets["local_utc"])
    host_now = state.clock

    def shifted(text: str) -> dt.datetime:
        """A fixture time (host clock) at the same distance before the lab host's now."""
        return host_now - (fixture_now - parse_windows_utc(text))

    os_facts = facts["os"]
    state.os_caption, state.build, state.ubr = os_facts["caption"], os_facts["build"], os_facts["ubr"]
    state.architecture = str(os_facts.get("architecture", state.architecture))
    state.last_boot = shifted(os_facts["last_boot_utc"])
    state.domain_role = next((role for key, role in _ROLES if facts["roles"][key]), "workgroup")
    state.is_admin = facts["elevated"]
    state.policy_readable = facts["policy_readable"]

    _apply_services(state, facts, cmdlets["Win32_Service"])
    clock = facts["clock"]
    state.time_source = clock["source"] or fixture("healthy")["facts"]["clock"]["source"]
    if clock["last_sync"]:
        synced = dt.datetime.strptime(clock["last_sync"], _W32TM_TIME).replace(tzinfo=dt.timezone.utc)
        state.last_time_sync = shifted(windows_utc(synced))

    disk = facts["disk"]
    state.free_disk_gb, state.disk_size_gb = disk["free_bytes"] / GIB, disk["size_bytes"] / GIB
    for key, value in RECLAIMABLE.get(name, {}).items():
        setattr(state, key, value)
    state.folders = _folders(facts["folders"])

    state.pending_reboot = set(facts["pending_reboot"])
    state.servicing_in_progress = facts["servicing"]["in_progress"]
    state.unexpected_shutdowns_30d = facts["unexpected_shutdowns_30d"]
    state.troubleshooter_available = facts["troubleshooter"]["available"]

    source = facts["update_source"]
    state.update_source = source["kind"]
    state.wsus_server = source["wsus_server"] or None
    state.wsus_status_server = source["wsus_status_server"] or None
    state.no_internet_wu = source["no_internet_wu"]
    state.wu_access_disabled = source["wu_access_disabled"]
    state.no_auto_update = source["no_auto_update"]
    state.winhttp_proxy, state.winhttp_proxy_bypass = source["winhttp_proxy"], source["winhttp_proxy_bypass"]
    state.update_history = [dict(row, time_utc=windows_utc(shifted(row["time_utc"]))) for row in facts["update_failures"]]

    defender = facts["antivirus"]["defender"]
    state.antivirus = Antivirus(realtime_enabled=bool(defender["realtime_enabled"]),
                                tamper_protection=bool(defender["tamper_protected"]), defender_present=defender["present"])
    for service_name, extra in THIRD_PARTY.items():
        if extra.antivirus and service_name in state.services:
            state.antivirus = Antivirus(product=extra.antivirus, third_party=True, interferes=extra.interferes,
                                        tamper_protection=state.antivirus.tamper_protection,
                                        defender_present=defender["present"], control_path=extra.control_path)

    _apply_agent_answers(state, cmdlets)


def _apply_services(state: HostState, facts: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The update services from facts; w32time's state from the clock facts; other services from Win32_Service rows."""
    state.services = default_services()
    for name in UPDATE_SERVICES:
        fact = facts["services"][name]
        if fact["state"] == "Absent":
            del state.services[name]
            continue
        service = state.services[name]
        service.status = fact["state"]
        service.set_start_mode(fact["start_type"])
        service.policy_start_type = fact["policy_start_type"]
    w32time = facts["clock"]["w32time_state"]
    if w32time == "Absent":
        del state.services["w32time"]
    else:
        state.services["w32time"].status = w32time
    for row in rows:
        name = row["Name"].lower()
        if name in state.services:
            continue
        extra = THIRD_PARTY.get(name)
        if extra is None:
            raise ScenarioError(f"service {row['Name']} in a fixture has no entry in THIRD_PARTY (wuremote/lab/scenarios.py); "
                                "add its company and role there")
        service = Service(name, row["DisplayName"], "Manual", row["State"], company=extra.company, role=extra.role)
        service.set_start_mode("AutomaticDelayed" if row["StartMode"] == "Auto" and row["DelayedAutoStart"]
                               else _START_MODES[row["StartMode"]])
        state.services[name] = service


def _folders(facts: dict[str, Any]) -> dict[str, Folder]:
    """SoftwareDistribution's bytes outside Download are counted as its DataStore."""
    folders: dict[str, Folder] = {}
    sd = facts["software_distribution"]
    if sd["exists"]:
        folders[SOFTWARE_DISTRIBUTION] = Folder(0)
        folders[DOWNLOAD] = Folder(sd["download_bytes"])
        if sd["datastore_exists"]:
            folders[DATASTORE] = Folder(sd["bytes"] - sd["download_bytes"])
    if facts["catroot2"]["exists"]:
        folders[CATROOT2] = Folder(facts["catroot2"]["bytes"])
    folders[BITS_DOWNLOADER] = Folder(0)
    for backup in facts["wuremote_backups"]:
        folders[f"%SystemRoot%\\{backup}"] = Folder(0)
    return folders


def _apply_agent_answers(state: HostState, cmdlets: dict[str, Any]) -> None:
    """Faults only the update agent's, DISM's and sfc's answers show."""
    agent = cmdlets["update_agent"]
    install, download, search = (_hresult_of(agent[k]) for k in ("install", "download", "search"))
    state.download_cache_corrupt = download == 0x80070002
    if install == 0x80073712:
        restore = cmdlets["native"]["dism.exe /Online /Cleanup-Image /RestoreHealth"]["exit_code"]
        state.component_store = "needs-source" if hresult.normalize(restore) in hresult.codes_in("needs-source") else "repairable"
    state.system_files_corrupt = cmdlets["native"]["sfc.exe /scannow"]["exit_code"] != 0
    if install == 0x8024200B:
        titles = " ".join(agent["search"]["updates"])
        state.manual_kb = _KB.search(titles).group(0)  # type: ignore[union-attr]
    known = hresult.lookup(search) if search else None
    state.wsus_reachable = not (state.update_source == "wsus" and known is not None
                                and known.category in hresult.NOT_A_REPAIR_STEP)


def _reboot_never_returns(state: HostState) -> None:
    _apply_fixture("healthy", state)
    state.reboot_never_returns = True
    state.pending_reboot.add("wu-reboot-required")


FIXTURE_SCENARIOS = (
    "healthy", "clock-skew", "corrupt-download-cache", "stopped-services", "disabled-services",
    "component-store-corrupt", "component-store-needs-source", "av-interference", "third-party-service-conflict",
    "manual-kb", "low-disk", "wsus-unreachable", "servicing-in-progress",
)
BUILTIN: dict[str, tuple[str, Callable[[HostState], None]]] = {
    name: (fixture(name)["description"], functools.partial(_apply_fixture, name)) for name in FIXTURE_SCENARIOS
}
BUILTIN["reboot-never-returns"] = ("the host goes down on restart and never comes back", _reboot_never_returns)
# Scenarios a "mixed" fleet cycles through (every built-in one except the one that never comes back).
MIXED = [name for name in BUILTIN if name != "reboot-never-returns"]

# Host settings a scenario file may set: the single-valued ones.
_SCALAR_TYPES = {"str", "int", "float", "bool", "str | None", "int | None", "float | None"}
_OVERRIDABLE = {f.name: f.type for f in fields(HostState) if f.type in _SCALAR_TYPES and f.name not in ("name", "scenario")}


@dataclass
class HostSpec:
    name: str
    scenario: str
    overrides: dict[str, Any] = field(default_factory=dict)
    faults: FaultPlan = field(default_factory=FaultPlan)

    def build(self) -> HostState:
        state = HostState(name=self.name, scenario=self.scenario)
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

        def line(key: str, start: int = start) -> int:
            return _line_of(text, key, start)

        if not isinstance(group, dict):
            raise ScenarioError(f"{path}:{start}: each [[hosts]] entry must be a table")
        scenario = group.get("scenario")
        if not isinstance(scenario, str):
            raise ScenarioError(f"{path}:{start}: a [[hosts]] table needs scenario = \"NAME\"")
        if scenario not in BUILTIN:
            raise ScenarioError(f"{path}:{line('scenario')}: unknown scenario {scenario!r}; known: {', '.join(BUILTIN)}")
        for key in group:
            if key not in ("scenario", "count", "name", "state", "faults"):
                raise ScenarioError(f"{path}:{line(key)}: unknown key {key!r}; use scenario, count, name, state, faults")
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
        faults_table = group.get("faults", {})
        if not isinstance(faults_table, dict):
            raise ScenarioError(f"{path}:{line('faults')}: faults must be a table ([hosts.faults])")
        try:
            faults = FaultPlan.from_table(faults_table)
        except FaultPlanError as exc:
            raise ScenarioError(f"{path}:{line(exc.key)}: {exc}") from None
        prefix = group.get("name")
        for i in range(count):
            name = f"{prefix}{i + 1:02d}" if prefix else default_name(len(specs))
            if name.lower() in seen:
                raise ScenarioError(f"{path}:{line('name') if prefix else start}: host name {name} is used twice")
            seen.add(name.lower())
            specs.append(HostSpec(name, scenario, dict(overrides), faults))
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
