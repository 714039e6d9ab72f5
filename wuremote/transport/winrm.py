"""WinRS (pywinrm): one cmd shell per host, a step sent on stdin behind the -EncodedCommand bootstrap.

Why each choice:
- ``powershell -Command -`` runs stdin line by line and ignores $ErrorActionPreference, and a
  script on the command line is capped at 8191 characters; so the constant bootstrap
  (ps_scripts/_winrs_bootstrap.ps1) goes as -EncodedCommand, and stdin carries line 1 = the
  parameters (base64 of UTF-8 JSON), line 2 = the prelude, then the step's body, run as one
  script block with the parameters bound: values never become code;
- the prelude travels once per host, not with every step: the first step stages it under the
  state folder (``stage <sha256> <base64>``), later ones name it (``staged <sha256>``) and the
  bootstrap uses the staged copy only when its sha256 matches; when it does not (deleted,
  changed), nothing of the step ran and the step is sent again with the prelude;
- the bootstrap reads stdin through a UTF-8 reader and sets [Console]::OutputEncoding to UTF-8
  itself: [Console]::In and Out otherwise follow the console's code page (Microsoft,
  "Console.InputEncoding", "Console.OutputEncoding"; about_PowerShell_exe for -Command -), which
  is the shell's WINRS_CODEPAGE only where the host honours it (GitLab Runner forced the same for
  the same reason: gitlab-runner!3707, !3728); an accent in a path or a localised caption survives;
- the result is the stdout line that starts with a fresh random marker (``ResultMarker``),
  so nothing else the script prints can pass for it; the exit code is the CommandState's;
- output is read with pywinrm's raw receive loop, one long poll at a time, so the deadline
  and the output cap apply between polls;
- the shell is reused across steps and deleted on close/reset, keeping within the per-user
  shell quota (30 by default).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import tenacity
import xmltodict
from winrm.exceptions import (
    AuthenticationError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from ..contract import StepResult
from ..contract.scripts import PRELUDE_NOT_STAGED_EXIT, StepScript, prelude_sha256, prelude_text, scripts_dir
from .base import StreamCallback, TransportError
from .common import Collector, TransportSettings, contract_problem, one_line
from .session import REAUTH_RETRY, Faults, Session, Unreadable, tune_session

BOOTSTRAP_FILE = "_winrs_bootstrap.ps1"
CODEPAGE_UTF8 = 65001
STDIN_CHUNK = 64 * 1024  # raw bytes per Send: well inside the default 150 KB envelope once base64-encoded
MAX_LINE_BYTES = 8 * 1024 * 1024  # a "line" longer than this is cut, so one endless line cannot fill memory
# pywinrm has no Negotiate; NTLM is what Negotiate falls back to without a domain ticket.
PYWINRM_AUTH = {"basic": "basic", "ntlm": "ntlm", "negotiate": "ntlm", "kerberos": "kerberos",
                "credssp": "credssp", "certificate": "certificate"}
ERROR_BUSY = 170  # "The requested resource is in use": a Send while the host still works on the one before
# pywinrm logs no message: -vv (wsman_trace) reads the SOAP envelopes here, in plain text (before
# message encryption, after decryption), as pypsrp's own "pypsrp.wsman" logger gives them for PSRP.
# No HTTP header is logged, so no Authorization token can reach the trace.
WSMAN_LOG = logging.getLogger("wuremote.winrs.wsman")
CLIXML_MARK = "#< CLIXML"
CLIXML_NS = "{http://schemas.microsoft.com/powershell/2004/04}"
_CLIXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
FAULTS = Faults(
    auth=AuthenticationError,
    fault=WSManFaultError,
    # Windows sends the operations quota as an MSFT_WmiError with no WSManFault (pywinrm's
    # test_wsman_fault_wmi_error_detail): pywinrm gives its code as wmierror_code.
    fault_code=("wsman_fault_code", "wmierror_code"),
    http=WinRMTransportError,
    poll_timeout=(WinRMOperationTimeoutError,),
    quoted=(Unreadable,),
    unreadable=(WinRMError, ET.ParseError, StopIteration, KeyError, AssertionError, binascii.Error, ValueError,
                RecursionError),
)


class _Protocol(Protocol):
    """pywinrm's Protocol; a sealed request answered 400 (HTTP.sys closed the idle connection and the
    body came on a new socket without a logon, as ansible-core's winrm plugin notes) logs on afresh
    (a new session sets up encryption first) and is sent again, once (REAUTH_RETRY).  Each envelope
    sent and received goes to WSMAN_LOG at debug level (what -vv shows)."""

    def send_message(self, message: str) -> bytes:
        if not WSMAN_LOG.isEnabledFor(logging.DEBUG):
            return self._send(message)
        WSMAN_LOG.debug("Sending message: %s", message)
        try:
            answer = self._send(message)
        except WinRMTransportError as exc:
            WSMAN_LOG.debug("Received HTTP %s: %s", exc.code, exc.response_text)
            raise
        WSMAN_LOG.debug("Received message: %s", answer.decode("utf-8", errors="replace"))
        return answer

    def _send(self, message: str) -> bytes:
        transport = self.transport

        def refused(exc: BaseException) -> bool:
            if not (isinstance(exc, WinRMTransportError) and exc.code == 400 and transport.encryption is not None):
                return False
            transport.close_session()
            transport.encryption = None
            return True

        for attempt in REAUTH_RETRY.copy(retry=tenacity.retry_if_exception(refused)):
            with attempt:
                return super().send_message(message)
        raise AssertionError("unreachable")  # pragma: no cover - the policy reraises


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, WSManFaultError) and exc.wsman_fault_code == ERROR_BUSY


# A Send answered ERROR_BUSY: three tries in all, waiting between (settings.send_busy_wait; Ansible waits 5 s).
SEND_BUSY_RETRY = tenacity.Retrying(stop=tenacity.stop_after_attempt(3), retry=tenacity.retry_if_exception(_busy),
                                    reraise=True)


def _receive(protocol: Protocol, shell_id: str, command_id: str) -> tuple[bytes, bytes, int, bool]:
    """One Receive: (stdout, stderr, exit code, done), refusing an answer that is not a Receive response.

    pywinrm's own reader takes an answer without a CommandState for "still running, nothing yet"
    and would poll such a host until the step's timeout; a bad stream or exit code is raised raw.
    """
    request = {"env:Envelope": protocol.build_wsman_header(
        resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
        action="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive", shell_id=shell_id)}
    stream = request["env:Envelope"].setdefault("env:Body", {}).setdefault("rsp:Receive", {}).setdefault("rsp:DesiredStream", {})
    stream["@CommandId"] = command_id
    stream["#text"] = "stdout stderr"
    root = ET.fromstring(protocol.send_message(xmltodict.unparse(request)))
    states = [node for node in root.iter() if node.tag.endswith("}CommandState")]
    if not states:
        raise Unreadable("the Receive answer has no CommandState")
    out: list[bytes] = []
    err: list[bytes] = []
    for node in root.iter():
        if node.tag.endswith("}Stream") and node.text:
            try:
                data = base64.b64decode(node.text.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                raise Unreadable(f"a {node.get('Name', '?')} stream is not base64") from None
            (out if node.get("Name") == "stdout" else err).append(data)
    done = any(state.get("State", "").endswith("CommandState/Done") for state in states)
    exit_code = -1
    if done:
        codes = [node.text for node in root.iter() if node.tag.endswith("}ExitCode")]
        try:
            exit_code = int(codes[0]) if codes and codes[0] else -1
        except ValueError:
            raise Unreadable(f"exit code {str(codes[0])[:20]!r} is not a number") from None
    return b"".join(out), b"".join(err), exit_code, done


@lru_cache(maxsize=1)
def bootstrap_arguments() -> tuple[str, ...]:
    """powershell.exe's arguments: the shipped bootstrap, UTF-16LE base64 as -EncodedCommand wants."""
    text = scripts_dir().joinpath(BOOTSTRAP_FILE).read_text(encoding="utf-8")
    return ("-NoProfile", "-NonInteractive", "-EncodedCommand", base64.b64encode(text.encode("utf-16-le")).decode("ascii"))


def stdin_for(payload: str, params: dict[str, Any], *, staged: bool) -> bytes:
    """What the bootstrap reads: base64 of the parameters' UTF-8 JSON, the prelude line (the staged
    copy's sha256, or the prelude itself to stage), then the payload, each after a newline."""
    head = base64.b64encode(json.dumps(params, ensure_ascii=False).encode("utf-8"))
    return head + b"\n" + prelude_line(staged) + b"\n" + payload.encode("utf-8")


@lru_cache(maxsize=2)
def prelude_line(staged: bool) -> bytes:
    """``staged <sha256>``, or ``stage <sha256> <base64 of the prelude's UTF-8 text>``."""
    if staged:
        return f"staged {prelude_sha256()}".encode("ascii")
    return f"stage {prelude_sha256()} ".encode("ascii") + base64.b64encode(prelude_text().encode("utf-8"))


class _Lines:
    """Splits a byte stream into text lines as chunks arrive."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.partial = b""

    def feed(self, data: bytes) -> None:
        self.partial += data
        *lines, self.partial = self.partial.split(b"\n")
        for line in lines:
            self.emit(line.decode("utf-8", errors="replace").rstrip("\r"))
        if len(self.partial) > MAX_LINE_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.partial:
            partial, self.partial = self.partial, b""
            self.emit(partial.decode("utf-8", errors="replace").rstrip("\r"))


def _unescape(text: str) -> str:
    return _CLIXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


class _Stderr:
    """stderr lines; the CLIXML that powershell.exe -EncodedCommand writes is decoded to readable text."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def line(self, text: str) -> None:
        if text.strip() == "#< CLIXML":
            return
        if text.startswith("<Objs"):
            try:
                self._clixml(ET.fromstring(text))
                return
            except ET.ParseError:
                pass  # not CLIXML after all: keep the text as it came
        if text.strip():
            self.collector.error(text, "stderr")

    def _clixml(self, root: ET.Element) -> None:
        errors: list[str] = []
        for node in root:
            kind = node.attrib.get("S", "")
            if node.tag == f"{CLIXML_NS}S":
                text = _unescape(node.text or "")
                if kind.lower() == "error":
                    errors.append(text)
                else:
                    self.collector.add(kind.lower() or "stderr", text.rstrip("\r\n"))
            elif node.tag == f"{CLIXML_NS}Obj" and kind == "progress":
                record = node.find(f"{CLIXML_NS}MS/{CLIXML_NS}PR")
                if record is not None:
                    percent = record.findtext(f"{CLIXML_NS}PC", "-1")
                    status = _unescape(record.findtext(f"{CLIXML_NS}SD", "") or "").strip()
                    text = f"{percent}% {status}".rstrip() if percent.lstrip("-").isdigit() and int(percent) >= 0 else status
                    self.collector.add("progress", text)
        if errors:
            block = "".join(errors).rstrip("\r\n")
            self.collector.error(block.replace("\r\n", "\n"), "stderr")


@dataclass(frozen=True)
class _Shell:
    """A cmd shell open on the host, and the client it was opened with."""

    protocol: Protocol
    id: str


class _Command:
    """One command in the shell: started, fed its stdin, read one long poll at a time, terminated.

    With a ``marker``, stdout lines that start with it are the step's result (the last one counts)."""

    def __init__(self, shell: _Shell, settings: TransportSettings, collector: Collector, command: str,
                 arguments: tuple[str, ...] = (), stdin: bytes | None = None, marker: str | None = None) -> None:
        self.shell, self.settings, self.collector = shell, settings, collector
        self.command, self.arguments, self.stdin = command, arguments, stdin
        self.prefix = marker + " " if marker is not None else None
        self.marked: list[str] = []
        self.stdout, self.stderr = _Lines(self._stdout_line), _Lines(_Stderr(collector).line)
        self.command_id: str | None = None
        self.done = False
        self.exit_code = -1

    def begin(self) -> None:
        protocol, shell_id = self.shell.protocol, self.shell.id
        stdin = self.stdin
        # Console mode off when stdin carries data, as ansible-core's winrm plugin runs its commands
        # (console_mode_stdin=(stdin_iterator is None)): the script is read as bytes, not console input.
        self.command_id = protocol.run_command(shell_id, self.command, self.arguments, console_mode_stdin=stdin is None)
        if stdin is not None:
            policy = SEND_BUSY_RETRY.copy(wait=tenacity.wait_fixed(self.settings.send_busy_wait))
            for start in range(0, len(stdin), STDIN_CHUNK):
                end = start + STDIN_CHUNK >= len(stdin)
                for attempt in policy:
                    with attempt:
                        self._send(stdin[start:start + STDIN_CHUNK], end)

    def _send(self, data: bytes, end: bool) -> None:
        """One Send.  Under load Windows may answer OperationTimeout although the input was delivered,
        and ERROR_BUSY (170) to the next Send while it still works on that one (ansible/ansible#81538):
        the first is taken as delivered, the second tried again (SEND_BUSY_RETRY), as Ansible does."""
        assert self.command_id is not None
        try:
            self.shell.protocol.send_command_input(self.shell.id, self.command_id, data, end=end)
        except WinRMOperationTimeoutError:
            return

    def poll(self, seconds: int) -> None:
        assert self.command_id is not None  # polled only after begin()
        self.shell.protocol.operation_timeout_sec = seconds
        try:
            out, err, self.exit_code, self.done = _receive(self.shell.protocol, self.shell.id, self.command_id)
        except WinRMOperationTimeoutError:
            return  # the long poll ended with nothing to say
        self.stdout.feed(out)
        self.stderr.feed(err)

    def finish(self) -> int:
        self.stdout.flush()
        self.stderr.flush()
        return self.exit_code

    def stop(self) -> None:
        """Nothing to send: close() signals terminate, which ends the process."""

    def close(self) -> None:
        """Signal terminate: ends the process if it still runs and frees the command on the host."""
        self.shell.protocol.operation_timeout_sec = self.settings.operation_timeout
        if self.command_id is not None:
            self.shell.protocol.cleanup_command(self.shell.id, self.command_id)

    def result(self) -> tuple[dict[str, Any] | None, str | None]:
        if not self.marked:
            return None, "no marked result line on stdout"
        try:
            result = json.loads(self.marked[-1])
        except json.JSONDecodeError as exc:
            return None, f"its result line is not JSON ({exc.msg})"
        except RecursionError:
            return None, "its result line nests too deep"
        if not isinstance(result, dict):
            return None, "its result line is not a JSON object"
        problem = contract_problem(result)
        return (None, problem) if problem else (result, None)

    def _stdout_line(self, text: str) -> None:
        # A UTF-8 BOM, a "#< CLIXML" line and the CLIXML document after it (a progress record
        # serialized to stdout, with no newline before what the script writes) are not the script's.
        bare = text.lstrip("\ufeff")
        if bare.strip() == CLIXML_MARK:
            return
        if bare.startswith("<Objs ") and "</Objs>" in bare:
            bare = bare[bare.index("</Objs>") + len("</Objs>"):]
        if self.prefix is not None and bare.startswith(self.prefix):
            self.marked.append(bare[len(self.prefix):])
        self.collector.add("stdout", text)


class WinRSTransport(Session[Protocol, _Shell]):
    """One host over WinRS: a cmd shell reused across steps, one terminated command per step or command."""

    faults = FAULTS
    noun = "shell"
    label = "WinRS"
    # Windows frees a WinRS shell's operations only when the shell is deleted (MS-WSMV 3.1.4.12, note
    # 118), and MaxConcurrentOperationsPerUser is 15 on 2008 R2 (1,500 later; pywinrm#124 meets it):
    # 12 commands, plus the requests in flight, stay under the smallest.
    commands_per_session = 12
    output_stream = "stdout"
    # Input travels in the parameter line the bootstrap reads with ConvertFrom-Json, which Windows
    # PowerShell 5.1 runs on JavaScriptSerializer with its default MaxJsonLength of 2,097,152 characters
    # (learn.microsoft.com/en-us/dotnet/api/system.web.script.serialization.javascriptserializer.maxjsonlength,
    # microsoft/azure-pipelines-tasks#952): 1 MB of bytes is 1.4 M characters of base64, well inside it.
    input_item_bytes = 96 * 1024
    input_run_bytes = 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The prelude is staged on the host (under %ProgramData%\wuremote, kept across shells and
        # restarts) once a step that carried it finished; until then every step carries it.
        self._staged = False

    def run_step(self, script: StepScript, params: dict[str, Any], *, timeout: float,
                 on_stream: StreamCallback | None = None, input: Iterable[str] | None = None) -> StepResult:
        """A step; sent again with the prelude, once, when the host's staged copy failed its check
        (nothing of the step ran: the bootstrap stops before it)."""
        staged = self._staged
        items = list(input) if input is not None else None  # kept for a second sending
        result = super().run_step(script, params, timeout=timeout, on_stream=on_stream, input=items)
        if staged and result.exit_code == PRELUDE_NOT_STAGED_EXIT and result.result is None:
            self._staged = False
            result = super().run_step(script, params, timeout=timeout, on_stream=on_stream, input=items)
        if result.result is not None:
            self._staged = True  # the step ran, so the bootstrap had the prelude; a stage left a copy
        return result

    # --- a step or a command ----------------------------------------------------------------
    def _step(self, shell: _Shell, script: StepScript, params: dict[str, Any], collector: Collector,
              input: Iterable[str] | None) -> _Command:
        marker = "WUREMOTE-RESULT-" + secrets.token_hex(12)
        bound = {**params, "ResultMarker": marker}
        if input is not None:  # a cmd shell has no pipeline: the items are bound by name, as -InputObject @(...)
            bound["InputObject"] = list(input)
        stdin = stdin_for(script.session_payload(), bound, staged=self._staged)
        return _Command(shell, self.settings, collector, "powershell.exe", bootstrap_arguments(), stdin, marker)

    def _command(self, shell: _Shell, command: str, collector: Collector) -> _Command:
        return _Command(shell, self.settings, collector, command)

    # --- the shell --------------------------------------------------------------------------
    def _client(self) -> Protocol:
        host, settings = self.connection, self.settings
        https = host.scheme == "https"
        address = f"[{host.address}]" if ":" in host.address else host.address
        validate = https and host.cert_validation
        try:
            protocol = _Protocol(
                f"{host.scheme}://{address}:{host.effective_port}/wsman",
                transport=PYWINRM_AUTH[host.auth],  # type: ignore[arg-type]  # a str from our table, pywinrm wants its Literal
                username=host.username,
                password=host.password.reveal() if host.password is not None else None,
                server_cert_validation="validate" if validate else "ignore",
                # None: the default CA store, never the environment's
                ca_trust_path=host.ca_file if validate else None,  # type: ignore[arg-type]  # pywinrm takes None
                cert_pem=host.cert_pem,
                cert_key_pem=host.cert_key_pem,
                read_timeout_sec=settings.read_timeout,
                operation_timeout_sec=settings.operation_timeout,
                message_encryption="auto",  # encrypted wherever the auth can (NTLM, Kerberos, CredSSP over HTTP)
                proxy=host.proxy,  # None: environment proxies ignored
            )
        except WinRMError as exc:
            raise TransportError("config", f"{self.host}: the WinRS client refused the settings: {one_line(exc)}") from None
        # pywinrm hands this straight to requests, which takes (connect, read): a dead address fails fast.
        protocol.transport.read_timeout_sec = (settings.connect_timeout, settings.read_timeout)  # type: ignore[assignment]
        transport = protocol.transport
        build = transport.build_session

        def built() -> Any:  # pywinrm calls it before every request: the session is tuned when it is new
            fresh = transport.session is None
            session = build()
            if fresh:
                tune_session(session, host)  # no environment lookups, one TLS context per CA file
            return session

        transport.build_session = built  # type: ignore[method-assign]
        return protocol

    def _release(self, client: Protocol) -> None:
        client.transport.close_session()

    def _open_on(self, client: Protocol) -> _Shell:
        return _Shell(client, client.open_shell(codepage=CODEPAGE_UTF8, noprofile=True))

    def _client_of(self, shell: _Shell) -> Protocol:
        return shell.protocol

    def _id_of(self, shell: _Shell) -> str | None:
        return shell.id

    def _delete(self, shell: _Shell) -> None:
        shell.protocol.close_shell(shell.id)

    def _delete_by_id(self, client: Protocol, session_id: str) -> None:
        client.close_shell(session_id)
