"""The WinRS shell (resource .../windows/shell/cmd): Create, Command, Send, Receive, Signal, Delete.

Shells belong to the host's current boot; a reboot removes them and later requests get
the real "shell not found" fault.  Receive is a long poll that ends with output, with the
command's end, or with the OperationTimeout fault the clients retry.
"""

from __future__ import annotations

import asyncio
import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from . import wsman
from .cmd import run_command_line
from .engine import Record, Run
from .host import Host
from .wsman import NS, Request, WSManFault, q

MAX_SHELLS_PER_USER = 30  # winrm/config/winrs MaxShellsPerUser default
SIGNAL_CTRL_C = wsman.SIGNAL_PREFIX + "ctrl_c"
SIGNAL_TERMINATE = wsman.SIGNAL_PREFIX + "terminate"
CODEPAGES = {437: "cp437", 65001: "utf-8", 850: "cp850", 1252: "cp1252"}
STATUS_CONTROL_C_EXIT = -1073741510


@dataclass
class Command:
    id: str
    line: str
    run: Run = field(default_factory=Run)
    stdin: bytearray = field(default_factory=bytearray)
    stdin_done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    prefixed: bool = False

    async def read_stdin(self) -> bytes:
        await self.stdin_done.wait()
        return bytes(self.stdin)


@dataclass
class Shell:
    id: str
    owner: str
    codepage: int
    environment: dict[str, str]
    commands: dict[str, Command] = field(default_factory=dict)


class WinRSService:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.shells: dict[str, Shell] = {}
        # WINRS_CONSOLEMODE_STDIN of each Command, as sent (pywinrm sends TRUE unless told otherwise;
        # ansible-core's winrm plugin sends FALSE when it feeds stdin): tests read what clients ask for.
        self.console_modes: list[str] = []
        # Bytes powershell.exe may write before anything else on stdout: a UTF-8 BOM when the console's
        # output encoding is UTF-8 with a preamble, "#< CLIXML" when a record is serialized there
        # (ansible-core's powershell shell plugin strips both before it reads a module's JSON).
        self.stdout_prefix = b""
        host.on_down(self.drop_all)

    async def drop_all(self) -> None:
        for shell in self.shells.values():
            for command in shell.commands.values():
                if command.task is not None:
                    command.task.cancel()
        self.shells.clear()

    def _shell(self, request: Request) -> Shell:
        shell = self.shells.get(request.selectors.get("ShellId", "").upper())
        if shell is None:
            raise wsman.shell_not_found(request.selectors.get("ShellId", ""))
        return shell

    async def handle(self, request: Request, user: str) -> bytes:
        action = request.action
        if action == wsman.ACTION_CREATE:
            return self.create(request, user)
        if action == wsman.ACTION_DELETE:
            return await self.delete(request)
        if action == wsman.ACTION_COMMAND:
            return self.command(request, user)
        if action == wsman.ACTION_SEND:
            return self.send(request)
        if action == wsman.ACTION_RECEIVE:
            return await self.receive(request)
        if action == wsman.ACTION_SIGNAL:
            return await self.signal(request)
        raise wsman.action_not_supported(action)

    def create(self, request: Request, user: str) -> bytes:
        wsman.check_shell_quota([shell.owner for shell in self.shells.values()], user, MAX_SHELLS_PER_USER)
        codepage_text = request.options.get("WINRS_CODEPAGE", "437")
        codepage = int(codepage_text) if codepage_text.isdigit() else 437
        if codepage not in CODEPAGES:
            raise WSManFault(2150859048, f"The WinRS client cannot process the request. The code page {codepage} is not supported. ",
                             subcode="w:InvalidOptions", value="s:Sender")
        environment = {
            node.attrib.get("Name", ""): node.text or ""
            for node in request.body.findall("rsp:Shell/rsp:Environment/rsp:Variable", NS)
        }
        shell = Shell(wsman.new_id(), user, codepage, environment)
        self.shells[shell.id] = shell
        return wsman.shell_created(request, shell.id, [
            ("ResourceUri", request.resource_uri),
            ("Owner", f"{self.host.name}\\{user}"),
            ("ClientIP", "127.0.0.1"),
            ("IdleTimeOut", "PT7200.000S"),
            ("InputStreams", "stdin"),
            ("OutputStreams", "stdout stderr"),
            ("ShellRunTime", "P0DT0H0M0S"),
            ("ShellInactivity", "P0DT0H0M0S"),
        ])

    async def delete(self, request: Request) -> bytes:
        shell = self._shell(request)
        for command in shell.commands.values():
            if command.task is not None:
                command.task.cancel()
        del self.shells[shell.id]
        return wsman.envelope(request, wsman.ACTION_DELETE + "Response")

    def command(self, request: Request, user: str) -> bytes:
        shell = self._shell(request)
        node = request.body.find("rsp:CommandLine", NS)
        if node is None:
            raise wsman.invalid_message("The WS-Management service cannot process the request. The Command body has no CommandLine. ")
        executable = (node.findtext("rsp:Command", "", NS) or "").strip()
        arguments = [a.text or "" for a in node.findall("rsp:Arguments", NS)]
        line = " ".join([executable, *arguments]).strip()
        if len(self.console_modes) < 1000:
            self.console_modes.append(request.options.get("WINRS_CONSOLEMODE_STDIN", "").upper())
        command = Command(request.selectors.get("CommandId") or wsman.new_id(), line)
        shell.commands[command.id] = command
        command.task = asyncio.get_running_loop().create_task(self._execute(command, user))
        response = ET.Element(q("rsp", "CommandResponse"))
        ET.SubElement(response, q("rsp", "CommandId")).text = command.id
        return wsman.envelope(request, wsman.ACTION_COMMAND + "Response", [response])

    async def _execute(self, command: Command, user: str) -> None:
        try:
            code = await run_command_line(self.host, user, command.run, command.line, command.read_stdin)
        except asyncio.CancelledError:
            command.run.finish(STATUS_CONTROL_C_EXIT)
            raise
        command.run.finish(code)

    def send(self, request: Request) -> bytes:
        shell = self._shell(request)
        for node in request.body.findall("rsp:Send/rsp:Stream", NS):
            command = shell.commands.get((node.attrib.get("CommandId") or "").upper())
            if command is None:
                raise wsman.command_not_found()
            if node.text:
                command.stdin.extend(base64.b64decode(node.text))
            if node.attrib.get("End", "").lower() == "true":
                command.stdin_done.set()
        return wsman.envelope(request, wsman.ACTION_SEND + "Response", [ET.Element(q("rsp", "SendResponse"))])

    async def receive(self, request: Request) -> bytes:
        shell = self._shell(request)
        desired = request.body.find("rsp:Receive/rsp:DesiredStream", NS)
        command_id = (desired.attrib.get("CommandId", "") if desired is not None else "").upper()
        command = shell.commands.get(command_id)
        if command is None:
            raise wsman.command_not_found()
        run = command.run
        await run.wait(request.operation_timeout)
        budget = max(1024, (request.max_envelope_size - 2048) * 3 // 4)
        chunks: list[tuple[str, bytes]] = []
        size = 0
        encoding = run.console_encoding or CODEPAGES[shell.codepage]
        while size < budget:
            records = run.take(1)
            if not records:
                break
            record = records[0]
            if record.kind not in ("stdout", "stderr"):
                continue
            data = record.value.encode(encoding, errors="replace") if isinstance(record.value, str) else record.value
            if record.kind == "stdout" and not command.prefixed and command.line.lower().startswith("powershell"):
                command.prefixed = True
                data = self.stdout_prefix + data
            if size + len(data) > budget:
                head, rest = data[: budget - size], data[budget - size :]
                run.push_back(Record(record.kind, rest))
                data = head
            chunks.append((record.kind, data))
            size += len(data)
        if not chunks and not run.drained:
            raise wsman.operation_timeout()
        response = ET.Element(q("rsp", "ReceiveResponse"))
        for name, data in chunks:
            stream = ET.SubElement(response, q("rsp", "Stream"), {"Name": name, "CommandId": command.id})
            stream.text = base64.b64encode(data).decode("ascii")
        if run.drained:
            for name in ("stdout", "stderr"):
                ET.SubElement(response, q("rsp", "Stream"), {"Name": name, "CommandId": command.id, "End": "true"})
            state = ET.SubElement(response, q("rsp", "CommandState"), {"CommandId": command.id, "State": wsman.COMMAND_STATE_DONE})
            ET.SubElement(state, q("rsp", "ExitCode")).text = str(run.exit_code)
        else:
            ET.SubElement(response, q("rsp", "CommandState"), {"CommandId": command.id, "State": wsman.COMMAND_STATE_RUNNING})
        return wsman.envelope(request, wsman.ACTION_RECEIVE + "Response", [response])

    async def signal(self, request: Request) -> bytes:
        shell = self._shell(request)
        node = request.body.find("rsp:Signal", NS)
        command_id = (node.attrib.get("CommandId", "") if node is not None else "").upper()
        code = (node.findtext("rsp:Code", "", NS) if node is not None else "").strip().lower()
        command = shell.commands.get(command_id)
        if command is None:
            raise wsman.command_not_found()
        if command.task is not None and not command.task.done():
            command.task.cancel()
        if code == SIGNAL_TERMINATE or command.run.done:
            shell.commands.pop(command.id, None)
        response = ET.Element(q("rsp", "SignalResponse"))
        return wsman.envelope(request, wsman.ACTION_SIGNAL + "Response", [response])
