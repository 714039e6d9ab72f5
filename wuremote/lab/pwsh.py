"""The small PowerShell vocabulary the lab understands, and the errors PowerShell gives for the rest.

Documented in the README ("The lab's plain commands").  A statement is one command with
literal arguments; anything else is answered with the CommandNotFoundException error
record PowerShell writes.  `line_by_line` reproduces `powershell -Command -` fed on
stdin, which runs each line on its own and ignores $ErrorActionPreference.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from .engine import ErrorInfo, PSObject, Run, Stop
from .host import Host

NOT_RECOGNIZED = (
    "The term '{0}' is not recognized as the name of a cmdlet, function, script file, or operable program. "
    "Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
)


@dataclass
class Session:
    """Per-run PowerShell state: the preference variables a statement can set."""

    host: Host
    user: str
    run: Run
    line_by_line: bool = False
    last_exit_code: int = 0
    # $? after the last statement: False once it wrote an error or a native program exited non-zero.
    succeeded: bool = True
    # A command PowerShell cannot find ends the pipeline (PSRP: state Failed, the error in
    # PIPELINE_STATE, as pypsrp's test_client_execute_ps_failure.yml recorded for execute_ps).
    not_found_terminates: bool = False
    prefs: dict[str, str] = field(
        default_factory=lambda: {
            "erroractionpreference": "Continue",
            "verbosepreference": "SilentlyContinue",
            "debugpreference": "SilentlyContinue",
            "warningpreference": "Continue",
        }
    )


def split_statements(text: str) -> list[str]:
    """Split on newlines and `;` outside quotes; drop comments."""
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    depth = 0  # inside { }: a block is one statement
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == quote:
                if i + 1 < len(text) and text[i + 1] == quote:
                    current.append(text[i + 1])
                    i += 1
                else:
                    quote = None
        elif ch in "'\"":
            quote = ch
            current.append(ch)
        elif ch == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif ch in "{}":
            depth += 1 if ch == "{" else -1
            current.append(ch)
        elif ch in ";\n" and depth <= 0:
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    statements.append("".join(current).strip())
    return [s for s in statements if s]


_IF = re.compile(r"if\s*\((.*?)\)\s*\{(.*)\}", re.S | re.I)
LAB_PS_VERSION = (5, 1, 17763, 1)  # $PSVersionTable.PSVersion of the lab's Windows PowerShell


def _condition(text: str) -> bool:
    """The few conditions the lab evaluates: $true, $false, and a PSVersion check such as Ansible's
    bootstrap makes (`$PSVersionTable.PSVersion -lt [Version]"5.1"`); anything else is the lab's limit."""
    text = text.strip()
    if text.lower() in ("$true", "$false"):
        return text.lower() == "$true"
    match = re.fullmatch(r"\$PSVersionTable\.PSVersion\s+-(lt|le|gt|ge|eq|ne)\s+\[Version\]\s*['\"]([\d.]+)['\"]", text, re.I)
    if match is None:
        raise ValueError(f"condition {text!r}")
    other = tuple(int(part) for part in match.group(2).split("."))
    mine = LAB_PS_VERSION[:len(other)]
    op = match.group(1).lower()
    return {"lt": mine < other, "le": mine <= other, "gt": mine > other, "ge": mine >= other,
            "eq": mine == other, "ne": mine != other}[op]


_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"`]|`.)*"|\S+""")


def tokenize(statement: str) -> list[str]:
    return _TOKEN.findall(statement)


def literal(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] == "'":
        return token[1:-1].replace("''", "'")
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return re.sub(r"`(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t", "0": "\0"}.get(m.group(1), m.group(1)), token[1:-1])
    return token


def is_literal(token: str) -> bool:
    return bool(re.fullmatch(r"""'(?:[^']|'')*'|"(?:[^"`$]|`.)*"|-?\d+(?:\.\d+)?""", token))


def bind(tokens: list[str], positional: list[str], switches: tuple[str, ...] = ()) -> dict[str, str | bool]:
    """Bind `-Name value` pairs and positional literals; names match on unambiguous prefixes."""
    bound: dict[str, str | bool] = {}
    names = positional + list(switches)
    pos = 0
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("-") and len(token) > 1 and not re.fullmatch(r"-\d+(\.\d+)?", token):
            raw = token[1:].rstrip(":").lower()
            matches = [n for n in names if n.lower().startswith(raw)]
            if len(matches) != 1:
                raise _ParameterError(token[1:])
            name = matches[0]
            if name in switches:
                bound[name] = True
                i += 1
                continue
            if i + 1 >= len(tokens):
                raise _ParameterError(token[1:], missing=True)
            bound[name] = literal(tokens[i + 1])
            i += 2
            continue
        if pos >= len(positional):
            raise _ParameterError(literal(token), positional=True)
        bound[positional[pos]] = literal(token)
        pos += 1
        i += 1
    return bound


class _ParameterError(Exception):
    def __init__(self, name: str, missing: bool = False, positional: bool = False) -> None:
        super().__init__(name)
        self.name = name
        self.missing = missing
        self.positional = positional


def _write_error(session: Session, info: ErrorInfo) -> None:
    session.succeeded = False
    if session.not_found_terminates and info.fqid == "CommandNotFoundException":
        raise Stop(1, info)
    if session.prefs["erroractionpreference"].lower() == "stop" and not session.line_by_line:
        raise Stop(1, info)
    session.run.emit("error", info)


def _stream_enabled(session: Session, pref: str, forced: bool) -> bool:
    return forced or session.prefs[pref].lower() == "continue"


def service_object(service) -> PSObject:  # type: ignore[no-untyped-def]
    return PSObject(
        ("System.ServiceProcess.ServiceController", "System.ComponentModel.Component", "System.Object"),
        {
            "Name": service.name,
            "DisplayName": service.display_name,
            "Status": service.status,
            "StartType": service.start_type,
        },
        "System.ServiceProcess.ServiceController",
    )


async def run_statement(session: Session, statement: str) -> None:
    session.succeeded = True
    host, run = session.host, session.run
    tokens = tokenize(statement)
    head = tokens[0]
    lower = head.lower()
    args = tokens[1:]

    assignment = re.fullmatch(r"\$(\w+)\s*=\s*(.+)", statement)
    if assignment and assignment.group(1).lower() in session.prefs:
        session.prefs[assignment.group(1).lower()] = literal(assignment.group(2).strip())
        return
    if lower == "exit":
        value = literal(args[0]) if args else "0"
        if value.lower() == "$lastexitcode":  # Ansible's psrp raw appends `exit $LASTEXITCODE`
            raise Stop(session.last_exit_code)
        if not re.fullmatch(r"-?\d+", value):
            raise ValueError(f"exit {value}")
        raise Stop(int(value))
    conditional = _IF.fullmatch(statement)
    if conditional:
        if _condition(conditional.group(1)):
            for inner in split_statements(conditional.group(2)):
                await run_statement(session, inner)
        return
    if is_literal(head) and len(tokens) == 1:
        value = literal(head)
        run.emit("output", int(value) if re.fullmatch(r"-?\d+", value) else value)
        return
    if lower in ("hostname", "hostname.exe"):
        run.emit("output", host.name)
        return
    if lower in ("whoami", "whoami.exe"):
        run.emit("output", f"{host.name.lower()}\\{session.user.lower()}")
        return
    if statement.strip().lower() == "$env:computername":
        run.emit("output", host.name)
        return
    if re.fullmatch(
        r"\(\s*get-ciminstance\s+(?:-classname\s+)?win32_operatingsystem\s*\)\.lastbootuptime", statement.strip(), re.I
    ):
        run.emit("output", host.state.last_boot.astimezone(dt.timezone.utc))
        return

    try:
        if lower in ("write-output", "echo"):
            for token in args:
                if re.fullmatch(r"-(?:i|in|inp|inpu|input|inputo|inputob|inputobj|inputobje|inputobjec|inputobject"
                                r"|noenumerate):?", token, re.I):
                    continue  # -InputObject X is the positional X; -NoEnumerate changes nothing for literals
                run.emit("output", literal(token))
            return
        if lower == "write-error":
            bound = bind(args, ["Message"], ("ErrorAction",))
            _write_error(session, ErrorInfo(str(bound.get("Message", ""))))
            return
        if lower == "write-warning":
            bound = bind(args, ["Message"])
            if session.prefs["warningpreference"].lower() != "silentlycontinue":
                run.emit("warning", str(bound.get("Message", "")))
            return
        if lower == "write-verbose":
            bound = bind(args, ["Message"], ("Verbose",))
            if _stream_enabled(session, "verbosepreference", bool(bound.get("Verbose"))):
                run.emit("verbose", str(bound.get("Message", "")))
            return
        if lower == "write-debug":
            bound = bind(args, ["Message"], ("Debug",))
            if _stream_enabled(session, "debugpreference", bool(bound.get("Debug"))):
                run.emit("debug", str(bound.get("Message", "")))
            return
        if lower == "write-information":
            bound = bind(args, ["MessageData", "Tags"])
            run.emit("information", str(bound.get("MessageData", "")))
            return
        if lower == "write-host":
            # Write-Host's -Object takes the remaining arguments: `Write-Host hi again` writes "hi again"
            # (pypsrp's test_winrs_operation_timeout.yml).
            words = [literal(t) for t in args if not re.fullmatch(r"-nonewline:?", t, re.I)]
            bound = bind(args[:1], ["Object"], ("NoNewline",)) if len(words) <= 1 else {"Object": " ".join(words)}
            run.emit("host", ("WriteLine", str(bound.get("Object", ""))))
            return
        if lower == "write-progress":
            bound = bind(args, ["Activity", "Status", "Id", "PercentComplete"], ("Completed",))
            percent = int(str(bound.get("PercentComplete", "-1")))
            run.emit("progress", (str(bound.get("Activity", "")), str(bound.get("Status", "Processing")), percent))
            return
        if lower == "start-sleep":
            bound = bind(args, ["Seconds", "Milliseconds"])
            await host.sleep(float(str(bound.get("Seconds", "0"))) + float(str(bound.get("Milliseconds", "0"))) / 1000)
            return
        if lower == "get-service":
            bound = bind(args, ["Name"])
            name = str(bound.get("Name", ""))
            service = host.state.services.get(name.lower())
            if service is None:
                _write_error(
                    session,
                    ErrorInfo(
                        f"Cannot find any service with service name '{name}'.",
                        category="ObjectNotFound",
                        fqid="NoServiceFoundForGivenName,Microsoft.PowerShell.Commands.GetServiceCommand",
                        exception_type="Microsoft.PowerShell.Commands.ServiceCommandException",
                        command="Get-Service",
                        target=name,
                    ),
                )
                return
            run.emit("output", service_object(service))
            return
        if lower == "restart-computer":
            bind(args, [], ("Force",))
            host.request_reboot(1.0)
            return
        if lower in ("shutdown", "shutdown.exe", "cmd", "cmd.exe"):
            from .cmd import run_command_line  # a native program run from PowerShell

            session.last_exit_code = await run_command_line(
                session.host, session.user, session.run, statement, to_records=True
            )
            session.succeeded = session.last_exit_code == 0
            return
    except _ParameterError as exc:
        if exc.positional:
            message = f"A positional parameter cannot be found that accepts argument '{exc.name}'."
            fqid = f"PositionalParameterNotFound,Microsoft.PowerShell.Commands.{head.replace('-', '')}Command"
        elif exc.missing:
            message = f"Missing an argument for parameter '{exc.name}'. Specify a parameter of type 'System.String' and try again."
            fqid = f"MissingArgument,Microsoft.PowerShell.Commands.{head.replace('-', '')}Command"
        else:
            message = f"A parameter cannot be found that matches parameter name '{exc.name}'."
            fqid = f"NamedParameterNotFound,Microsoft.PowerShell.Commands.{head.replace('-', '')}Command"
        _write_error(
            session,
            ErrorInfo(message, category="InvalidArgument", fqid=fqid,
                      exception_type="System.Management.Automation.ParameterBindingException", command=head),
        )
        return

    _write_error(
        session,
        ErrorInfo(
            NOT_RECOGNIZED.format(head),
            category="ObjectNotFound",
            fqid="CommandNotFoundException",
            exception_type="System.Management.Automation.CommandNotFoundException",
            command=head,
            target=head,
        ),
    )


async def run_script(session: Session, text: str) -> int:
    """Run `text` statement by statement; returns the exit code (raises nothing).

    Without an `exit`, powershell.exe -Command exits 0 when the last statement succeeded ($? true)
    and 1 when it failed (about_PowerShell_exe, -Command)."""
    code = 0
    try:
        for statement in split_statements(text):
            await run_statement(session, statement)
        if not session.succeeded and not session.line_by_line:
            code = 1
    except Stop as stop:
        if stop.failure is not None:
            session.run.finish(1, stop.failure)
            return 1
        code = stop.exit_code
    except Exception as exc:  # noqa: BLE001 - the lab's own limit: an error and exit 1, never a command that never ends
        session.run.finish(1, lab_failure(exc))
        return 1
    session.run.finish(code)
    return code


def lab_failure(exc: BaseException) -> ErrorInfo:
    """What the lab cannot model, as the error record that ends the script."""
    return ErrorInfo(f"The lab cannot run this ({type(exc).__name__}: {exc}).", category="NotImplemented",
                     fqid="LabNotImplemented", exception_type="System.NotImplementedException", command="")
