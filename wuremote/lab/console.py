"""powershell.exe in a console: PowerShell records rendered as the text a WinRS client receives.

With -EncodedCommand and redirected output, powershell.exe writes its error, warning,
verbose and progress streams to stderr as CLIXML (`#< CLIXML`), which pywinrm's
`run_ps` decodes; with -Command they are plain text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Awaitable, Callable
from xml.sax.saxutils import escape

from . import models
from .engine import ErrorInfo, PSObject, Record, Run
from .host import Host
from .pwsh import Session, run_script

CLIXML_HEAD = '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'


def format_value(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%A, %B %d, %Y %I:%M:%S %p").replace(" 0", " ")
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, PSObject):
        return format_table([value])
    if isinstance(value, dict):
        return "\r\n".join(f"{k:<15} {v}" for k, v in value.items())
    return str(value)


def format_table(objects: list[PSObject]) -> str:
    columns = ["Status", "Name", "DisplayName"] if "Status" in objects[0].properties else list(objects[0].properties)
    widths = {c: max(len(c), *(len(str(o.properties.get(c, ""))) for o in objects)) for c in columns}
    lines = ["", "  ".join(c.ljust(widths[c]) for c in columns), "  ".join(("-" * len(c)).ljust(widths[c]) for c in columns)]
    for obj in objects:
        lines.append("  ".join(str(obj.properties.get(c, "")).ljust(widths[c]) for c in columns))
    return "\r\n".join(line.rstrip() for line in lines) + "\r\n"


def format_error(info: ErrorInfo) -> str:
    exception = info.exception_type.rsplit(".", 1)[-1]
    target = info.target
    return (
        f"{info.command} : {info.message}\r\n"
        f"    + CategoryInfo          : {info.category}: ({target}:String) [{info.command}], {exception}\r\n"
        f"    + FullyQualifiedErrorId : {info.fqid}\r\n"
        "\r\n"
    )


# What CLIXML writes as _xHHHH_: characters XML cannot carry (controls, surrogates, U+FFFE/FFFF) and the
# "_" of a literal "_x", as PowerShell's serializer does (an escape sequence arrives as _x001B_ and a
# line break as _x000A_: PowerShell/PowerShell#16678).
_CLIXML_ENCODED = re.compile("[\x00-\x1f\ud800-\udfff\ufffe\uffff]|_(?=x)")


def _clixml_string(stream: str, text: str) -> str:
    encoded = _CLIXML_ENCODED.sub(lambda m: f"_x{ord(m.group()):04X}_", text)
    return f'<S S="{stream}">{escape(encoded)}</S>'


class ConsoleRenderer:
    """Turns records into console text as they arrive: stdout streams, CLIXML stderr is one document at the end."""

    def __init__(self, encoded: bool) -> None:
        self.encoded = encoded
        self.err_xml: list[str] = []

    def feed(self, record: Record) -> tuple[str, str]:
        kind, value = record.kind, record.value
        if kind == "output":
            return format_value(value) + ("" if isinstance(value, PSObject) else "\r\n"), ""
        if kind == "stdout":
            return value, ""
        if kind == "host":
            return value[1] + "\r\n", ""
        if kind == "stderr":
            return "", value
        if kind == "native-stderr":
            return "", value + "\r\n"
        if kind == "error":
            return "", self._error(value)
        if kind == "information":
            return f"{value}\r\n", ""
        if kind in ("warning", "verbose", "debug"):
            if self.encoded:
                self.err_xml.append(_clixml_string(kind, value + "\r\n"))
                return "", ""
            line = f"{kind.upper()}: {value}\r\n"
            return ("", line) if kind == "warning" else (line, "")
        return "", ""  # progress is not shown in a non-interactive console

    def _error(self, info: ErrorInfo) -> str:
        text = format_error(info)
        if not self.encoded:
            return text
        self.err_xml.extend(_clixml_string("Error", line + "\r\n") for line in text.rstrip("\r\n").split("\r\n"))
        return ""

    def finish(self, failure: ErrorInfo | None) -> str:
        tail = self._error(failure) if failure is not None else ""
        if self.encoded and self.err_xml:
            return CLIXML_HEAD + "".join(self.err_xml) + "</Objs>"
        return tail


async def run_powershell_text(
    host: Host,
    user: str,
    run: Run,
    text: str,
    *,
    encoded: bool,
    line_by_line: bool = False,
    read_stdin: Callable[[], Awaitable[bytes]] | None = None,
) -> int:
    """Run PowerShell text as powershell.exe would in a WinRS command; returns its exit code."""
    child = Run()
    known = None
    if read_stdin is not None and models.is_bootstrap(text):
        # The bootstrap sets [Console]::OutputEncoding to UTF-8, which Console.Out and Console.Error
        # encode with (Microsoft, "Console.OutputEncoding"): its text is UTF-8 whatever the shell's code page.
        run.console_encoding = "utf-8"
        known = models.recognize_winrs(await read_stdin(), host)
    if known is not None:
        work = asyncio.ensure_future(known.run(host, user, child))
    else:
        work = asyncio.ensure_future(run_script(Session(host, user, child, line_by_line=line_by_line), text))
    renderer = ConsoleRenderer(encoded)
    try:
        while not child.drained:
            await child.wait(3600)
            for record in child.take():
                stdout, stderr = renderer.feed(record)
                if stdout:
                    run.emit("stdout", stdout)
                if stderr:
                    run.emit("stderr", stderr)
        code = await work
    finally:
        work.cancel()
    tail = renderer.finish(child.failure)
    if tail:
        run.emit("stderr", tail)
    return code


async def fail_usage(run: Run, message: str) -> int:
    run.emit("stderr", message + "\r\n")
    return 64
