"""PSRP over WSMan (resource .../powershell/<configuration>) on psrpcore's server side.

A WinRS-style shell carries one ServerRunspacePool: Create brings the pool's opening
fragments in creationXml, Command creates a pipeline, Send carries pipeline input and
extra fragments, Receive drains the messages psrpcore prepared for the pool or for one
pipeline, Signal stops or closes a pipeline, Delete closes the pool.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psrpcore
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    HostMethodIdentifier,
    NETException,
    PSCustomObject,
    PSInvocationState,
    add_note_property,
)
from psrpcore.types import (
    PSObject as CorePSObject,
)

from . import wsman
from .engine import ErrorInfo, PSObject, Record, Run
from .host import Host
from .psrp_commands import PipelineCommand, run_pipeline
from .wsman import NS, Request, WSManFault, q

MAX_SHELLS_PER_USER = 25  # the PowerShell endpoint's own MaxShellsPerUser default
MAX_COMMANDS_PER_SHELL = 1000  # its MaxConcurrentCommandsPerShell default (pypsrp#148)
KNOWN_CONFIGURATIONS = {"microsoft.powershell"}
SIGNAL_PS_CTRL_C = ("powershell/signal/crtl_c", "powershell/signal/ctrl_c")  # MS-PSRP spells it crtl_c; pypsrp >= 0.9 sends ctrl_c
SIGNAL_TERMINATE = wsman.SIGNAL_PREFIX + "terminate"
FRAGMENT_SIZE = 32 * 1024
MSG_RUNSPACEPOOL_STATE = 0x00021005


class _ServerRunspacePool(psrpcore.ServerRunspacePool):
    """psrpcore's server pool, reading SET_MAX/MIN_RUNSPACES' call id whatever its case: pypsrp sends
    "CI" where psrpcore expects "ci", and PowerShell's deserializer, case-insensitive, takes it
    (pypsrp's test_psrp_set_runspaces.yml, recorded against Windows)."""

    def _process_SetMaxRunspaces(self, event: Any) -> None:  # noqa: N802 - psrpcore's name
        _lower_ci(event)
        super()._process_SetMaxRunspaces(event)

    def _process_SetMinRunspaces(self, event: Any) -> None:  # noqa: N802 - psrpcore's name
        _lower_ci(event)
        super()._process_SetMinRunspaces(event)


def _lower_ci(event: Any) -> None:
    obj = event._ps_object  # psrpcore keeps the message here; it has no public accessor
    if not hasattr(obj, "ci") and hasattr(obj, "CI"):
        add_note_property(obj, "ci", obj.CI)


@dataclass
class Pipe:
    id: uuid.UUID
    core: psrpcore.ServerPipeline
    user: str
    run: Run = field(default_factory=Run)
    task: asyncio.Task[None] | None = None
    core_id: uuid.UUID | None = None  # the id psrpcore knows it by, when its messages name another
    inputs: list[Any] = field(default_factory=list)
    input_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    input_done: asyncio.Event = field(default_factory=asyncio.Event)
    outbox: deque[bytes] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False
    preludes: set[str] = field(default_factory=set)  # the pool's, shared: its one runspace's globals


@dataclass
class Pool:
    id: str
    owner: str
    core: psrpcore.ServerRunspacePool
    pipes: dict[uuid.UUID, Pipe] = field(default_factory=dict)
    commands_run: int = 0  # over the pool's life: Windows counts closed pipelines too (pypsrp#148)
    # Prelude hashes whose script block the pool's runspace holds ($global:WuremotePrelude_<sha256>):
    # one runspace per pool (pypsrp opens min = max = 1), whose globals outlive each pipeline.
    preludes: set[str] = field(default_factory=set)
    outbox: deque[bytes] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class PSRPService:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.pools: dict[str, Pool] = {}
        self.max_commands_per_shell = MAX_COMMANDS_PER_SHELL
        host.on_down(self.drop_all)

    async def drop_all(self) -> None:
        for pool in self.pools.values():
            for pipe in pool.pipes.values():
                if pipe.task is not None:
                    pipe.task.cancel()
        self.pools.clear()

    async def handle(self, request: Request, user: str) -> bytes:
        configuration = request.resource_uri[len(wsman.RESOURCE_PWSH_PREFIX):]
        if configuration.lower() not in KNOWN_CONFIGURATIONS:
            raise wsman.unknown_configuration(request.resource_uri)
        action = request.action
        if action == wsman.ACTION_CREATE:
            return self.create(request, user)
        pool = self.pools.get(request.selectors.get("ShellId", "").upper())
        if pool is None:
            raise wsman.shell_not_found(request.selectors.get("ShellId", ""))
        if action == wsman.ACTION_DELETE:
            return self.delete(request, pool)
        if action == wsman.ACTION_COMMAND:
            return self.command(request, pool, user)
        if action == wsman.ACTION_SEND:
            return self.send(request, pool)
        if action == wsman.ACTION_RECEIVE:
            return await self.receive(request, pool)
        if action == wsman.ACTION_SIGNAL:
            return self.signal(request, pool)
        raise wsman.action_not_supported(action)

    # --- pool -----------------------------------------------------------------------------
    def create(self, request: Request, user: str) -> bytes:
        wsman.check_shell_quota([pool.owner for pool in self.pools.values()], user, MAX_SHELLS_PER_USER, psrp=True)
        shell = request.body.find("rsp:Shell", NS)
        creation = shell.find("pwsh:creationXml", NS) if shell is not None else None
        if shell is None or creation is None or not (creation.text or "").strip():
            raise wsman.invalid_message("The WS-Management service cannot process the request. The shell has no creationXml. ")
        # The shell takes the client's RunspacePool id when the Create names one, as Windows answers
        # (tests/recordings/pypsrp/test_psrp_open_runspace.yml; MS-PSRP 3.1.5.3.1).
        shell_id = (shell.attrib.get("ShellId") or wsman.new_id()).upper()
        core = _ServerRunspacePool()
        pool = Pool(shell_id, user, core)
        self._feed(pool, None, base64.b64decode(creation.text or ""))
        self.pools[shell_id] = pool
        return wsman.shell_created(request, shell_id, [
            ("ResourceUri", request.resource_uri),
            ("Owner", f"{self.host.name}\\{user}"),
            ("ClientIP", "127.0.0.1"),
            ("ProcessId", "4242"),
            ("IdleTimeOut", "PT7200.000S"),
            ("InputStreams", "stdin pr"),
            ("OutputStreams", "stdout"),
            ("MaxIdleTimeOut", "PT2147483.647S"),
            ("Locale", "en-US"),
            ("DataLocale", "en-US"),
            ("CompressionMode", "XpressCompression"),
            ("ProfileLoaded", "Yes"),
            ("Encoding", "UTF8"),
            ("BufferMode", "Block"),
            ("State", "Connected"),
            ("ShellRunTime", "P0DT0H0M0S"),
            ("ShellInactivity", "P0DT0H0M0S"),
        ])

    def delete(self, request: Request, pool: Pool) -> bytes:
        for pipe in pool.pipes.values():
            if pipe.task is not None:
                pipe.task.cancel()
        self.pools.pop(pool.id, None)
        return wsman.envelope(request, wsman.ACTION_DELETE + "Response")

    def _feed(self, pool: Pool, pipe_id: uuid.UUID | None, data: bytes) -> None:
        """Give psrpcore incoming fragments and act on the events it returns."""
        pool.core.receive_data(psrpcore.PSRPPayload(data, psrpcore.StreamType.default, pipe_id))
        while True:
            event = pool.core.next_event()
            if event is None:
                break
            if isinstance(event, psrpcore.CreatePipelineEvent):
                pipe = pool.pipes[event.pipeline_id]
                self._start(pool, pipe)
            elif isinstance(event, psrpcore.PipelineInputEvent):
                pool.pipes[event.pipeline_id].inputs.append(event.data)
                pool.pipes[event.pipeline_id].input_arrived.set()
            elif isinstance(event, psrpcore.EndOfPipelineInputEvent):
                pool.pipes[event.pipeline_id].input_done.set()
            elif isinstance(event, (psrpcore.GetAvailableRunspacesEvent, psrpcore.ResetRunspaceStateEvent)):
                pool.core.runspace_availability_response(event.ci, True if isinstance(event, psrpcore.ResetRunspaceStateEvent) else 1)
            elif isinstance(event, (psrpcore.SetMaxRunspacesEvent, psrpcore.SetMinRunspacesEvent)):
                # MS-PSRP 2.2.2.8/2.2.2.9: the server answers RUNSPACE_AVAILABILITY with true (pypsrp's
                # test_psrp_set_runspaces.yml); unanswered, the client waited and the lab dropped the connection.
                pool.core.runspace_availability_response(event.ci, True)
        self._flush(pool)

    def _flush(self, pool: Pool) -> None:
        """Move what psrpcore prepared into the outbox of the pool or of the pipeline it is for."""
        while True:
            payload = pool.core.data_to_send(FRAGMENT_SIZE)
            if payload is None:
                break
            pipe = pool.pipes.get(payload.pipeline_id) if payload.pipeline_id else None
            target = pipe if pipe is not None else pool
            target.outbox.extend(_fragments(payload.data))
            target.changed.set()

    # --- pipelines ------------------------------------------------------------------------
    def command(self, request: Request, pool: Pool, user: str) -> bytes:
        node = request.body.find("rsp:CommandLine", NS)
        if node is None:
            raise wsman.invalid_message("The WS-Management service cannot process the request. The Command body has no CommandLine. ")
        if pool.commands_run >= self.max_commands_per_shell:
            raise commands_per_shell_quota()
        pool.commands_run += 1
        command_id = (node.attrib.get("CommandId") or wsman.new_id()).upper()
        pipe_id = uuid.UUID(command_id)
        arguments = [base64.b64decode(argument.text or "") for argument in node.findall("rsp:Arguments", NS)]
        # The pipeline is the Command's CommandId; the id inside its PSRP messages may differ (older
        # pypsrp wrote it in the other byte order, and Windows took it: pypsrp's recordings, e.g.
        # test_client_execute_ps.yml), so psrpcore gets the messages' own id and both name the pipe.
        core_id = _message_pipeline_id(arguments[0]) if arguments else None
        core_id = core_id or pipe_id
        pipe = Pipe(pipe_id, psrpcore.ServerPipeline(pool.core, core_id), user, core_id=core_id, preludes=pool.preludes)
        pool.pipes[pipe_id] = pipe
        pool.pipes[core_id] = pipe
        for data in arguments:
            self._feed(pool, core_id, data)
        response = ET.Element(q("rsp", "CommandResponse"))
        ET.SubElement(response, q("rsp", "CommandId")).text = command_id
        return wsman.envelope(request, wsman.ACTION_COMMAND + "Response", [response])

    def _start(self, pool: Pool, pipe: Pipe) -> None:
        if pipe.core.metadata is not None and pipe.core.metadata.no_input:
            pipe.input_done.set()
        # Running, without a PIPELINE_STATE message: Windows sends a pipeline's state once, when it ends,
        # in the Receive that carries its last output and CommandState Done (pypsrp's recordings:
        # test_client_execute_ps.yml, test_psrp_long_running_cmdlet.yml, test_psrp_multiple_commands.yml);
        # psrpcore's start() would announce Running, which made a short step cost a second Receive.
        pipe.core._change_state(PSInvocationState.Running, emit=False)  # psrpcore has no public quiet start
        self._flush(pool)
        pipe.task = asyncio.get_running_loop().create_task(self._execute(pool, pipe))

    async def _execute(self, pool: Pool, pipe: Pipe) -> None:
        metadata = pipe.core.metadata
        assert metadata is not None  # a pipeline is created with its metadata
        commands = [
            PipelineCommand(str(c.command_text), bool(c.is_script), list(c.parameters), bool(c.end_of_statement))
            for c in metadata.commands
        ]
        work = asyncio.ensure_future(run_pipeline(self.host, pipe.user, pipe.run, commands, pipe))
        try:
            while not pipe.run.drained:
                await pipe.run.wait(3600)
                await asyncio.sleep(0)  # a script that ends right after its last output ends in this same answer
                for record in pipe.run.take():
                    self._emit(pool, pipe, record)
                if not pipe.run.drained:  # the last output goes out with the final state, in one Receive as Windows does
                    self._flush(pool)
            await work
            self._finish(pool, pipe)
        except asyncio.CancelledError:
            work.cancel()
            raise

    def _has_host(self, pool: Pool, pipe: Pipe) -> bool:
        info = pipe.core.metadata.host if pipe.core.metadata is not None else None
        if info is None or getattr(info, "UseRunspaceHost", True):
            info = pool.core.host
        return info is not None and not getattr(info, "IsHostNull", True)

    def _emit(self, pool: Pool, pipe: Pipe, record: Record) -> None:
        core = pipe.core
        if core.state != PSInvocationState.Running:
            return
        kind, value = record.kind, record.value
        if kind == "output":
            core.write_output(to_ps(value))
        elif kind in ("stdout",):
            for line in str(value).splitlines():
                core.write_output(line)
        elif kind in ("stderr", "native-stderr"):
            for line in str(value).splitlines():
                _write_error(core, ErrorInfo(line, fqid="NativeCommandError",
                                             exception_type="System.Management.Automation.RemoteException", command=""))
        elif kind == "error":
            _write_error(core, value)
        elif kind == "warning":
            core.write_warning(value)
        elif kind == "verbose":
            core.write_verbose(value)
        elif kind == "debug":
            core.write_debug(value)
        elif kind == "information":
            core.write_information(value, "Write-Information")
        elif kind == "host":
            core.write_information(value[1], "Write-Host", tags=["PSHOST"])
        elif kind == "progress":
            activity, status, percent = value[:3]
            core.write_progress(activity, 0, status, percent_complete=percent)

    def _finish(self, pool: Pool, pipe: Pipe) -> None:
        run, core = pipe.run, pipe.core
        if core.state != PSInvocationState.Running:
            return
        if run.failure is not None:
            core._change_state(PSInvocationState.Failed, error=_error_record(run.failure))  # psrpcore has no public fail()
        else:
            if run.exit_code and self._has_host(pool, pipe):
                core.host_call(HostMethodIdentifier.SetShouldExit, [run.exit_code])
            core.complete()
        pipe.finished = True
        self._flush(pool)

    def send(self, request: Request, pool: Pool) -> bytes:
        for node in request.body.findall("rsp:Send/rsp:Stream", NS):
            command_id = node.attrib.get("CommandId")
            pipe_id = uuid.UUID(command_id) if command_id else None
            if pipe_id is not None and pipe_id not in pool.pipes:
                raise wsman.command_not_found()
            if pipe_id is not None:
                pipe_id = pool.pipes[pipe_id].core_id or pipe_id
            if node.text:
                self._feed(pool, pipe_id, base64.b64decode(node.text))
        return wsman.envelope(request, wsman.ACTION_SEND + "Response", [ET.Element(q("rsp", "SendResponse"))])

    async def receive(self, request: Request, pool: Pool) -> bytes:
        desired = request.body.find("rsp:Receive/rsp:DesiredStream", NS)
        command_id = desired.attrib.get("CommandId") if desired is not None else None
        target: Pool | Pipe = pool
        if command_id:
            pipe = pool.pipes.get(uuid.UUID(command_id))
            if pipe is None:
                raise wsman.command_not_found()
            target = pipe
        if not target.outbox and not (isinstance(target, Pipe) and target.finished):
            target.changed.clear()
            try:
                await asyncio.wait_for(target.changed.wait(), request.operation_timeout)
            except asyncio.TimeoutError:
                raise wsman.operation_timeout() from None
        budget = max(4096, (request.max_envelope_size - 2048) * 3 // 4)
        response = ET.Element(q("rsp", "ReceiveResponse"))
        size = 0
        while target.outbox and size + len(target.outbox[0]) <= budget:
            if size and isinstance(target, Pool) and _message_type(target.outbox[0]) == MSG_RUNSPACEPOOL_STATE:
                break  # Windows answers the pool's state in a Receive of its own (test_psrp_open_runspace.yml)
            data = target.outbox.popleft()
            size += len(data)
            attrs = {"Name": "stdout"}
            if command_id:
                attrs["CommandId"] = command_id.upper()
            ET.SubElement(response, q("rsp", "Stream"), attrs).text = base64.b64encode(data).decode("ascii")
        if isinstance(target, Pipe) and command_id and target.finished and not target.outbox:
            # Done with ExitCode 0 whatever the pipeline's state, as Windows answers (pypsrp's recordings,
            # e.g. test_psrp_error_failed.yml): the pipeline's own end travels in PIPELINE_STATE.
            state = ET.SubElement(response, q("rsp", "CommandState"),
                                  {"CommandId": command_id.upper(), "State": wsman.COMMAND_STATE_DONE})
            ET.SubElement(state, q("rsp", "ExitCode")).text = "0"
        return wsman.envelope(request, wsman.ACTION_RECEIVE + "Response", [response])

    def signal(self, request: Request, pool: Pool) -> bytes:
        node = request.body.find("rsp:Signal", NS)
        command_id = node.attrib.get("CommandId", "") if node is not None else ""
        code = (node.findtext("rsp:Code", "", NS) if node is not None else "").strip().lower()
        pipe = pool.pipes.get(uuid.UUID(command_id)) if command_id else None
        if pipe is None:
            raise wsman.command_not_found()
        if code in SIGNAL_PS_CTRL_C:
            if pipe.task is not None:
                pipe.task.cancel()
            if pipe.core.state == PSInvocationState.Running:
                pipe.core.stop()
                pipe.finished = True
                self._flush(pool)
        elif code == SIGNAL_TERMINATE.lower():  # pywinrm sends .../terminate, pypsrp .../Terminate
            if pipe.task is not None:
                pipe.task.cancel()
            pool.pipes.pop(pipe.id, None)
            pool.pipes.pop(pipe.core_id or pipe.id, None)
            pool.core.pipeline_table.pop(pipe.core_id or pipe.id, None)
        return wsman.envelope(request, wsman.ACTION_SIGNAL + "Response", [ET.Element(q("rsp", "SignalResponse"))])


def _fragments(data: bytes) -> list[bytes]:
    """PSRP fragments one by one (MS-PSRP 2.2.4: object id, fragment id, flags, length, blob)."""
    out: list[bytes] = []
    offset = 0
    while offset + 21 <= len(data):
        length = int.from_bytes(data[offset + 17:offset + 21], "big")
        out.append(data[offset:offset + 21 + length])
        offset += 21 + length
    if offset < len(data):
        out.append(data[offset:])
    return out


def _message_type(fragment: bytes) -> int | None:
    """The message type a start fragment begins (MS-PSRP 2.2.1), or None."""
    if len(fragment) < 21 + 8 or not fragment[16] & 1:
        return None
    return int.from_bytes(fragment[21 + 4:21 + 8], "little")


def _message_pipeline_id(fragment: bytes) -> uuid.UUID | None:
    """The pipeline id in the first PSRP message of a start fragment (MS-PSRP 2.2.4, 2.2.1), or None."""
    if len(fragment) < 21 + 40 or not fragment[16] & 1:
        return None
    pid = uuid.UUID(bytes_le=bytes(fragment[21 + 24:21 + 40]))
    return pid if pid.int else None


def commands_per_shell_quota() -> WSManFault:
    # pypsrp#148: after MaxConcurrentCommandsPerShell pipelines on one pool, closed or not (MS-WSMV
    # 3.1.4.12, note 118), Windows refuses the next Command; pypsrp shows "Code: w:InternalError",
    # so no WSManFault: the MSFT_WmiError shape, ERROR_WSMAN_QUOTA_MAX_COMMANDS_PER_SHELL_PPQ.
    return WSManFault(2150859241, "The WS-Management service cannot process the request. The maximum number of "
                                  "concurrent commands per shell has been exceeded. Retry the request later or raise "
                                  "the Maximum Commands per Shell quota. ",
                      subcode="w:InternalError", value="s:Receiver", wmi_error=True)


def to_ps(value: Any) -> Any:
    """A lab value as the object PowerShell would serialize."""
    if isinstance(value, PSObject):
        obj = CorePSObject()
        obj.PSObject.type_names = list(value.type_names)
        obj.PSObject.to_string = value.to_string
        for name, item in value.properties.items():
            add_note_property(obj, name, to_ps(item))
        return obj
    if isinstance(value, dict):
        custom = PSCustomObject()
        for name, item in value.items():
            add_note_property(custom, name, to_ps(item))
        return custom
    if isinstance(value, (list, tuple)):
        return [to_ps(item) for item in value]
    return value


def _error_record(info: ErrorInfo):  # type: ignore[no-untyped-def]
    from psrpcore.types import ErrorRecord

    exception = NETException(Message=info.message)
    exception.PSObject.type_names = [info.exception_type, *exception.PSTypeNames]
    return ErrorRecord(
        Exception=exception,
        CategoryInfo=ErrorCategoryInfo(
            Category=getattr(ErrorCategory, info.category, ErrorCategory.NotSpecified),
            Activity=info.command,
            Reason=info.exception_type.rsplit(".", 1)[-1],
            TargetName=info.target,
            TargetType="String" if info.target else "",
        ),
        FullyQualifiedErrorId=info.fqid,
    )


def _write_error(core: psrpcore.ServerPipeline, info: ErrorInfo) -> None:
    record = _error_record(info)
    core.write_error(record.Exception, record.CategoryInfo, info.target or None, info.fqid)
