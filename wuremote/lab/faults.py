"""Transport faults a lab host injects: what a flaky network and a busy WinRM service look like.

A scenario file gives each group of hosts a fault plan:

    [[hosts]]
    scenario = "healthy"
    [hosts.faults]
    refuse = true                  # the port refuses every connection (the host is down)
    reset_receive_every = 3        # every 3rd Receive of a running command: the connection is reset unanswered
    http500_every = 5              # every 5th request: HTTP 500 with a SOAP fault (http500_code, default 1726)
    expired_account = true         # every logon (Basic or NTLM) is answered 401, as for an expired account
    slow_seconds = 2.0             # every answer waits 1-2 s (a seeded jitter between half and all of it)
    operation_timeout_storm = 10   # the first 10 Receives of a running command end with the OperationTimeout fault
    lose_shell_after = 4           # once 4 commands have run, every shell and pool of the host is gone
    idle_timeout_seconds = 30      # a host left without requests this long drops its shells and pools
    reboot_mid_step = "dism"       # the host restarts while this step runs (once)
    max_shells_per_user = 2        # MaxShellsPerUser: WinRS fault 2150859173, the PowerShell endpoint's 2150859236
    max_operations_per_user = 15   # MaxConcurrentOperationsPerUser, fault 2150859174
    stdout_bom = true              # powershell.exe's stdout starts with a UTF-8 BOM (UTF-8 output encoding with a preamble)
    stdout_clixml = true           # ... or with "#< CLIXML" (a progress record serialized to stdout)
    late_receive_seconds = 3       # a long poll that ends with OperationTimeout is answered this much later (a busy host)
    idle_connection_seconds = 5    # HTTP.sys closes a connection idle this long (default 120)
    max_envelope_kb = 150          # MaxEnvelopeSizekb (default 500; 150 on 2008 R2): a larger request gets HTTP 413
    max_commands_per_shell = 1000  # the PowerShell endpoint's MaxConcurrentCommandsPerShell (the default), fault 2150859241
    non_admin = true               # the account is not an administrator there: every Create is "Access is denied"
    send_busy = 2                  # the first 2 WinRS Sends with input: delivered, answered OperationTimeout;
                                   # the next Send of that command is answered ERROR_BUSY (170) once
    reset_send_after_kb = 512      # once 512 KB of input (WinRS stdin, PSRP pipeline input) has arrived, the next
                                   # Send is dropped unanswered and undelivered (a network cut mid-push), once

Why these choices:
- counters ("every Nth") count from the host's start, so a run meets the same faults every
  time; the only random part (the jitter of slow answers) comes from the host's generator,
  seeded by the lab's --seed;
- times here are real seconds, not modelled ones: they are about the network and the
  client's timeouts, which the lab's time scale does not shrink;
- operations count as Windows counts them: every request in flight, plus every command a
  WinRS shell has run, which Windows frees only when the shell is deleted (a Terminate
  signal does not, MS-WSMV 3.1.4.12 note 118), so a client reusing one shell for many
  commands meets the quota;
- an OperationTimeout storm and a reset hit only Receives of a running command (long
  polls), as on a real host: the Receives that open a pool answer at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

from ..contract.scripts import load_scripts
from . import wsman
from .host import Host
from .wsman import NS, Request, WSManFault

DEFAULT_HTTP500_CODE = 1726  # RPC_S_CALL_FAILED, as a WMI-backed provider fault reaches WinRM clients
_HTTP500_MESSAGES = {
    1726: "The remote procedure call failed. ",
    2150858843: "The request for the Windows Remote Shell failed because the shell was not found on the server. ",
    2150859173: "The WS-Management service cannot process the request. This user is allowed a maximum number of "
                "concurrent shells, which has been exceeded. ",
}


class FaultPlanError(ValueError):
    """A fault plan value the lab cannot use; the message says what ``key`` takes."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class FaultPlan:
    """What goes wrong between a client and one lab host (all off by default)."""

    refuse: bool = False
    reset_receive_every: int = 0
    http500_every: int = 0
    http500_code: int = DEFAULT_HTTP500_CODE
    expired_account: bool = False
    slow_seconds: float = 0.0
    operation_timeout_storm: int = 0
    lose_shell_after: int = 0
    idle_timeout_seconds: float = 0.0
    reboot_mid_step: str | None = None
    max_shells_per_user: int | None = None
    max_operations_per_user: int | None = None
    send_busy: int = 0
    reset_send_after_kb: int = 0
    non_admin: bool = False
    late_receive_seconds: float = 0.0
    stdout_bom: bool = False
    stdout_clixml: bool = False
    # Limits, on by default at Windows' defaults (a plan that only restates them is not "active").
    max_envelope_kb: int = 500
    idle_connection_seconds: float = 120.0
    max_commands_per_shell: int = 1000

    @property
    def active(self) -> bool:
        return self != FaultPlan()

    def describe(self) -> str:
        """The faults set, as the scenario file writes them ("" when none)."""
        default = FaultPlan()
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                         if getattr(self, f.name) != getattr(default, f.name))

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> FaultPlan:
        """A plan from a [hosts.faults] table; FaultPlanError names the first bad key (the caller adds file:line)."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise FaultPlanError(f"{key!r} is not a fault; known: {', '.join(sorted(known))}", key)
            values[key] = _checked(key, str(known[key].type), value)
        return cls(**values)


def _checked(key: str, kind: str, value: Any) -> Any:
    if kind == "bool":
        if not isinstance(value, bool):
            raise FaultPlanError(f"{key} takes true or false", key)
        return value
    if kind == "str | None":
        steps = load_scripts()
        if not isinstance(value, str) or value not in steps:
            raise FaultPlanError(f"{key} takes a step name: {', '.join(sorted(steps))}", key)
        return value
    if kind in ("int", "int | None"):
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if kind == "int | None" else 0):
            raise FaultPlanError(f"{key} takes a whole number{' of at least 1' if kind == 'int | None' else ' (0 = off)'}", key)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise FaultPlanError(f"{key} takes a number of seconds (0 = off)", key)
    return float(value)


def operation_quota(user: str, limit: int) -> WSManFault:
    # ERROR_WSMAN_QUOTA_MAX_OPERATIONS (0x803381A6), as MaxConcurrentOperationsPerUser is hit.  Windows
    # sends it as s:Detail/p:MSFT_WmiError/error_Code with the subcode w:InternalError and no
    # f:WSManFault (pywinrm's test_wsman_fault_wmi_error_detail; ansible-core's winrm plugin reads it
    # as wmierror_code), so pypsrp reports its code as "w:InternalError"; the wording is pywinrm#124's.
    return WSManFault(
        2150859174,
        f"The WS-Management service cannot process the request. This user is allowed a maximum number of {limit} "
        "concurrent operations, which has been exceeded. Close existing operations for this user, or raise the quota for this user. ",
        subcode="w:InternalError",
        value="s:Receiver",
        wmi_error=True,
    )


def injected_500(code: int) -> WSManFault:
    text = _HTTP500_MESSAGES.get(code, f"The WS-Management service cannot process the request (error {code}). ")
    return WSManFault(code, text, subcode="w:InternalError", value="s:Receiver")


class Reset(Exception):
    """Drop the connection without an answer."""


# The host's open shells and pools: id -> (kind "winrs" | "psrp", owner).
Sessions = Callable[[], dict[str, tuple[str, str]]]


class Faults:
    """One host's fault plan applied request by request, with the counters tests read.

    ``enter`` runs before the WS-Man service sees a request (it may raise a WSManFault to
    answer with, or Reset to drop the connection), ``leave`` after the answer is written.
    """

    def __init__(self, plan: FaultPlan, host: Host, sessions: Sessions,
                 drop_sessions: Callable[[], Awaitable[None]], rng: random.Random) -> None:
        self.plan = plan
        self.host = host
        self.sessions = sessions
        self.drop_sessions = drop_sessions
        self.rng = rng
        self.requests = 0
        self.receives = 0
        self.commands = 0
        self.in_flight: dict[str, int] = {}
        self.shell_commands: dict[str, int] = {}  # WinRS commands run per open shell (freed when it goes)
        self.injected: dict[str, int] = {}  # what was injected, by kind: tests and the lab's user read it
        self.peak_shells = 0  # most shells/pools one user held at once
        self._storm_left = plan.operation_timeout_storm
        self._shell_lost = False
        self._rebooted_mid_step = False
        self._scripts_at_command = 0
        self._last_activity = time.monotonic()
        self._send_busy_left = plan.send_busy
        self.input_bytes = 0  # input delivered in Sends (base64 decoded), for reset_send_after_kb
        self._send_reset = False
        self._busy_commands: set[str] = set()  # commands whose last Send timed out while "still being processed"

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    @property
    def auth_refused(self) -> bool:
        return self.plan.expired_account

    async def enter(self, request: Request, user: str) -> None:
        plan = self.plan
        self.requests += 1
        idle = time.monotonic() - self._last_activity
        if plan.idle_timeout_seconds and not any(self.in_flight.values()) and idle > plan.idle_timeout_seconds:
            if self.sessions():
                self._count("idle-timeout")
                await self.drop_sessions()
        self.in_flight[user.lower()] = self.in_flight.get(user.lower(), 0) + 1
        self._last_activity = time.monotonic()
        if plan.slow_seconds:
            await asyncio.sleep(plan.slow_seconds * (0.5 + self.rng.random() / 2))
        if plan.reboot_mid_step and not self._rebooted_mid_step and self._mid_step(request, plan.reboot_mid_step):
            self._rebooted_mid_step = True
            self._count("reboot-mid-step")
            self.host.request_reboot()
            while self.host.up.is_set():  # the client never gets this answer: the host goes down first
                await asyncio.sleep(0.001)
            raise Reset()
        if plan.non_admin and request.action == wsman.ACTION_CREATE:
            self._count("access-denied")
            raise access_denied()
        self._check_quotas(request, user)
        if plan.http500_every and self.requests % plan.http500_every == 0:
            self._count("http500")
            raise injected_500(plan.http500_code)
        if request.action == wsman.ACTION_COMMAND:
            await self._command(request)
        if request.action == wsman.ACTION_SEND and plan.reset_send_after_kb and not self._send_reset:
            if self.input_bytes >= plan.reset_send_after_kb * 1024:
                self._send_reset = True
                self._count("send-reset")
                raise Reset()
            self.input_bytes += sum(len(node.text or "") * 3 // 4 for node in request.body.findall("rsp:Send/rsp:Stream", NS))
        if request.action == wsman.ACTION_SEND and _send_command(request) in self._busy_commands:
            self._busy_commands.discard(_send_command(request))
            self._count("send-busy")
            raise error_busy()
        if request.action == wsman.ACTION_RECEIVE and _polls_command(request):
            self.receives += 1
            if self._storm_left:
                self._storm_left -= 1
                self._count("operation-timeout")
                raise wsman.operation_timeout()
            if plan.reset_receive_every and self.receives % plan.reset_receive_every == 0:
                self._count("reset")
                raise Reset()

    def answered(self, request: Request) -> None:
        """After the service handled a request: its answer may still be replaced by a fault."""
        if request.action == wsman.ACTION_SEND and self._send_busy_left and request.resource_uri.lower() == wsman.RESOURCE_CMD:
            self._send_busy_left -= 1
            self._busy_commands.add(_send_command(request))
            self._count("send-timeout")
            # ansible/ansible#81538: a Send under load answered OperationTimeout, its input delivered
            # (ansible-core's winrm plugin: "On manual testing the input is still processed").
            raise wsman.operation_timeout()

    async def late(self, request: Request, status: int) -> None:
        """A long poll of a running command that ended with the OperationTimeout fault (status 500)
        comes late on a busy host: Windows' own client allows NetworkDelayms = 5000 for it (the
        winrm/config recordings, pypsrp's test_wsman_update_envelope_size_*.yml)."""
        if self.plan.late_receive_seconds and status == 500 and request.action == wsman.ACTION_RECEIVE \
                and _polls_command(request):
            self._count("late-receive")
            await asyncio.sleep(self.plan.late_receive_seconds)

    def leave(self, user: str) -> None:
        self.in_flight[user.lower()] = max(0, self.in_flight.get(user.lower(), 0) - 1)
        self._last_activity = time.monotonic()

    def _mid_step(self, request: Request, step: str) -> bool:
        """The step runs and its result is not out yet: a poll of its command, or a later command while its task runs.

        A step run in the shell is caught at the first Receive after its script model started
        under the latest Command; a detached one at the first Command after its task started
        (the starter's own answer has gone out by then).
        """
        state = self.host.state
        tasks = [task for name, task in state.scheduled_tasks.items() if name.endswith(f"-{step}")]
        if request.action == wsman.ACTION_COMMAND:
            self._scripts_at_command = len(state.scripts_run)
            return any(task.get("state") == "Running" for task in tasks)
        if request.action == wsman.ACTION_RECEIVE and _polls_command(request) and not tasks:
            return len(state.scripts_run) > self._scripts_at_command and state.scripts_run[-1] == step
        return False

    async def _command(self, request: Request) -> None:
        self.commands += 1
        if self.plan.lose_shell_after and not self._shell_lost and self.commands > self.plan.lose_shell_after:
            self._shell_lost = True
            self._count("shell-lost")
            await self.drop_sessions()
            raise wsman.shell_not_found(request.selectors.get("ShellId", ""))
        if request.resource_uri.lower() == wsman.RESOURCE_CMD:
            shell_id = request.selectors.get("ShellId", "").upper()
            self.shell_commands[shell_id] = self.shell_commands.get(shell_id, 0) + 1

    def _check_quotas(self, request: Request, user: str) -> None:
        plan = self.plan
        sessions = self.sessions()
        for shell_id in [s for s in self.shell_commands if s not in sessions]:
            del self.shell_commands[shell_id]
        mine = {sid: kind for sid, (kind, owner) in sessions.items() if owner.lower() == user.lower()}
        self.peak_shells = max(self.peak_shells, len(mine))
        starts_one = request.action in (wsman.ACTION_CREATE, wsman.ACTION_COMMAND)
        if starts_one and plan.max_operations_per_user is not None:
            # This request (in flight) is the new operation; the user's other requests and the
            # commands its WinRS shells still hold are the rest.
            operations = self.in_flight.get(user.lower(), 0) + sum(self.shell_commands.get(sid, 0) for sid in mine)
            if operations > plan.max_operations_per_user:
                self._count("operation-quota")
                raise operation_quota(user, plan.max_operations_per_user)
        if request.action == wsman.ACTION_CREATE and plan.max_shells_per_user is not None:
            kind = "winrs" if request.resource_uri.lower() == wsman.RESOURCE_CMD else "psrp"
            if sum(1 for k in mine.values() if k == kind) >= plan.max_shells_per_user:
                self._count("shell-quota")
                raise wsman.shell_quota(user, plan.max_shells_per_user, psrp=kind == "psrp")


def access_denied() -> WSManFault:
    # A user outside Administrators (and Remote Management Users) opening a shell: HTTP 500 with
    # WSManFault 2147942405 (E_ACCESSDENIED), s:Receiver/w:InternalError, "Access is denied."
    # (pywinrm's fault data as wazuh/wazuh-ansible#581 quotes it; WinRb/WinRM#194 meets the same).
    return WSManFault(2147942405, "Access is denied. ", subcode="w:InternalError", value="s:Receiver")


def error_busy() -> WSManFault:
    # ERROR_BUSY (170) to a Send while the host still processes a Send that timed out (ansible/ansible#81538;
    # ansible-core's winrm plugin retries it three times, 5 s apart, reading 'wsmanfault_code': '170').
    return WSManFault(170, "The requested resource is in use. ", subcode="w:InternalError", value="s:Receiver")


def _send_command(request: Request) -> str:
    node = request.body.find("rsp:Send/rsp:Stream", wsman.NS)
    return (node.attrib.get("CommandId", "") if node is not None else "").upper()


def _polls_command(request: Request) -> bool:
    desired = request.body.find("rsp:Receive/rsp:DesiredStream", wsman.NS)
    return desired is not None and bool(desired.attrib.get("CommandId"))
