"""The model of one emulated Windows host: the state the repair steps read and change.

Everything here is plain data plus the few behaviours a host has on its own (a reboot,
the passing of scaled time).  The protocol layers (WinRS, PSRP) and the script models
read and change it; they never keep host state of their own that must survive a reboot.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from dataclasses import dataclass, field

# The services the repair touches, with their Windows default start types.
DEFAULT_SERVICES: dict[str, tuple[str, str]] = {
    "wuauserv": ("Windows Update", "Manual"),
    "bits": ("Background Intelligent Transfer Service", "Manual"),
    "cryptsvc": ("Cryptographic Services", "Automatic"),
    "msiserver": ("Windows Installer", "Manual"),
    "trustedinstaller": ("Windows Modules Installer", "Manual"),
    "appidsvc": ("Application Identity", "Manual"),
    "usosvc": ("Update Orchestrator Service", "Automatic"),
    "w32time": ("Windows Time", "Automatic"),
    "winrm": ("Windows Remote Management (WS-Management)", "Automatic"),
    "waasmedicsvc": ("Windows Update Medic Service", "Manual"),
    "windefend": ("Microsoft Defender Antivirus Service", "Automatic"),
    "lanmanserver": ("Server", "Automatic"),
}
# Services a freshly booted host runs (manual ones start on demand; these are running at idle).
RUNNING_AT_BOOT = {"cryptsvc", "usosvc", "w32time", "winrm", "windefend", "lanmanserver", "bits", "wuauserv"}


@dataclass
class Service:
    name: str
    display_name: str
    start_type: str  # Automatic | Manual | Disabled
    status: str = "Stopped"  # Running | Stopped
    policy_start_type: str | None = None  # set by Group Policy: reported, never fought
    company: str = "Microsoft Corporation"
    kind: str = "win32"  # win32 | driver
    role: str = "system"  # system | third-party | edr | backup | guest-tools | networking | storage
    stop_refuses: bool = False  # hangs in StopPending, as a wedged service does

    def as_fact(self) -> dict[str, object]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "status": self.status,
            "start_type": self.start_type,
            "policy_start_type": self.policy_start_type,
        }


@dataclass
class Antivirus:
    product: str = "Microsoft Defender Antivirus"
    third_party: bool = False
    realtime_enabled: bool = True
    tamper_protection: bool = False
    interferes: bool = False  # blocks the update agent until paused


@dataclass
class HostState:
    name: str
    scenario: str = "healthy"
    os_caption: str = "Microsoft Windows Server 2022 Datacenter"
    build: int = 20348
    ubr: int = 2700
    domain_role: str = "member-server"  # member-server | domain-controller | cluster-node | hyperv-host | workgroup
    is_admin: bool = True
    services: dict[str, Service] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # lower-cased Windows paths
    clock_skew_seconds: float = 0.0
    free_disk_gb: float = 60.0
    component_store: str = "healthy"  # healthy | repairable | needs-source
    system_files_corrupt: bool = False
    download_cache_corrupt: bool = False
    catroot_corrupt: bool = False
    servicing_in_progress: bool = False
    antivirus: Antivirus = field(default_factory=Antivirus)
    pending_reboot: set[str] = field(default_factory=set)
    last_boot: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))
    update_error: int | None = None  # the update agent's last HRESULT
    update_source: str = "windows-update"  # windows-update | wsus | unreachable
    wsus_server: str | None = None
    installed_kbs: set[str] = field(default_factory=set)
    manual_kb: str | None = None  # a KB that installs only by hand
    troubleshooter_available: bool = True
    scheduled_tasks: dict[str, dict[str, object]] = field(default_factory=dict)
    reboot_never_returns: bool = False
    boot_seconds: float = 45.0  # modelled time a restart takes
    reboots: int = 0

    @property
    def clock(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.clock_skew_seconds)


def default_services() -> dict[str, Service]:
    services = {}
    for name, (display, start) in DEFAULT_SERVICES.items():
        services[name] = Service(name, display, start, "Running" if name in RUNNING_AT_BOOT else "Stopped")
    return services


SHUTDOWN_GRACE_SECONDS = 5.0  # modelled time from a restart request until WinRM stops answering


class Host:
    """One emulated host: its state, its scaled clock, and its reboot."""

    def __init__(self, state: HostState, time_scale: float, rng: random.Random) -> None:
        self.state = state
        self.time_scale = time_scale
        self.rng = rng
        self.up = asyncio.Event()
        self.up.set()
        self.generation = 0  # bumps on every boot; shells and pools of an older generation are gone
        self._on_down: list = []
        self._on_up: list = []
        self._reboot_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.state.name

    async def sleep(self, model_seconds: float) -> None:
        """Sleep for modelled seconds, scaled to real time."""
        await asyncio.sleep(max(0.0, model_seconds * self.time_scale))

    def on_down(self, callback) -> None:  # type: ignore[no-untyped-def]
        self._on_down.append(callback)

    def on_up(self, callback) -> None:  # type: ignore[no-untyped-def]
        self._on_up.append(callback)

    @property
    def rebooting(self) -> bool:
        return self._reboot_task is not None and not self._reboot_task.done()

    def request_reboot(self, delay_model_seconds: float = 0.0) -> bool:
        """Start a restart; False if one is already under way (Windows: 1115/1190)."""
        if self.rebooting:
            return False
        self._reboot_task = asyncio.get_running_loop().create_task(self._reboot(delay_model_seconds))
        return True

    async def _reboot(self, delay_model_seconds: float) -> None:
        # Even `shutdown /r /t 0` leaves WinRM up for the seconds Windows takes to stop services,
        # long enough for the client to read the command's end and close its shell.
        await self.sleep(max(delay_model_seconds, SHUTDOWN_GRACE_SECONDS))
        self.up.clear()
        for callback in self._on_down:
            await callback()
        if self.state.reboot_never_returns:
            return
        await self.sleep(self.state.boot_seconds)
        self.boot()
        for callback in self._on_up:
            await callback()
        self.up.set()

    def boot(self) -> None:
        """What a fresh boot does to the state."""
        state = self.state
        self.generation += 1
        state.reboots += 1
        state.last_boot = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=state.clock_skew_seconds)
        state.pending_reboot.clear()
        state.servicing_in_progress = False
        for service in state.services.values():
            effective = service.policy_start_type or service.start_type
            service.status = "Running" if effective == "Automatic" or (
                service.name in RUNNING_AT_BOOT and effective != "Disabled"
            ) else "Stopped"
        for task in state.scheduled_tasks.values():
            if task.get("state") == "Running":
                task["state"] = "Interrupted"

    async def shutdown(self) -> None:
        if self._reboot_task is not None:
            self._reboot_task.cancel()
