"""The lab: N emulated Windows hosts on loopback, one asyncio loop in a background thread.

    with Lab(hosts=3, scenario="mixed") as lab:
        for endpoint in lab.endpoints:
            ...  # endpoint.url, endpoint.username, endpoint.password, endpoint.ca_file

Tests and the demo use it in-process; `python -m wuremote.lab` runs it in the foreground.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from .faults import Faults
from .host import Host
from .http import Credentials, InFlight, Listener
from .ntlm import write_store
from .scenarios import HostSpec, _fixture_text, resolve
from .service import WSManService
from .tls import LabCA

T = TypeVar("T")
LAB_USERNAME = "labadmin"
# What powershell.exe writes first on stdout when it serializes the "Preparing modules for first use."
# progress record, with no newline before the script's own output (the blob Ansible users meet, and
# ansible-core's powershell shell plugin strips).
STDOUT_CLIXML = (b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
                 b'<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
                 b'<T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for '
                 b'first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR>'
                 b'</MS></Obj></Objs>')


class LabError(RuntimeError):
    """The lab cannot start as asked (port in use, bad scenario...); the message says what to change."""


@dataclass(frozen=True)
class Endpoint:
    """How a client reaches one lab host (lab data: the password is the lab's, not a user's secret)."""

    name: str
    address: str
    port: int
    scheme: str
    username: str
    password: str
    ca_file: str | None
    scenario: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}:{self.port}/wsman"

    def __repr__(self) -> str:
        return f"Endpoint(name={self.name!r}, url={self.url!r}, scenario={self.scenario!r})"


class LabHost:
    def __init__(self, spec: HostSpec, lab: Lab, port: int, rng: random.Random) -> None:
        self.spec = spec
        self.model = Host(spec.build(), lab.time_scale, rng)
        self.service = WSManService(self.model)
        self.service.psrp.max_commands_per_shell = spec.faults.max_commands_per_shell
        self.service.winrs.stdout_prefix = (b"\xef\xbb\xbf" if spec.faults.stdout_bom else b"") + (
            STDOUT_CLIXML if spec.faults.stdout_clixml else b"")
        # The fault plan's own generator: a plan never shifts the host's random stream for a seed.
        self.faults = Faults(spec.faults, self.model, self.sessions, self.drop_sessions,
                             random.Random(f"{lab.seed}:{spec.name}:faults"))
        self.listener = Listener(
            port,
            self.service,
            lab.credentials,
            lab.tls_context,
            allow_unencrypted=lab.allow_unencrypted,
            ntlm_store=lab.ntlm_store,
            faults=self.faults if spec.faults.active else None,
            max_envelope_bytes=spec.faults.max_envelope_kb * 1024,
            idle_connection_seconds=spec.faults.idle_connection_seconds,
            clock=lambda: self.model.state.clock,
            in_flight=lab.in_flight,
        )
        self.model.on_down(self.listener.stop)
        self.model.on_up(self.listener.start)

    def sessions(self) -> dict[str, tuple[str, str]]:
        """Open shells and pools: id -> (kind, owner)."""
        open_now = {shell.id: ("winrs", shell.owner) for shell in self.service.winrs.shells.values()}
        open_now.update({pool.id: ("psrp", pool.owner) for pool in self.service.psrp.pools.values()})
        return open_now

    async def drop_sessions(self) -> None:
        await self.service.winrs.drop_all()
        await self.service.psrp.drop_all()


class Lab:
    def __init__(
        self,
        hosts: int | None = None,
        scenario: str | Path = "healthy",
        *,
        time_scale: float = 0.01,
        http: bool = False,
        allow_unencrypted: bool | None = None,
        seed: int = 0,
        first_port: int | None = None,
        workdir: Path | None = None,
        password: str | None = None,
    ) -> None:
        if hosts is not None and hosts < 1:
            raise LabError("--hosts must be at least 1")
        if time_scale <= 0:
            raise LabError("--time-scale must be greater than 0 (1 = real time, 0.01 = a hundred times faster)")
        self.specs = resolve(scenario, hosts)
        if first_port is not None and not 1 <= first_port <= 65535 - len(self.specs):
            raise LabError(f"--port must leave room for {len(self.specs)} ports below 65536, got {first_port}")
        self.time_scale = time_scale
        self.http = http
        # A plain-HTTP lab allows Basic over HTTP unless told otherwise (AllowUnencrypted=false refuses it).
        self.allow_unencrypted = http if allow_unencrypted is None else allow_unencrypted
        self.seed = seed
        self.rng = random.Random(seed)
        drawn = "Lab-" + "".join(self.rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(16))
        # A caller's password (the secret-canary tests) replaces the drawn one after the draw, so the
        # hosts' own random streams stay the same for a given seed.
        self.credentials = Credentials(LAB_USERNAME, drawn if password is None else password)
        self._ports = [first_port + i for i in range(len(self.specs))] if first_port else [0] * len(self.specs)
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="wuremote-lab-")
        self.workdir = Path(workdir) if workdir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.ca: LabCA | None = None if http else LabCA()
        self.tls_context = self.ca.server_context() if self.ca else None
        self.ca_file = str(self.ca.write_ca(self.workdir / "lab-ca.pem")) if self.ca else None
        self.ntlm_store = write_store(self.workdir / "lab-ntlm-users.txt", self.credentials.username,
                                      self.credentials.password)
        self.hosts: dict[str, LabHost] = {}
        self.in_flight = InFlight()  # requests being answered at once across the hosts, and the peak
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="wuremote-lab", daemon=True)

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> Lab:
        self._thread.start()
        try:
            self.call(self._start_hosts)
        except OSError as exc:
            self.stop()
            raise LabError(
                f"cannot listen on 127.0.0.1: {exc.strerror or exc}; another program holds the port: "
                "pick another --port or leave it out to let the system choose"
            ) from None
        return self

    async def _start_hosts(self) -> None:
        for spec, port in zip(self.specs, self._ports):
            lab_host = LabHost(spec, self, port, random.Random(self.rng.random()))
            await lab_host.listener.start()
            self.hosts[spec.name] = lab_host

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self.call(self._stop_hosts)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(5)
        if self._tmp is not None:
            self._tmp.cleanup()

    async def _stop_hosts(self) -> None:
        for lab_host in self.hosts.values():
            await lab_host.model.shutdown()
            await lab_host.listener.stop()
            await lab_host.service.winrs.drop_all()
            await lab_host.service.psrp.drop_all()

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- use ---------------------------------------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 60) -> Any:
        """Run `fn` (a coroutine function or a plain one) on the lab's loop and return its result."""

        async def wrapper() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                name=name,
                address="127.0.0.1",
                port=lab_host.listener.port,
                scheme="http" if self.http else "https",
                username=self.credentials.username,
                password=self.credentials.password,
                ca_file=self.ca_file,
                scenario=lab_host.spec.scenario,
            )
            for name, lab_host in self.hosts.items()
        ]

    def endpoint(self, name: str) -> Endpoint:
        return next(e for e in self.endpoints if e.name == name)

    def host(self, name: str) -> Host:
        return self.hosts[name].model

    def requests_served(self, name: str) -> int:
        return self.hosts[name].listener.requests_served

    def bytes_received(self, name: str) -> int:
        """Request body bytes this host's listener received, as sent (sealed or not)."""
        return self.hosts[name].listener.bytes_received

    def listener(self, name: str) -> Listener:
        """A host's listener: its wire counters (sealed_requests, plain_requests, auth_failures)."""
        return self.hosts[name].listener

    def faults(self, name: str) -> Faults:
        """A host's fault plan and what it injected (read on the lab loop: ``lab.call``)."""
        return self.hosts[name].faults

    def open_sessions(self, name: str) -> int:
        """Runspace pools and WinRS shells a host holds open (call on the lab loop: ``lab.call``)."""
        service = self.hosts[name].service
        return len(service.psrp.pools) + len(service.winrs.shells)

    # --- files for users -------------------------------------------------------------------
    def write_state(self, path: Path) -> Path:
        """The state file (JSON) and a matching wuremote inventory beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        inventory = path.with_name(path.stem + "-inventory.toml")
        state = {
            "version": 1,
            "seed": self.seed,
            "time_scale": self.time_scale,
            "inventory": str(inventory),
            "hosts": [{k: v for k, v in asdict(e).items()} for e in self.endpoints],
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        inventory.write_text(self.inventory_toml(), encoding="utf-8")
        return path

    def inventory_toml(self) -> str:
        scheme = "http" if self.http else "https"
        lines = [
            "# wuremote inventory of a running lab, written by `wuremote lab`.",
            "# The password below is the lab's own (lab data, not a secret of yours).",
            "[vars]",
            'transport = "psrp"',
            f'scheme = "{scheme}"',
            f'auth = "{"basic" if self.ca_file or self.allow_unencrypted else "ntlm"}"',
            f'username = "{self.credentials.username}"',
            f'password = "{self.credentials.password}"',
        ]
        if self.ca_file:
            lines.append(f"ca_file = {json.dumps(self.ca_file)}")
        if self.http and self.allow_unencrypted:
            lines.append("allow_unencrypted_basic = true")
        lines.append("")
        for endpoint in self.endpoints:
            lines += [f'[hosts."{endpoint.name}"]', 'address = "127.0.0.1"', f"port = {endpoint.port}",
                      f"# scenario: {endpoint.scenario}", *_scenario_vars(endpoint.scenario), ""]
        return "\n".join(lines)


_LAB_AV_TOOL = "C:\\\\Program Files\\\\Contoso\\\\Endpoint\\\\avctl.exe"  # the lab's antivirus vendor tool (TOML-escaped)
# What a scenario's host needs from the inventory for `wuremote repair -i` to end it as `wuremote demo`
# does (the demo opts every host in to everything; this inventory opts in only the hosts that need it).
_SCENARIO_VARS: dict[str, tuple[str, ...]] = {
    "av-interference": (
        "# the antivirus holds the update files: only the opt-in av-pause step repairs this host",
        'opt_in = ["av-pause"]',
        f'vendor_av = {{ pause_command = "{_LAB_AV_TOOL}", pause_arguments = ["pause"], '
        f'resume_command = "{_LAB_AV_TOOL}", resume_arguments = ["resume"] }}'),
    "third-party-service-conflict": (
        "# a third-party service breaks the update: only the opt-in clean-boot step repairs this host",
        'opt_in = ["clean-boot"]'),
}


def _scenario_vars(scenario: str) -> list[str]:
    """The inventory lines a scenario's host needs (opt-ins, the KB to install), each with its reason."""
    lines = list(_SCENARIO_VARS.get(scenario, ()))
    try:
        expect = json.loads(_fixture_text(scenario)).get("expect") or {}
    except (OSError, ValueError):
        expect = {}
    kb = expect.get("install_kb")
    if kb:
        lines += [f"# only installing {kb} by hand repairs this host: install-kb needs the KB named",
                  f'kb = "{kb}"', f'kb_url = "https://download.lab.invalid/{kb}.msu"']
    return lines
