"""cmd.exe as the WinRS shell runs it: the command line limit, a few built-ins, and powershell.exe.

`to_records=True` is used when PowerShell runs a native program: its console text becomes
output records instead of raw stdout bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable

from .engine import Run
from .host import Host

CMD_LINE_LIMIT = 8191
NOT_RECOGNIZED = "'{0}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
POWERSHELL_NAMES = ("powershell", "powershell.exe", "pwsh", "pwsh.exe")
_PS_VALUE_OPTIONS = ("executionpolicy", "ep", "inputformat", "outputformat", "windowstyle", "configurationname", "version")
_PS_SWITCHES = ("noprofile", "nop", "noninteractive", "noni", "nologo", "mta", "sta")


def _write(run: Run, stream: str, text: str, to_records: bool) -> None:
    if to_records:
        for line in text.replace("\r\n", "\n").split("\n"):
            if line:
                run.emit("output" if stream == "stdout" else "native-stderr", line)
    else:
        run.emit(stream, text)


StdinReader = Callable[[], Awaitable[bytes]]


async def _no_stdin() -> bytes:
    return b""


async def run_command_line(
    host: Host, user: str, run: Run, line: str, read_stdin: StdinReader = _no_stdin, to_records: bool = False
) -> int:
    """Run one cmd.exe command line; returns the exit code (the caller finishes the run)."""
    if len(line) > CMD_LINE_LIMIT:
        _write(run, "stderr", "The command line is too long.\r\n", to_records)
        return 1
    if "&&" in line:  # cmd.exe runs the next command only when the one before exited 0
        code = 0
        for part in line.split("&&"):
            code = await run_command_line(host, user, run, part.strip(), read_stdin, to_records)
            if code != 0:
                break
        return code
    to_stderr = False
    if re.search(r"\s*(?:1?>&2)\s*$", line) and line.strip().lower().startswith("echo"):
        line, to_stderr = re.sub(r"\s*1?>&2\s*$", "", line), True  # `echo err>&2` (test_winrs_stderr_rc.yml)
    words = line.strip().split(None, 1)
    if not words:
        return 0
    program = words[0].strip('"').lower()
    rest = words[1] if len(words) > 1 else ""
    if program in ("hostname", "hostname.exe"):
        _write(run, "stdout", host.name + "\r\n", to_records)
        return 0
    if program in ("whoami", "whoami.exe"):
        _write(run, "stdout", f"{host.name.lower()}\\{user.lower()}\r\n", to_records)
        return 0
    if program == "echo":
        _write(run, "stderr" if to_stderr else "stdout", rest + "\r\n", to_records)
        return 0
    if program == "exit":
        match = re.fullmatch(r"(?:/b\s+)?(-?\d+)?", rest.strip(), re.I)
        return int(match.group(1)) if match and match.group(1) else 0
    if program in ("cmd", "cmd.exe"):
        match = re.match(r"/[ck]\s+(.*)", rest, re.I | re.S)
        if not match:
            return 0
        inner = match.group(1).strip()
        if len(inner) >= 2 and inner[0] == inner[-1] == '"':
            inner = inner[1:-1]
        return await run_command_line(host, user, run, inner, read_stdin, to_records)
    if program in ("shutdown", "shutdown.exe"):
        return _shutdown(host, run, rest, to_records)
    if program in POWERSHELL_NAMES:
        return await _powershell(host, user, run, rest, read_stdin)
    _write(run, "stderr", NOT_RECOGNIZED.format(words[0]), to_records)
    return 9009


def _shutdown(host: Host, run: Run, rest: str, to_records: bool) -> int:
    options = rest.lower().split()
    if "/r" not in options:
        _write(run, "stderr", "The parameter is incorrect.(87)\r\n", to_records)
        return 87
    delay = 30.0
    if "/t" in options:
        index = options.index("/t")
        try:
            delay = float(options[index + 1])
        except (IndexError, ValueError):
            _write(run, "stderr", "The parameter is incorrect.(87)\r\n", to_records)
            return 87
    if not host.request_reboot(delay):
        _write(run, "stderr", "A system shutdown has already been scheduled.(1190)\r\n", to_records)
        return 1190
    return 0


async def _powershell(host: Host, user: str, run: Run, rest: str, read_stdin: StdinReader) -> int:
    from . import console  # powershell.exe renders records as console text

    tokens = rest.split()
    i = 0
    while i < len(tokens):
        if tokens[i] == "-":  # `powershell.exe -` reads its commands from stdin (about_PowerShell_exe; test_winrs_send.yml)
            break
        option = tokens[i].lower().lstrip("-/")
        if option in _PS_SWITCHES:
            i += 1
            continue
        if option in _PS_VALUE_OPTIONS:
            i += 2
            continue
        if option in ("encodedcommand", "enc", "ec", "e", "en", "encoded", "encodedcomman"):
            if i + 1 >= len(tokens):
                return await console.fail_usage(run, "Missing argument for parameter EncodedCommand.")
            try:
                script = base64.b64decode(tokens[i + 1], validate=True).decode("utf-16-le")
            except (binascii.Error, UnicodeDecodeError):
                return await console.fail_usage(run, "Cannot process the command because the value specified with "
                                                     "-EncodedCommand is not properly encoded. The value must be Base64 encoded.")
            return await console.run_powershell_text(host, user, run, script, encoded=True, read_stdin=read_stdin)
        if option in ("command", "c"):
            remainder = " ".join(tokens[i + 1 :])
            if remainder.strip() == "-":
                text = (await read_stdin()).decode("utf-8", errors="replace")
                return await console.run_powershell_text(host, user, run, text, encoded=False, line_by_line=True)
            return await console.run_powershell_text(host, user, run, _unquote(remainder), encoded=False)
        # Anything else is the command text itself (powershell.exe's default parameter is -Command).
        return await console.run_powershell_text(host, user, run, _unquote(" ".join(tokens[i:])), encoded=False)
    text = (await read_stdin()).decode("utf-8", errors="replace")
    return await console.run_powershell_text(host, user, run, text, encoded=False, line_by_line=True)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text
