"""The lint enforces the script contract: every shipped script passes, and each rule catches a bad script."""

from __future__ import annotations

from pathlib import Path

import pytest
from pslint import check_pester_mocks, lint_file, lint_prelude, lint_step_script, lint_syntax_rules
from test_ps_parse import runner_text

from wuremote.contract.scripts import load_scripts

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "ps_scripts").glob("*.ps1"))
PESTER = sorted((ROOT / "tests" / "ps").glob("*.ps1"))

HEADER = """# wuremote-script
# name: sample
# version: 1
# reboot: never
# timeout: 60
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
"""
PARAMS = """[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = ''
)
# wuremote-prelude
"""
END = "Complete-WuStep -Step 'sample' -Status 'ok' -ExitCode 0 -ResultMarker $ResultMarker\n"


def script(body: str = "", *, header: str = HEADER, params: str = PARAMS, end: str = END) -> str:
    return header + params + body + end


def rules(text: str) -> set[str]:
    return {f.rule for f in lint_step_script(text)}


# The WinRS bootstrap's whole job is to turn the step script it reads from stdin into a script
# block and run it with the parameters bound (splatted, never pasted): its Creates are allowed, as is
# the PSRP prelude definition's, which keeps the prelude (checked by sha256) as a script block.
ALLOWED = {"_winrs_bootstrap.ps1": {"invoke-expression"}, "_psrp_prelude.ps1": {"invoke-expression"},
           "_psrp_chain.ps1": {"invoke-expression"}}  # the chain runs each step's text as a script block


@pytest.mark.parametrize("path", SHIPPED + PESTER, ids=lambda p: p.name)
def test_shipped_file_passes_the_lint(path: Path):
    findings = [f for f in lint_file(path) if f.rule not in ALLOWED.get(path.name, set())]
    assert findings == [], "\n".join(str(f) for f in findings)


def test_the_embedded_runner_passes_the_syntax_rules():
    assert lint_syntax_rules(runner_text()) == []


def test_a_good_script_is_clean():
    assert lint_step_script(script("$x = Get-ChildItem -LiteralPath $env:SystemRoot\n")) == []


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        ("header", script(header="# name: sample\n")),
        ("header", script(header=HEADER.replace("# detached: no\n", ""))),
        ("cmdletbinding", script(params=PARAMS.replace("[CmdletBinding()]\n", ""))),
        ("params", script(params=PARAMS.replace("[string]$RunId", "$RunId"))),
        ("params", script(params=PARAMS.replace("    [string]$ResultMarker = ''\n", "    [int]$Other = 1\n").replace("'',\n", "''\n", 1).replace("''\n    [int]", "'',\n    [int]"))),
        ("params", script(params="[CmdletBinding()]\nparam(\n    [string]$RunId = '',\n    [string]$ResultMarker = '',\n    $Untyped\n)\n# wuremote-prelude\n")),
        ("prelude", script(params=PARAMS.replace("# wuremote-prelude\n", ""))),
        ("alias", script("gci -Path $env:SystemRoot\n")),
        ("alias", script("Get-Service | % { $_.Name }\n")),
        ("alias", script("Get-Service | ? { $_.Status -eq 'Running' }\n")),
        ("alias", script("Get-Process | select -First 1\n")),
        ("alias", script("Get-Process | where { $_.Id }\n")),
        ("alias", script("echo 'x'\n")),
        ("write-host", script("Write-Host 'done'\n")),
        ("invoke-expression", script("Invoke-Expression $command\n")),
        ("invoke-expression", script("iex $command\n")),
        ("invoke-expression", script("$block = [scriptblock]::Create($text)\n")),
        ("windows-path", script("$p = 'C:\\Windows\\System32'\n")),
        ("windows-path", script('$p = "c:\\windows\\Temp"\n')),
        ("windows-path", script("Get-ChildItem -Path C:\\Windows\\Logs\n")),
        ("silently-continue", script("Get-Item -Path x -ErrorAction SilentlyContinue\n")),
        ("silently-continue", script("$ErrorActionPreference = 'SilentlyContinue'\n")),
        ("ps7", script("$a = $b ? 1 : 2\n")),
        ("ps7", script("$a = $b ?? 'default'\n")),
        ("ps7", script("$a = $b?.Name\n")),
        ("ps7", script("cmd.exe /c ver && cmd.exe /c ver\n")),
        ("ps7", script("cmd.exe /c ver || cmd.exe /c ver\n")),
        ("ps7", script("1..3 | ForEach-Object -Parallel { $_ }\n")),
        ("ends-with-complete", script(end="Write-Output 'done'\n")),
        ("ends-with-complete", script(END, end="Write-Verbose 'after the end'\n")),
    ],
)
def test_each_rule_catches_a_bad_script(rule: str, text: str):
    assert rule in rules(text)


def test_silently_continue_with_a_reason_is_allowed():
    same_line = script("Get-Item -Path x -ErrorAction SilentlyContinue # absent is the normal case\n")
    line_before = script("# absent is the normal case\nGet-Item -Path x -ErrorAction SilentlyContinue\n")
    assert "silently-continue" not in rules(same_line)
    assert "silently-continue" not in rules(line_before)


def test_a_comment_two_lines_up_does_not_excuse_silently_continue():
    text = script("# reason far away\n$null = 1\nGet-Item -Path x -ErrorAction SilentlyContinue\n")
    assert "silently-continue" in rules(text)


def test_windows_path_in_a_comment_is_fine_and_systemroot_is_clean():
    text = script("# mirrors C:\\Windows\\Logs\\CBS\n$p = Join-Path -Path $env:SystemRoot -ChildPath 'Logs'\n")
    assert "windows-path" not in rules(text)


def test_full_cmdlet_names_are_not_aliases():
    text = script("Get-Service | ForEach-Object -Process { $_.Name } | Where-Object -FilterScript { $_ } | Select-Object -First 1\n")
    assert "alias" not in rules(text)


def test_findings_name_the_line():
    text = script("Write-Host 'x'\n")
    (finding,) = [f for f in lint_step_script(text) if f.rule == "write-host"]
    assert finding.line == text.splitlines().index("Write-Host 'x'") + 1


def test_prelude_must_set_stop():
    assert any(f.rule == "prelude" for f in lint_prelude("Set-StrictMode -Version 2.0\n"))
    assert not any(f.rule == "prelude" for f in lint_prelude("$ErrorActionPreference = 'Stop'\n"))


# --- metadata the orchestrator relies on -------------------------------------------------------

STEPS = {
    "diagnose", "cleanup", "sync-time", "troubleshooter", "reset-components", "dism", "sfc", "av-pause", "av-resume",
    "clean-boot", "clean-boot-restore", "install-kb", "install-updates", "verify", "lock", "restart", "boot-info",
    "detached-start", "detached-poll", "detached-cleanup", "collect-logs", "push-kb",
}


def test_every_step_is_shipped_and_loads():
    assert set(load_scripts()) == STEPS


def test_file_name_matches_script_name():
    for name, step in load_scripts().items():
        assert (ROOT / "ps_scripts" / f"{name}.ps1").read_text(encoding="utf-8") == step.text


def test_long_steps_are_detached_and_only_they():
    detached = {name for name, s in load_scripts().items() if s.meta.detached}
    # cleanup's DISM /StartComponentCleanup can take over an hour on 2012 R2/2016: a dropped
    # WinRM shell would kill it with the shell's job object (issue 13, item 7).
    assert detached == {"dism", "sfc", "verify", "install-kb", "install-updates", "cleanup"}


def test_opt_in_steps():
    opt_in = {name for name, s in load_scripts().items() if s.meta.opt_in}
    assert opt_in == {"av-pause", "clean-boot"}, "restores are never opt-in: undoing must always be allowed"


def test_read_only_steps_never_reboot_and_are_idempotent():
    scripts = load_scripts()
    for name in ("diagnose", "boot-info", "detached-poll", "verify", "collect-logs"):
        assert scripts[name].meta.reboot == "never" and scripts[name].meta.idempotent, name


def test_reboot_behaviour():
    scripts = load_scripts()
    assert scripts["clean-boot"].meta.reboot == "always"
    assert scripts["restart"].meta.reboot == "always" and not scripts["restart"].meta.idempotent
    assert scripts["install-kb"].meta.reboot == "usually"
    assert scripts["reset-components"].meta.reboot == "recommended"
    assert {scripts[n].meta.reboot for n in ("dism", "sfc", "troubleshooter")} == {"maybe"}


def test_long_steps_have_long_timeouts():
    scripts = load_scripts()
    assert scripts["dism"].meta.timeout >= 3600
    assert scripts["detached-poll"].meta.timeout <= 120
    assert scripts["diagnose"].meta.timeout <= 600


def test_every_step_script_documents_its_exit_codes():
    for name, step in load_scripts().items():
        assert "Exit codes:" in step.text or name == "boot-info", name


# --- Pester 5 mocks (issue 13, item 1) ---------------------------------------------------------
HELPERS = ROOT / "tests" / "ps" / "_helpers.ps1"
PRELUDE = ROOT / "ps_scripts" / "_prelude.ps1"
# The helpers as they were before: mocks of payload functions with nothing defining them first.
HELPERS_WITHOUT_LOADER = "function Get-WuFixture {\n    param()\n}\n"


def mock_findings(test_text: str, helpers_text: str | None = None) -> list[str]:
    helpers = HELPERS.read_text(encoding="utf-8") if helpers_text is None else helpers_text
    return [str(f) for f in check_pester_mocks(test_text, helpers, PRELUDE.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("path", [p for p in PESTER if p.name.endswith(".Tests.ps1")] + [HELPERS], ids=lambda p: p.name)
def test_every_mock_in_the_pester_suite_names_a_command_that_exists_when_mock_runs(path: Path):
    assert mock_findings(path.read_text(encoding="utf-8")) == []


def test_a_mock_of_a_payload_function_nothing_defines_is_caught():
    text = "Describe 'x' {\n    It 'y' {\n        Mock Test-WuElevated { $true }\n    }\n}\n"
    found = mock_findings(text, HELPERS_WITHOUT_LOADER)
    assert len(found) == 1 and "Test-WuElevated" in found[0] and found[0].startswith("3:")
    assert mock_findings(text) == []  # the shipped helpers load the prelude's functions first


def test_a_mock_of_a_module_cmdlet_a_runner_may_lack_needs_a_stub():
    text = "It 'y' {\n    Mock Get-MpComputerStatus { $null }\n}\n"
    assert mock_findings(text, HELPERS_WITHOUT_LOADER) != []
    assert mock_findings(text) == []


def test_a_mock_outside_a_block_or_test_is_caught():
    found = mock_findings("Mock Get-Service { $null }\nDescribe 'x' { It 'y' { $true } }\n")
    assert found and "outside BeforeAll/BeforeEach/It" in found[0]


def test_a_real_cmdlet_and_a_function_of_the_test_file_may_be_mocked():
    text = ("function Get-Local {\n    param()\n}\nBeforeEach {\n    Mock Get-CimInstance { $null }\n"
            "    Mock -CommandName Get-Local { 1 }\n}\n")
    assert mock_findings(text, HELPERS_WITHOUT_LOADER) == []
