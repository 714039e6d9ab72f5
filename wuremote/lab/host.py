"""The model of one emulated Windows host: the state the repair steps read and change.

Everything here is plain data plus the few behaviours a host has on its own (a reboot,
the passing of scaled time).  The protocol layers (WinRS, PSRP) and the script models
read and change it; they never keep host state of their own that must survive a reboot.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .catalog import CATALOG, CatalogUpdate

# The services the repair touches, with their Windows default start types.
DEFAULT_SERVICES: dict[str, tuple[str, str]] = {
    "wuauserv": ("Windows Update", "Manual"),
    "bits": ("Background Intelligent Transfer Service", "Manual"),
    "cryptsvc": ("Cryptographic Services", "Automatic"),
    "msiserver": ("Windows Installer", "Manual"),
    "trustedinstaller": ("Windows Modules Installer", "Manual"),
    "appidsvc": ("Application Identity", "Manual"),
    "usosvc": ("Update Orchestrator Service", "AutomaticDelayed"),
    "w32time": ("Windows Time", "Automatic"),
    "winrm": ("Windows Remote Management (WS-Management)", "Automatic"),
    "waasmedicsvc": ("Windows Update Medic Service", "Manual"),
    "windefend": ("Microsoft Defender Antivirus Service", "Automatic"),
    "lanmanserver": ("Server", "Automatic"),
}
# Services a freshly booted host runs (manual ones start on demand; these are running at idle).
RUNNING_AT_BOOT = {"cryptsvc", "usosvc", "w32time", "winrm", "windefend", "lanmanserver", "bits", "wuauserv"}
GIB = 1 << 30


@dataclass
class Service:
    name: str
    display_name: str
    start_type: str  # Automatic | Manual | Disabled (as Get-Service shows it; see delayed_start)
    status: str = "Stopped"  # Running | Stopped
    policy_start_type: str | None = None  # set by Group Policy: reported, never fought
    company: str = "Microsoft Corporation"
    kind: str = "win32"  # win32 | driver
    role: str = "system"  # system | third-party | edr | backup | guest-tools | networking | storage
    stop_refuses: bool = False  # hangs in StopPending, as a wedged service does
    delayed_start: bool = False  # Automatic with DelayedAutoStart (Win32_Service: Auto + DelayedAutoStart)
    # Launched as a protected process (antimalware light: the service key's LaunchProtected); the
    # SCM lets only the service itself change its configuration (Microsoft, "Protecting
    # anti-malware services").  Security software of any vendor, named in no list.
    launch_protected: bool = False

    @property
    def start_mode(self) -> str:
        """The start type as Win32_Service and the scripts name it (AutomaticDelayed included)."""
        return "AutomaticDelayed" if self.start_type == "Automatic" and self.delayed_start else self.start_type

    def set_start_mode(self, mode: str) -> None:
        """What `sc.exe config NAME start= ...` does."""
        self.delayed_start = mode == "AutomaticDelayed"
        self.start_type = "Automatic" if self.delayed_start else mode

    @property
    def effective_start_type(self) -> str:
        """Group Policy wins over the local setting at every boot."""
        return self.policy_start_type or self.start_type


@dataclass
class Antivirus:
    """The active antivirus product; Defender goes passive when a third-party product is active."""

    product: str = "Microsoft Defender Antivirus"
    third_party: bool = False
    realtime_enabled: bool = True  # the active product's real-time scanning
    tamper_protection: bool = False  # Defender ignores Set-MpPreference silently
    interferes: bool = False  # blocks the update agent while its real-time scanning is on
    defender_present: bool = True
    control_path: str | None = None  # a third-party product's command-line tool (its pause/resume commands)
    # Some third-party products stop Defender's service outright; then Get-MpComputerStatus fails
    # with HRESULT 0x800106BA (scipag/HardeningKitty#52 with CrowdStrike; microsoft/CSS-Exchange#1514,
    # #1703, #2297: "If 3rd party AV disabled Microsoft Defender you got an error").
    defender_service_running: bool = True

    @property
    def defender_realtime(self) -> bool:
        return self.defender_present and self.defender_service_running and not self.third_party and self.realtime_enabled

    @property
    def defender_mode(self) -> str | None:
        if not self.defender_present:
            return None
        return "Passive Mode" if self.third_party else "Normal"


@dataclass
class Folder:
    """A folder the steps size, move aside or delete; `created` decides what cleanup prunes."""

    bytes: int
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400))


# Folder keys in HostState.folders (Windows paths with the environment variable unexpanded).
ENVIRONMENT = {"%SystemRoot%": "C:\\Windows", "%ProgramData%": "C:\\ProgramData", "%SystemDrive%": "C:"}
SOFTWARE_DISTRIBUTION = "%SystemRoot%\\SoftwareDistribution"
DATASTORE = SOFTWARE_DISTRIBUTION + "\\DataStore"
DOWNLOAD = SOFTWARE_DISTRIBUTION + "\\Download"
CATROOT2 = "%SystemRoot%\\System32\\catroot2"
BITS_DOWNLOADER = "%ProgramData%\\Microsoft\\Network\\Downloader"


def expand(path: str) -> str:
    """A folder key as the host's own paths read ($env:SystemRoot and friends expanded)."""
    for variable, value in ENVIRONMENT.items():
        path = path.replace(variable, value)
    return path


def windows_utc(moment: dt.datetime) -> str:
    """A UTC time as .NET's DateTime.ToString('o') writes it: 7 fraction digits and Z."""
    utc = moment.astimezone(dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"


STATE_ROOT = "C:\\ProgramData\\wuremote"  # Get-WuStateRoot
TRUSTED_OWNERS = ("S-1-5-18", "S-1-5-32-544", "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464")


@dataclass
class StateItem:
    """An item in or under the state folder as its security descriptor has it.

    %ProgramData% lets any user create folders, so one may be there before wuremote (a user's
    `failsafe\\` keeps that user as owner, and "an object's owner implicitly has WRITE_DAC
    access": Microsoft, "Owner of a New Object"), or be a junction (FileAttributes.ReparsePoint)
    that Windows PowerShell's Remove-Item -Recurse follows (PowerShell/PowerShell#621).
    """

    owner: str = "S-1-5-32-544"  # the owner's SID
    writers: tuple[str, ...] = ()  # SIDs an allow rule grants write, delete or permission rights (inherit-only too)
    reparse: bool = False  # a junction or symbolic link


@dataclass
class PushedFile:
    """A file written chunk by chunk: its length, a SHA-256 carried along as the bytes arrive, and the
    first bytes (what an Authenticode check reads first: a cabinet starts with MSCF).

    The hash state at every chunk boundary is kept (a few hundred bytes each), so cutting the file
    back to where a chunk ended (push-kb's SetLength) needs no bytes either."""

    size: int = 0
    head: bytes = b""
    marks: dict[int, Any] = field(default_factory=lambda: {0: hashlib.sha256()})

    def append(self, data: bytes) -> None:
        digest = self.marks[self.size].copy()
        digest.update(data)
        if len(self.head) < 8:
            self.head = (self.head + data)[:8]
        self.size += len(data)
        self.marks[self.size] = digest

    def cut(self, size: int) -> bool:
        """SetLength(size); False when size is not a chunk boundary (the lab keeps no bytes to cut at)."""
        if size not in self.marks:
            return False
        self.marks = {mark: digest for mark, digest in self.marks.items() if mark <= size}
        self.size = size
        if size < 8:
            self.head = self.head[:size]
        return True

    @property
    def sha256(self) -> str:
        return str(self.marks[self.size].hexdigest())


@dataclass
class HostState:
    name: str
    scenario: str = "healthy"
    os_caption: str = "Microsoft Windows Server 2022 Datacenter"
    build: int = 20348
    ubr: int = 2700
    architecture: str = "AMD64"  # %PROCESSOR_ARCHITECTURE%: AMD64 | ARM64 | x86
    domain_role: str = "member-server"  # member-server | domain-controller | cluster-node | hyperv-host | workgroup
    # MSCluster_Resource rows of the node's cluster ({"name", "type", "service_name"}: a Generic
    # Service resource names the service the cluster runs in its ServiceName private property;
    # Microsoft, "Generic Service Private Properties").  Meaningful on a cluster-node only, whose
    # cluster hive (HKLM\\Cluster) is loaded (Microsoft, "Cluster Database").
    cluster_resources: list[dict[str, str]] = field(default_factory=list)
    cluster_wmi_readable: bool = True  # root/MSCluster answers (a broken provider throws)
    is_admin: bool = True
    policy_readable: bool = True  # RSoP data can be read
    services: dict[str, Service] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # lower-cased Windows paths
    # Files pushed to the host (push-kb), by lower-cased path: their size and hash, never their bytes,
    # so 1,000 hosts with a 50 MB package each do not hold 50 GB.
    pushed: dict[str, PushedFile] = field(default_factory=dict)
    push_bytes_received: int = 0  # every byte push-kb wrote, re-sent ones included (what a resumed push costs)
    folders: dict[str, Folder] = field(default_factory=dict)  # keys as the constants above, plus backups
    clock_skew_seconds: float = 0.0
    time_source: str = "DC01.corp.example"  # what w32tm /query /status names while w32time runs
    last_time_sync: dt.datetime | None = None  # host clock; None: w32tm reports no successful sync
    free_disk_gb: float = 60.0
    disk_size_gb: float = 127.0
    component_store_reclaimable_gb: float = 1.5  # what /StartComponentCleanup would free
    old_temp_gb: float = 0.25  # %SystemRoot%\Temp files older than 7 days
    component_store: str = "healthy"  # healthy | repairable | needs-source
    system_files_corrupt: bool = False
    download_cache_corrupt: bool = False
    catroot_corrupt: bool = False
    servicing_in_progress: bool = False  # TiWorker running with WinSxS\pending.xml
    dism_running: bool = False  # a DISM at work (DismHost.exe)
    # A servicing session holding CBS's exclusive flag (Component Based Servicing\SessionsPending,
    # Exclusive = 1 while TrustedInstaller applies an update, cleared after: Microsoft Japan Windows
    # support blog, jpwinsup.github.io/blog/2024/07/23/WindowsUpdate/QU/Exclusiveflag).
    cbs_exclusive: bool = False
    # A Windows Installer installation at work: it holds the Global\_MSIExecute mutex
    # (learn.microsoft.com/windows/win32/msi/-msiexecute-mutex); a restart ends it.
    msi_installing: bool = False
    # TiWorker (the Windows Modules Installer's worker) running with no operation pending: started
    # on demand for any servicing query and left to idle out.  With `tiworker_lingers_after_scan`
    # every update search (verify) leaves it running, as issue 13 reports of real hosts.
    tiworker_running: bool = False
    tiworker_lingers_after_scan: bool = False
    antivirus: Antivirus = field(default_factory=Antivirus)
    pending_reboot: set[str] = field(default_factory=set)
    # A security agent or installer that writes PendingFileRenameOperations again at every boot
    # (chocolatey/choco#1768: "pending file rename ... is not cleared"; imabdk/Toast-Notification-
    # Script#40: the value "full with entries from our Endpoint Protection" daily).
    agent_rewrites_file_renames: bool = False
    last_boot: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))
    unexpected_shutdowns_30d: int = 0  # System event 6008
    update_source: str = "windows-update"  # windows-update | wsus | configmgr
    wsus_server: str | None = None
    wsus_status_server: str | None = None
    wsus_reachable: bool = True
    no_internet_wu: bool = False  # DoNotConnectToWindowsUpdateInternetLocations
    wu_access_disabled: bool = False
    no_auto_update: bool = False
    winhttp_proxy: str | None = None
    winhttp_proxy_bypass: str | None = None
    # WindowsUpdateClient failures, newest first: {time_utc (windows_utc), event_id (20 install,
    # 25 search, 31 download), hresult ("0x%08X" or None), message}.
    update_history: list[dict[str, object]] = field(default_factory=list)
    installed_kbs: set[str] = field(default_factory=set)
    # Updates in SoftwareDistribution\Download: IUpdate.IsDownloaded is true for them and verify
    # does not fetch them again (Microsoft, IUpdate::get_IsDownloaded, learn.microsoft.com/windows/
    # win32/api/wuapi/nf-wuapi-iupdate-get_isdownloaded).
    downloaded_kbs: set[str] = field(default_factory=set)
    verify_ok_utc: str | None = None  # %ProgramData%\wuremote\verify-ok.json (verify -RecordSuccess)
    manual_kb: str | None = None  # a KB that installs only by hand
    # What the update agent offers (wuremote/lab/catalog.py) and how often each KB was installed
    # (a test of kill and resume counts installations, not just their end state).
    catalog: tuple[CatalogUpdate, ...] = CATALOG
    install_counts: dict[str, int] = field(default_factory=dict)
    # SoftwareDistribution\Download lists every offered update as downloaded (IUpdate.IsDownloaded is
    # true, so verify fetches nothing) but their files are gone: installing them fails with
    # 0x80070002 until reset-components moves the folder aside (the HRESULT table's
    # ERROR_FILE_NOT_FOUND, wuremote/contract/hresult.py; IsDownloaded: learn.microsoft.com/windows/
    # win32/api/wuapi/nf-wuapi-iupdate-get_isdownloaded).
    download_cache_stale: bool = False
    # The newest successful installation in the agent's history (IUpdateSearcher::QueryHistory).
    last_install_success: dt.datetime | None = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=38))
    # The manual KB needs a newer servicing stack than the host has: DISM /Add-Package fails with
    # 0x800F0823 CBS_E_NEW_SERVICING_STACK_REQUIRED until the SSU is installed.
    servicing_stack_too_old: bool = False
    troubleshooter_available: bool = True
    scheduled_tasks: dict[str, dict[str, object]] = field(default_factory=dict)
    # %ProgramData%\wuremote\failsafe\<kind>.json by kind (av, clean-boot), and lock.json.
    failsafe: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: dict[str, object] | None = None
    # Items of STATE_ROOT (and the root itself) that are not plainly wuremote's: lower-cased path ->
    # StateItem.  Absent: made by wuremote inside its protected root (owner Administrators, the
    # root's inherited rules only).  Protect-WuStateRoot resets the root's own entry.
    state_items: dict[str, StateItem] = field(default_factory=dict)
    reboot_never_returns: bool = False
    # Reads of a running detached step's status.json that find it gone or held: the next N polls
    # find no file (ReplaceFile without a backup that fails with ERROR_UNABLE_TO_MOVE_REPLACEMENT,
    # 1176, leaves "the replaced file no longer exists" until the writer tries again; Microsoft,
    # ReplaceFileW, learn.microsoft.com/windows/win32/api/winbase/nf-winbase-replacefilew), then
    # the N after them find it held by a scanner without sharing, so the read throws IOException
    # 0x80070020 ERROR_SHARING_VIOLATION (Microsoft, CreateFileW: "the sharing mode ... conflicts").
    status_json_gaps: int = 0
    status_json_held: int = 0
    # PowerShell policy: an execution policy set by Group Policy (MachinePolicy) outranks the
    # command line's -ExecutionPolicy Bypass (Process scope), so under AllSigned an unsigned
    # `-File x.ps1` does not run, while a command (-EncodedCommand) is no script file and is not
    # subject to it (Microsoft, about_Execution_Policies: "Execution policy precedence").  Under
    # WDAC/AppLocker enforcement PowerShell runs in ConstrainedLanguage, where .NET types outside
    # an allowed list (System.IO.File, Console) cannot be called (Microsoft, about_Language_Modes).
    execution_policy_gpo: str | None = None  # e.g. "AllSigned"; None: not set by policy
    language_mode: str = "FullLanguage"  # FullLanguage | ConstrainedLanguage
    boot_seconds: float = 45.0  # modelled time a restart takes
    # HKLM keys created with REG_OPTION_VOLATILE (path -> value): "not preserved when the
    # corresponding registry hive is unloaded", for HKLM at shutdown (Microsoft, RegistryOptions.
    # Volatile; RegCreateKeyExW).  Cleared by Host.boot.
    volatile_registry: dict[str, str] = field(default_factory=dict)
    # Time that passed on the host beyond the lab's real time, as its performance counter sees
    # it (Host.tick_ms): a test moves it to age a lease without stepping the clock.
    uptime_extra_seconds: float = 0.0
    reboots: int = 0
    scripts_run: list[str] = field(default_factory=list, repr=False, compare=False)  # scripts received, in order

    @property
    def cluster_node(self) -> bool:
        """Test-WuClusterNode: ClusSvc present and either not Disabled or the cluster hive loaded.

        Installing Failover Clustering adds ClusSvc (Disabled) without making the host a node; a
        "cluster-node" host is a member, its ClusSvc running (listed in services or not).
        """
        clussvc = self.services.get("clussvc")
        return self.domain_role == "cluster-node" or (clussvc is not None and clussvc.start_mode != "Disabled")

    def task_action_runs(self, action: str) -> bool:
        """Whether a SYSTEM task's PowerShell action gets to run our script to its end.

        "file": `powershell -ExecutionPolicy Bypass -File unsigned.ps1`; "encoded-command": a
        hash-checking loader passed with -EncodedCommand.  Either needs FullLanguage, since our
        scripts call .NET (System.IO.File) that Constrained Language refuses.
        """
        if self.language_mode != "FullLanguage":
            return False
        return not (action == "file" and self.execution_policy_gpo in ("AllSigned", "Restricted"))

    @property
    def clock(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.clock_skew_seconds)


def parse_windows_utc(text: str) -> dt.datetime:
    """The inverse of windows_utc (also reads Python's isoformat)."""
    text = text.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def default_services() -> dict[str, Service]:
    services = {}
    for name, (display, start) in DEFAULT_SERVICES.items():
        service = Service(name, display, start, "Running" if name in RUNNING_AT_BOOT else "Stopped")
        service.set_start_mode(start)
        services[name] = service
    return services


SHUTDOWN_GRACE_SECONDS = 5.0  # modelled time from a restart request until WinRM stops answering

# shutdown.exe's exit codes are Win32 error codes (Microsoft, "System Error Codes (1000-1299)",
# learn.microsoft.com/windows/win32/debug/system-error-codes--1000-1299-).
ERROR_SHUTDOWN_IN_PROGRESS = 1115  # "A system shutdown is in progress."
ERROR_NO_SHUTDOWN_IN_PROGRESS = 1116  # "Unable to abort the system shutdown because no shutdown was in progress."
ERROR_SHUTDOWN_IS_SCHEDULED = 1190  # "A system shutdown has already been scheduled."


class Host:
    """One emulated host: its state, its scaled clock, and its reboot."""

    def __init__(self, state: HostState, time_scale: float, rng: random.Random) -> None:
        self.state = state
        self.time_scale = time_scale
        self.rng = rng
        self.up = asyncio.Event()
        self.up.set()
        self.generation = 0  # bumps on every boot; shells and pools of an older generation are gone
        self._on_down: list[Callable[[], Awaitable[None]]] = []
        self._on_up: list[Callable[[], Awaitable[None]]] = []
        self._reboot_task: asyncio.Task[None] | None = None
        self._shutdown_action = "restart"  # what the scheduled or running shutdown ends in: restart | poweroff
        self._shutdown_started = False  # past its /t delay: no longer abortable (1115, not 1190)
        self._task_actions: dict[str, Callable[[], object]] = {}
        self._task_timers: dict[str, asyncio.Task[None]] = {}
        up_for = (state.clock - state.last_boot).total_seconds()
        self._booted = time.monotonic() - max(0.0, up_for)  # the performance counter's zero

    def tick_ms(self) -> int:
        """Milliseconds since this boot by the performance counter (Stopwatch.GetTimestamp).

        QueryPerformanceCounter is "monotonically nondecreasing", its frequency "fixed at system
        boot" (Microsoft, KeQueryPerformanceCounter; "Acquiring high-resolution time stamps"): a
        step of the clock (clock_skew_seconds, as sync-time makes it) does not move it.
        """
        return int((time.monotonic() - self._booted + self.state.uptime_extra_seconds) * 1000)

    @property
    def name(self) -> str:
        return self.state.name

    async def sleep(self, model_seconds: float) -> None:
        """Sleep for modelled seconds, scaled to real time."""
        await asyncio.sleep(max(0.0, model_seconds * self.time_scale))

    def on_down(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._on_down.append(callback)

    def on_up(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._on_up.append(callback)

    @property
    def rebooting(self) -> bool:
        return self._reboot_task is not None and not self._reboot_task.done()

    def request_reboot(self, delay_model_seconds: float = 0.0) -> bool:
        """Start a restart; False if one is already under way (Windows: 1115/1190)."""
        return self.shutdown_exe("restart", delay_model_seconds) == 0

    def shutdown_exe(self, action: str, delay_model_seconds: float = 0.0) -> int:
        """What `shutdown.exe /r` (action "restart") or `/s` ("poweroff") `/t N` answers.

        Windows keeps one system shutdown at a time: while one is scheduled (its /t delay
        running) another request fails with 1190, once it has begun with 1115 (the codes Ansible's
        win_reboot handles, plugins/plugin_utils/_reboot.py, _perform_reboot).  A shutdown
        scheduled by someone else may be hours away, or a power-off.
        """
        if self.rebooting:
            return ERROR_SHUTDOWN_IN_PROGRESS if self._shutdown_started else ERROR_SHUTDOWN_IS_SCHEDULED
        self._shutdown_action = action
        self._shutdown_started = False
        self._reboot_task = asyncio.get_running_loop().create_task(self._reboot(delay_model_seconds))
        return 0

    def shutdown_abort(self) -> int:
        """What `shutdown.exe /a` answers: a scheduled shutdown is cancelled (0); with none
        scheduled, 1116.  One already begun cannot be aborted: the lab answers 1115 (an assumption;
        Microsoft documents /a only as "aborts a system shutdown ... during the time-out period")."""
        if not self.rebooting:
            return ERROR_NO_SHUTDOWN_IN_PROGRESS
        if self._shutdown_started:
            return ERROR_SHUTDOWN_IN_PROGRESS
        assert self._reboot_task is not None
        self._reboot_task.cancel()
        self._reboot_task = None
        return 0

    @property
    def shutdown_scheduled(self) -> str | None:
        """The action of the shutdown scheduled or under way ("restart" | "poweroff"), or None."""
        return self._shutdown_action if self.rebooting else None

    async def _reboot(self, delay_model_seconds: float) -> None:
        # Even `shutdown /r /t 0` leaves WinRM up for the seconds Windows takes to stop services,
        # long enough for the client to read the command's end and close its shell.
        await self.sleep(max(delay_model_seconds, SHUTDOWN_GRACE_SECONDS))
        self._shutdown_started = True
        self.up.clear()
        for callback in self._on_down:
            await callback()
        if self.state.reboot_never_returns or self._shutdown_action == "poweroff":
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
        self._booted, state.uptime_extra_seconds = time.monotonic(), 0.0
        state.volatile_registry.clear()
        state.pending_reboot.clear()
        if state.agent_rewrites_file_renames:
            state.pending_reboot.add("pending-file-rename")
        state.servicing_in_progress = state.dism_running = state.tiworker_running = False
        state.cbs_exclusive = state.msi_installing = False
        for service in state.services.values():
            effective = service.effective_start_type
            service.status = "Running" if effective == "Automatic" or (
                service.name in RUNNING_AT_BOOT and effective != "Disabled"
            ) else "Stopped"
        for task in state.scheduled_tasks.values():
            if task.get("state") == "Running":
                task["state"] = "Interrupted"
        for name in list(self._task_actions):  # the at-startup trigger: runs only past the deadline
            if name in state.scheduled_tasks and state.clock >= self._deadline(name):
                self._run_task(name)

    def arm_deadline_task(self, name: str, action: Callable[[], object]) -> None:
        """Run `action` once the task's `deadline_utc` has passed, and at each boot after it.

        The task record (state.scheduled_tasks[name]) is what the steps change: a later deadline
        postpones the action, removing the record disarms it.  The wait until the deadline is
        modelled time (scaled like every step's duration); a boot compares the host's clock, so a
        clock that jumps past the deadline while the host is down runs the action at start-up.
        Like a Windows task with StartWhenAvailable, a deadline reached while the host is down
        runs once it is up.
        """
        self._task_actions[name] = action
        timer = self._task_timers.get(name)
        if timer is None or timer.done():
            self._task_timers[name] = asyncio.get_running_loop().create_task(self._deadline_timer(name))

    async def _deadline_timer(self, name: str) -> None:
        while name in self.state.scheduled_tasks:
            deadline = self._deadline(name)
            await self.sleep((deadline - self.state.clock).total_seconds())
            if name in self.state.scheduled_tasks and self._deadline(name) == deadline:
                await self.up.wait()
                if name in self.state.scheduled_tasks:
                    self._run_task(name)
                return

    def _deadline(self, name: str) -> dt.datetime:
        return parse_windows_utc(str(self.state.scheduled_tasks[name]["deadline_utc"]))

    def _run_task(self, name: str) -> None:
        task = self.state.scheduled_tasks[name]
        task["last_run_utc"] = windows_utc(self.state.clock)
        if not self.state.task_action_runs(str(task.get("action", "file"))):
            task["last_result"] = 1  # powershell.exe refused the script: nothing ran
            return
        self._task_actions[name]()

    async def shutdown(self) -> None:
        if self._reboot_task is not None:
            self._reboot_task.cancel()
        for timer in self._task_timers.values():
            timer.cancel()
