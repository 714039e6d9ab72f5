"""WinRS (pywinrm): one cmd shell per host, a step sent on stdin behind the -EncodedCommand bootstrap.

Why each choice:
- ``powershell -Command -`` runs stdin line by line and ignores $ErrorActionPreference, and a
  script on the command line is capped at 8191 characters; so the constant bootstrap
  (ps_scripts/_winrs_bootstrap.ps1) goes as -EncodedCommand, and stdin carries line 1 = the
  parameters (base64 of UTF-8 JSON) and then the payload, run as one script block with the
  parameters bound: values never become code;
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
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import winrm
import xmltodict
from winrm.exceptions import (
    AuthenticationError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)

from ..inventory import HostConfig
from ..contract.scripts import StepScript, scripts_dir
from ..contract import StepResult
from .base import StreamCallback, TransportError
from .common import (
    HostConnection,
    Unreadable,
    contract_problem,
    OPERATION_QUOTA_FAULT,
    OPERATION_TIMEOUT_FAULT,
    SHELL_NOT_FOUND_FAULT,
    Collector,
    Deadline,
    TransportSettings,
    auth_failed,
    network_error,
    one_line,
    open_with_retries,
)

BOOTSTRAP_FILE = "_winrs_bootstrap.ps1"
CODEPAGE_UTF8 = 65001
STDIN_CHUNK = 64 * 1024  # raw bytes per Send: well inside the default 150 KB envelope once base64-encoded
MAX_LINE_BYTES = 8 * 1024 * 1024  # a "line" longer than this is cut, so one endless line cannot fill memory
# pywinrm has no Negotiate; NTLM is what Negotiate falls back to without a domain ticket.
PYWINRM_AUTH = {"basic": "basic", "ntlm": "ntlm", "negotiate": "ntlm", "kerberos": "kerberos",
                "credssp": "credssp", "certificate": "certificate"}
CLIXML_NS = "{http://schemas.microsoft.com/powershell/2004/04}"
_CLIXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _receive(protocol: winrm.Protocol, shell_id: str, command_id: str) -> tuple[bytes, bytes, int, bool]:
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
            raise Unreadable(f"exit code {codes[0][:20]!r} is not a number") from None
    return b"".join(out), b"".join(err), exit_code, done


@lru_cache(maxsize=1)
def bootstrap_arguments() -> tuple[str, ...]:
    """powershell.exe's arguments: the shipped bootstrap, UTF-16LE base64 as -EncodedCommand wants."""
    text = scripts_dir().joinpath(BOOTSTRAP_FILE).read_text(encoding="utf-8")
    return ("-NoProfile", "-NonInteractive", "-EncodedCommand", base64.b64encode(text.encode("utf-16-le")).decode("ascii"))


def stdin_for(payload: str, params: dict[str, Any]) -> bytes:
    """What the bootstrap reads: base64 of the parameters' UTF-8 JSON, a newline, the payload."""
    head = base64.b64encode(json.dumps(params, ensure_ascii=False).encode("utf-8"))
    return head + b"\n" + payload.encode("utf-8")


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


class WinRSTransport(HostConnection):
    """One host over WinRS; used by one thread at a time (many transports run side by side)."""

    def __init__(self, host: HostConfig, settings: TransportSettings | None = None) -> None:
        super().__init__(host, settings)
        self._protocol: winrm.Protocol | None = None
        self._shell_id: str | None = None

    # --- the protocol ---------------------------------------------------------------------
    def run_step(self, script: StepScript, params: dict[str, Any], *, timeout: float,
                 on_stream: StreamCallback | None = None) -> StepResult:
        deadline = Deadline(timeout)
        step = script.meta.name
        collector = Collector(self.host, step, self.settings.output_cap, on_stream)
        marker = "WUREMOTE-RESULT-" + secrets.token_hex(12)
        prefix = marker + " "
        marked: list[str] = []

        def stdout_line(text: str) -> None:
            if text.startswith(prefix):
                marked.append(text[len(prefix):])
            collector.add("stdout", text)

        stdin = stdin_for(script.payload(), {**params, "ResultMarker": marker})
        exit_code = self._execute("powershell.exe", bootstrap_arguments(), stdin, deadline, collector,
                                  stdout_line, f"running step {step}")
        return collector.result(exit_code, self._result(step, marked, collector))

    def run_command(self, command: str, *, timeout: float) -> tuple[int, str]:
        deadline = Deadline(timeout)
        collector = Collector(self.host, "command", self.settings.output_cap)
        exit_code = self._execute(command, (), None, deadline, collector,
                                  lambda text: collector.add("stdout", text), "running a command")
        return exit_code, "\n".join(r.text for r in collector.streams if r.stream == "stdout")

    @property
    def session_id(self) -> str | None:
        return self._shell_id

    def close_orphan(self, session_id: str) -> bool:
        protocol = self._make_protocol()
        try:
            protocol.close_shell(session_id)
        except Exception as exc:  # noqa: BLE001 - the host answers "not found" for a shell already gone
            error = self._translate(exc, "deleting a shell left by a stopped run")
            if error.code is not None:
                return False
            raise error from None
        finally:
            protocol.transport.close_session()
        return True

    def reset(self) -> None:
        protocol, shell_id = self._protocol, self._shell_id
        self._protocol, self._shell_id = None, None
        if protocol is None:
            return
        try:
            if shell_id is not None:
                protocol.close_shell(shell_id)  # bounded by connect/read timeouts; refused at once if the host is down
        except Exception:  # deleting is a courtesy to the host's quota; a dead shell is simply forgotten
            pass
        finally:
            protocol.transport.close_session()

    def close(self) -> None:
        self.reset()

    # --- the shell ------------------------------------------------------------------------
    def _ensure_shell(self) -> tuple[winrm.Protocol, str]:
        if self._protocol is None or self._shell_id is None:
            self._protocol, self._shell_id = open_with_retries(self.settings, self._open_shell)
        return self._protocol, self._shell_id

    def _open_shell(self) -> tuple[winrm.Protocol, str]:
        protocol = self._make_protocol()
        try:
            return protocol, protocol.open_shell(codepage=CODEPAGE_UTF8, noprofile=True)
        except Exception as exc:
            protocol.transport.close_session()
            raise self._translate(exc, "opening a shell") from None

    def _make_protocol(self) -> winrm.Protocol:
        host, settings = self.config, self.settings
        https = host.scheme == "https"
        address = f"[{host.address}]" if ":" in host.address else host.address
        validate = https and host.cert_validation
        try:
            protocol = winrm.Protocol(
                f"{host.scheme}://{address}:{host.effective_port}/wsman",
                transport=PYWINRM_AUTH[host.auth],  # type: ignore[arg-type]
                username=host.username,
                password=host.password.reveal() if host.password is not None else None,
                server_cert_validation="validate" if validate else "ignore",
                ca_trust_path=host.ca_file if validate else None,  # None: the default CA store, never the environment's
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
        return protocol

    def _forget(self) -> None:
        """Drop the shell without talking to the host (it is gone or unreachable)."""
        protocol, self._protocol, self._shell_id = self._protocol, None, None
        if protocol is not None:
            protocol.transport.close_session()

    # --- one command ----------------------------------------------------------------------
    def _execute(self, command: str, arguments: tuple[str, ...], stdin: bytes | None, deadline: Deadline,
                 collector: Collector, stdout_line: Callable[[str], None], what: str) -> int:
        reused = self._shell_id is not None
        protocol, shell_id = self._ensure_shell()
        stdout, stderr = _Lines(stdout_line), _Lines(_Stderr(collector).line)
        command_id: str | None = None
        try:
            try:
                command_id = protocol.run_command(shell_id, command, arguments)
            except WSManFaultError as exc:
                if not reused or exc.wsman_fault_code != OPERATION_QUOTA_FAULT:
                    raise
                # The host refused the command before running it (its operations quota spent:
                # Windows frees a shell's operations only when the shell is deleted): nothing
                # ran, so a fresh shell takes it, once.
                self.reset()
                protocol, shell_id = self._ensure_shell()
                command_id = protocol.run_command(shell_id, command, arguments)
            if stdin is not None:
                for start in range(0, len(stdin), STDIN_CHUNK):
                    end = start + STDIN_CHUNK >= len(stdin)
                    protocol.send_command_input(shell_id, command_id, stdin[start:start + STDIN_CHUNK], end=end)
            while True:
                if deadline.passed:
                    raise TransportError("timeout", f"{self.host}: {what} did not finish within "
                                                    f"{deadline.timeout:g} s; it was stopped")
                protocol.operation_timeout_sec = deadline.poll_seconds(self.settings.operation_timeout)
                try:
                    out, err, exit_code, done = _receive(protocol, shell_id, command_id)
                except WinRMOperationTimeoutError:
                    continue  # the long poll ended with nothing to say
                stdout.feed(out)
                stderr.feed(err)
                if done:
                    break
            stdout.flush()
            stderr.flush()
            return exit_code
        except TransportError:
            raise
        except Exception as exc:
            error = self._translate(exc, what)
            if error.kind in ("lost", "unreachable", "protocol"):
                self._forget()
            raise error from None
        finally:
            protocol.operation_timeout_sec = self.settings.operation_timeout
            if command_id is not None and self._shell_id == shell_id:
                self._terminate(protocol, shell_id, command_id)

    def _terminate(self, protocol: winrm.Protocol, shell_id: str, command_id: str) -> None:
        """Signal terminate: ends the process if it still runs and frees the command on the host."""
        try:
            protocol.cleanup_command(shell_id, command_id)
        except Exception:  # the shell cannot take a signal: open a fresh one next time
            self._forget()

    def _result(self, step: str, marked: list[str], collector: Collector) -> dict[str, Any] | None:
        if not marked:
            collector.errors.append(f"{self.host}: step {step} broke the script contract: no marked result line on stdout")
            return None
        try:
            result = json.loads(marked[-1])
        except json.JSONDecodeError as exc:
            collector.errors.append(f"{self.host}: step {step} broke the script contract: its result line is not JSON ({exc.msg})")
            return None
        except RecursionError:
            collector.errors.append(f"{self.host}: step {step} broke the script contract: its result line nests too deep")
            return None
        if not isinstance(result, dict):
            collector.errors.append(f"{self.host}: step {step} broke the script contract: its result line is not a JSON object")
            return None
        problem = contract_problem(result)
        if problem:
            collector.errors.append(f"{self.host}: step {step} broke the script contract: {problem}")
            return None
        return result

    def _translate(self, exc: BaseException, what: str) -> TransportError:
        if isinstance(exc, TransportError):
            return exc
        if isinstance(exc, AuthenticationError):
            return auth_failed(self.config)
        if isinstance(exc, WSManFaultError):
            code = exc.wsman_fault_code
            if code == SHELL_NOT_FOUND_FAULT:
                return TransportError("lost", f"{self.host}: the shell is gone (host restarted or shell timed out) "
                                              f"while {what}", code=code)
            return TransportError("fault", f"{self.host}: WS-Management fault {code} while {what}: "
                                           f"{one_line(exc.reason)}", code=code)
        if isinstance(exc, WinRMOperationTimeoutError):
            return TransportError("fault", f"{self.host}: the WinRM service timed out while {what}", code=OPERATION_TIMEOUT_FAULT)
        if isinstance(exc, WinRMTransportError):
            return TransportError("fault", f"{self.host}: HTTP {exc.code} from the WinRM service while {what}")
        network = network_error(self.config, exc, what)
        if network is not None:
            return network
        if isinstance(exc, Unreadable):
            return TransportError("protocol", f"{self.host}: unreadable WinRS answer while {what}: {exc}")
        if isinstance(exc, (WinRMError, ET.ParseError, StopIteration, KeyError, AssertionError, binascii.Error,
                            ValueError, RecursionError)):
            return TransportError("protocol", f"{self.host}: unreadable WinRS answer while {what}: {type(exc).__name__}")
        raise exc
