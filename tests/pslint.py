"""A lint over tree-sitter-powershell syntax trees that enforces the step-script contract.

Rules (each finding names its rule, line and what to write instead):

  header          a step script starts with a metadata header wuremote.contract.scripts can parse
  cmdletbinding   the script's param() block carries [CmdletBinding()]
  params          every script parameter is typed; [string]$RunId and [string]$ResultMarker exist
  prelude         a step script has the '# wuremote-prelude' line after param();
                  the prelude itself sets $ErrorActionPreference = 'Stop'
  alias           no command aliases (gci, %, ?, select, where, ...): full cmdlet names
  write-host      no Write-Host (data goes to the result object, narration to Write-Verbose)
  invoke-expression  no Invoke-Expression / [scriptblock]::Create: parameters are never code
  windows-path    no literal C:\\Windows: use $env:SystemRoot
  silently-continue  -ErrorAction SilentlyContinue (or the preference) only with a comment
                  on the same or the previous line saying why
  ps7             no PowerShell 7-only syntax: ?: ternary, ??, ??=, ?., &&, ||,
                  ForEach-Object -Parallel (Windows PowerShell 5.1 is the target)
  ends-with-complete  a step script's last statement is Complete-WuStep (its end block's, when it has
                  begin/process/end blocks)
  pester-mock     (tests/ps only, check_pester_mocks) every mocked command exists when Mock runs:
                  a function of the test file or _helpers.ps1, a prelude function _helpers.ps1
                  loads, or a cmdlet every Windows PowerShell 5.1 runner has; and Mock is called
                  inside BeforeAll/BeforeEach/It or a function (Pester 5 refuses it elsewhere)

Usage: python tests/pslint.py FILE... (exit status 1 when anything is found).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tree_sitter_powershell
from tree_sitter import Language, Node, Parser

from wuremote.contract.scripts import PRELUDE_PLACEHOLDER, ScriptHeaderError, parse_header

ALIASES = frozenset(
    a.lower()
    for a in ["%", "?", "ac", "asnp", "cat", "cd", "chdir", "clc", "clear", "clhy", "cli", "clp", "cls", "clv", "cnsn", "compare", "copy", "cp", "cpi", "cpp", "curl", "cvpa", "dbp", "del", "diff", "dir", "dnsn", "ebp", "echo", "epal", "epcsv", "epsn", "erase", "etsn", "exsn", "fc", "fhx", "fl", "foreach", "ft", "fw", "gal", "gbp", "gc", "gcb", "gci", "gcm", "gcs", "gdr", "ghy", "gi", "gjb", "gl", "gm", "gmo", "gp", "gps", "gpv", "group", "gsn", "gsnp", "gsv", "gu", "gv", "gwmi", "h", "history", "icm", "iex", "ihy", "ii", "ipal", "ipcsv", "ipmo", "ipsn", "irm", "ise", "iwmi", "iwr", "kill", "lp", "ls", "man", "md", "measure", "mi", "mount", "move", "mp", "mv", "nal", "ndr", "ni", "nmo", "npssc", "nsn", "nv", "ogv", "oh", "popd", "ps", "pushd", "pwd", "r", "rbp", "rcjb", "rcsn", "rd", "rdr", "ren", "ri", "rjb", "rm", "rmdir", "rmo", "rni", "rnp", "rp", "rsn", "rsnp", "rujb", "rv", "rvpa", "rwmi", "sajb", "sal", "saps", "sasv", "sbp", "sc", "select", "set", "shcm", "si", "sl", "sleep", "sls", "sort", "sp", "spjb", "spps", "spsv", "start", "sujb", "sv", "swmi", "tee", "trcm", "type", "wget", "where", "wjb", "write"]
)

PS7_TOKENS = {"&&", "||"}


@dataclass(frozen=True)
class Finding:
    rule: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.line}: [{self.rule}] {self.message}"


@lru_cache(maxsize=1)
def parser() -> Parser:
    return Parser(Language(tree_sitter_powershell.language()))


def parse(text: str):
    return parser().parse(text.encode("utf-8"))


def syntax_errors(text: str) -> list[Finding]:
    """ERROR and MISSING nodes: what the grammar could not read."""
    found: list[Finding] = []

    def walk(node: Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            kind = "missing" if node.is_missing else "error"
            snippet = node.text.decode("utf-8", "replace")[:60]
            found.append(Finding("syntax", node.start_point[0] + 1, f"{kind} node at {snippet!r}"))
            return
        for child in node.children:
            walk(child)

    walk(parse(text).root_node)
    return found


def _walk(node: Node):
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def _text(node: Node) -> str:
    return node.text.decode("utf-8", "replace")


def _comment_lines(root: Node) -> set[int]:
    lines: set[int] = set()
    for node in _walk(root):
        # The contract's marker lines are not reasons for anything.
        if node.type == "comment" and not _text(node).startswith(("# wuremote-", "# end-wuremote-")):
            lines.update(range(node.start_point[0] + 1, node.end_point[0] + 2))
    return lines


def _command_name(command: Node) -> str | None:
    for child in command.children:
        if child.type == "command_name":
            return _text(child)
    return None


def _command_parameters(command: Node) -> list[str]:
    return [_text(n).lower() for n in _walk(command) if n.type == "command_parameter"]


def lint_syntax_rules(text: str) -> list[Finding]:
    """Rules for any PowerShell text (step scripts, the prelude, Pester files, embedded runners)."""
    root = parse(text).root_node
    comments = _comment_lines(root)
    found: list[Finding] = []
    silently_lines: set[int] = set()
    for node in _walk(root):
        line = node.start_point[0] + 1
        if node.type == "command":
            name = _command_name(node)
            lowered = (name or "").lower()
            if lowered in ALIASES:
                found.append(Finding("alias", line, f"alias {name!r}: write the full cmdlet name"))
            if lowered == "write-host":
                found.append(Finding("write-host", line, "Write-Host: return data in the result, narrate with Write-Verbose"))
            if lowered in ("invoke-expression", "iex"):
                found.append(Finding("invoke-expression", line, "Invoke-Expression: pass values as parameters, never as code"))
            if lowered in ("foreach-object", "%", "foreach") and "-parallel" in _command_parameters(node):
                found.append(Finding("ps7", line, "ForEach-Object -Parallel is PowerShell 7 only"))
        elif node.type == "-parallel":
            found.append(Finding("ps7", line, "-Parallel is PowerShell 7 only (or a workflow keyword)"))
        elif node.type in PS7_TOKENS or (node.type == "pipeline_chain_tail"):
            if node.type == "pipeline_chain_tail":
                found.append(Finding("ps7", line, "&& / || pipeline chains are PowerShell 7 only: use if ($LASTEXITCODE ...)"))
        elif node.type == "ERROR" and (node.parent is None or node.parent.type != "ERROR"):
            snippet = _text(node)
            following = _text(node.next_sibling)[:1] if node.next_sibling is not None else ""
            if "??" in snippet:
                found.append(Finding("ps7", line, "?? / ??= are PowerShell 7 only: use if ($null -eq ...)"))
            elif "?." in snippet or (snippet.endswith("?") and following == "."):
                found.append(Finding("ps7", line, "?. (null-conditional member access) is PowerShell 7 only"))
            elif "?" in snippet:
                found.append(Finding("ps7", line, "ternary ?: is PowerShell 7 only: use if/else"))
        if node.child_count == 0 or node.type in (
            "expandable_string_literal",
            "expandable_here_string_literal",
            "verbatim_string_characters",
            "verbatim_here_string_characters",
            "generic_token",
        ):
            if node.type == "comment":
                continue
            value = _text(node)
            if re.search(r"(?i)\b[a-z]:\\windows\b", value):
                found.append(Finding("windows-path", line, "literal C:\\Windows: use $env:SystemRoot"))
            if "silentlycontinue" in value.lower():
                silently_lines.add(line)
        if node.type == "invokation_expression" and re.match(r"(?i)\[(system\.management\.automation\.)?scriptblock\]\s*::\s*create\b", _text(node)):
            found.append(Finding("invoke-expression", line, "[scriptblock]::Create turns text into code"))
    for line in sorted(silently_lines):
        if line not in comments and (line - 1) not in comments:
            found.append(
                Finding("silently-continue", line, "SilentlyContinue needs a comment on this or the previous line saying why")
            )
    # Duplicates arise where a string node and its characters both match.
    unique: dict[tuple[str, int, str], Finding] = {}
    for finding in found:
        unique.setdefault((finding.rule, finding.line, finding.message), finding)
    return sorted(unique.values(), key=lambda f: (f.line, f.rule))


def _param_block(root: Node) -> Node | None:
    for child in root.children:
        if child.type == "param_block":
            return child
    return None


def lint_step_script(text: str, source: str = "<script>") -> list[Finding]:
    """Every rule, for a shipped step script."""
    found = list(lint_syntax_rules(text))
    try:
        parse_header(text, source=source)
    except ScriptHeaderError as error:
        found.append(Finding("header", 1, str(error)))

    root = parse(text).root_node
    block = _param_block(root)
    if block is None:
        found.append(Finding("params", 1, "no script-level param() block"))
        found.append(Finding("cmdletbinding", 1, "no [CmdletBinding()] param() block"))
    else:
        attributes = [
            _text(n).lower()
            for n in block.children
            if n.type == "attribute_list"
            for n in _walk(n)
            if n.type == "attribute_name"
        ]
        if "cmdletbinding" not in attributes:
            found.append(Finding("cmdletbinding", block.start_point[0] + 1, "param() block lacks [CmdletBinding()]"))
        typed: dict[str, str] = {}
        for parameter in (n for n in _walk(block) if n.type == "script_parameter"):
            variable = next((c for c in parameter.children if c.type == "variable"), None)
            name = _text(variable).lstrip("$").lower() if variable is not None else "?"
            types = [
                _text(t).lower()
                for t in _walk(parameter)
                if t.type == "type_literal" and t.parent is not None and t.parent.type == "attribute"
            ]
            if not types:
                found.append(Finding("params", parameter.start_point[0] + 1, f"parameter ${name} has no type: write [type]${name}"))
            typed[name] = types[0] if types else ""
        for required in ("runid", "resultmarker"):
            if typed.get(required) != "[string]":
                found.append(
                    Finding("params", block.start_point[0] + 1, f"param() lacks [string]${'RunId' if required == 'runid' else 'ResultMarker'} = ''")
                )

    lines = [line.strip() for line in text.splitlines()]
    if PRELUDE_PLACEHOLDER not in lines:
        found.append(Finding("prelude", 1, f"no '{PRELUDE_PLACEHOLDER}' line after param()"))
    elif block is not None and lines.index(PRELUDE_PLACEHOLDER) < block.end_point[0]:
        found.append(Finding("prelude", lines.index(PRELUDE_PLACEHOLDER) + 1, "the prelude line must come after param()"))

    statements = [n for n in root.children if n.type == "statement_list"]
    last = statements[-1].named_children[-1] if statements and statements[-1].named_children else None
    commands = [n for n in _walk(last) if n.type == "command"] if last is not None else []
    if commands and (_command_name(commands[0]) or "").lower() == "end":
        # A script with begin/process/end blocks (one that takes pipeline input): its end block's last statement.
        body = next((n for n in _walk(commands[0]) if n.type == "script_block"), None)
        inner = [n for n in _walk(body) if n.type == "statement_list"][:1] if body is not None else []
        last = inner[-1].named_children[-1] if inner and inner[-1].named_children else last
        commands = [n for n in _walk(last) if n.type == "command"] if last is not None else []
    if not commands or (_command_name(commands[0]) or "").lower() != "complete-wustep":
        line = last.start_point[0] + 1 if last is not None else 1
        found.append(Finding("ends-with-complete", line, "the last statement must be Complete-WuStep"))
    return sorted(found, key=lambda f: (f.line, f.rule))


def lint_prelude(text: str) -> list[Finding]:
    found = list(lint_syntax_rules(text))
    if not re.search(r"(?im)^\s*\$ErrorActionPreference\s*=\s*'Stop'", text):
        found.append(Finding("prelude", 1, "the prelude must set $ErrorActionPreference = 'Stop'"))
    return found


def lint_file(path: Path) -> list[Finding]:
    text = path.read_text(encoding="utf-8")
    errors = syntax_errors(text)
    if path.name.endswith(".Tests.ps1") or path.parent.name == "ps":
        return errors + lint_syntax_rules(text)
    if path.name.startswith("_"):
        return errors + lint_prelude(text)
    return errors + lint_step_script(text, source=str(path))


# Cmdlets of the modules every Windows PowerShell 5.1 on Windows Server 2016+ has (Microsoft's
# module reference, learn.microsoft.com/powershell/module/?view=powershell-5.1: Microsoft.PowerShell.
# Management/.Utility/.Security/.Core, CimCmdlets, ScheduledTasks).  Defender's and the
# troubleshooting pack's cmdlets are left out on purpose: a runner may lack those modules, so
# _helpers.ps1 must stub them before they can be mocked.
REAL_CMDLETS = frozenset(c.lower() for c in [
    "Get-AuthenticodeSignature", "Get-ChildItem", "Get-CimInstance", "Get-Command", "Get-Content", "Get-Date",
    "Get-HotFix", "Get-Item", "Get-ItemProperty", "Get-Module", "Get-Process", "Get-Service", "Get-WinEvent",
    "Import-Module", "Join-Path", "New-Item", "New-Object", "Remove-Item", "Rename-Item", "Move-Item", "Copy-Item",
    "Set-Acl", "Get-Acl", "Set-Content", "Set-Service", "Start-Process", "Start-Service", "Start-Sleep",
    "Start-Transcript", "Stop-Process", "Stop-Service", "Stop-Transcript", "Test-Path", "Get-ScheduledTask",
    "Get-ScheduledTaskInfo", "Register-ScheduledTask", "Start-ScheduledTask", "Stop-ScheduledTask",
    "Unregister-ScheduledTask", "New-ScheduledTaskAction", "New-ScheduledTaskTrigger", "New-ScheduledTaskPrincipal",
    "New-ScheduledTaskSettingsSet", "Get-ExecutionPolicy", "Invoke-WebRequest", "Get-FileHash",
])
# What Pester 5 accepts as the place of a Mock call (src/Pester.RSpec.ps1: Mock records into the
# current block or test; outside them it throws).
_MOCK_HOSTS = frozenset({"beforeall", "beforeeach", "it", "aftereach", "afterall"})
# _helpers.ps1 loads the prelude's functions when it parses the prelude and dot-sources them.
_LOADS_PRELUDE = re.compile(r"Parser\]::ParseFile\(\$script:PreludeFile.*FunctionDefinitionAst.*"
                            r"Set-Item -Path \('function:script:", re.S)


def defined_functions(text: str) -> set[str]:
    """Names (lower case) of every function a PowerShell text defines, at any depth."""
    root = parse(text).root_node
    names = set()
    for node in _walk(root):
        if node.type == "function_statement":
            for child in node.children:
                if child.type == "function_name":
                    names.add(_text(child).lower())
    return names


def _mocked_command(command: Node) -> str | None:
    elements = next((c for c in command.children if c.type == "command_elements"), None)
    if elements is None:
        return None
    take_next = False
    for child in elements.children:
        if child.type == "command_argument_sep":
            continue
        if child.type == "command_parameter":
            take_next = _text(child).lower() == "-commandname"
            if not take_next:
                return None if child is elements.children[-1] else _first_positional(elements)
            continue
        if take_next or child.type == "generic_token":
            return _text(child).strip("'\"")
        return None
    return None


def _first_positional(elements: Node) -> str | None:
    for child in elements.children:
        if child.type == "generic_token":
            return _text(child)
    return None


def _inside_mock_host(node: Node) -> bool:
    current = node.parent
    while current is not None:
        if current.type == "function_statement":
            return True
        if current.type == "command" and (_command_name(current) or "").lower() in _MOCK_HOSTS:
            return True
        current = current.parent
    return False


def check_pester_mocks(test_text: str, helpers_text: str, prelude_text: str) -> list[Finding]:
    """Pester 5 resolves a mocked command when Mock runs and throws "Could not find Command" for
    one that does not exist then (Pester src/functions/Mock.ps1); the payload's own functions only
    exist once it runs, so they must be defined before the mock."""
    known = defined_functions(test_text) | defined_functions(helpers_text) | REAL_CMDLETS
    if _LOADS_PRELUDE.search(helpers_text):
        known |= defined_functions(prelude_text)
    found = []
    for node in _walk(parse(test_text).root_node):
        if node.type != "command" or (_command_name(node) or "").lower() != "mock":
            continue
        line = node.start_point[0] + 1
        name = _mocked_command(node)
        if name is None:
            found.append(Finding("pester-mock", line, "Mock without a command name"))
            continue
        if name.lower() not in known:
            found.append(Finding("pester-mock", line, f"Mock {name}: not defined before the mock and not a cmdlet every "
                                 "runner has; define it (a stub in _helpers.ps1) or load the prelude first"))
        if not _inside_mock_host(node):
            found.append(Finding("pester-mock", line, f"Mock {name} outside BeforeAll/BeforeEach/It: Pester 5 refuses it"))
    return found


def main(argv: list[str]) -> int:
    status = 0
    for name in argv:
        for finding in lint_file(Path(name)):
            print(f"{name}:{finding}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
