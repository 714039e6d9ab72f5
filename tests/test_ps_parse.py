"""Every shipped script, the prelude, the runner it embeds and every Pester file parse cleanly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pslint import syntax_errors

from wuremote.contract.scripts import load_scripts, prelude_text

ROOT = Path(__file__).resolve().parent.parent
PS_FILES = sorted((ROOT / "ps_scripts").glob("*.ps1")) + sorted((ROOT / "tests" / "ps").glob("*.ps1"))


def runner_text() -> str:
    """The detached runner lives in a here-string of the prelude: it runs as code on the host."""
    match = re.search(r"function Get-WuDetachedRunnerText \{.*?@'\n(.*?)\n'@", prelude_text(), re.S)
    assert match, "Get-WuDetachedRunnerText here-string not found in the prelude"
    return match.group(1)


def test_there_are_scripts_and_pester_files_to_parse():
    names = {p.name for p in PS_FILES}
    assert "_prelude.ps1" in names and "diagnose.ps1" in names
    assert any(n.endswith(".Tests.ps1") for n in names)


@pytest.mark.parametrize("path", PS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_file_parses_without_error_nodes(path: Path):
    errors = syntax_errors(path.read_text(encoding="utf-8"))
    assert errors == [], "\n".join(str(e) for e in errors)


@pytest.mark.parametrize("name", sorted(load_scripts()))
def test_assembled_payload_parses(name: str):
    """What the host receives (prelude inlined) is one valid script."""
    errors = syntax_errors(load_scripts()[name].payload())
    assert errors == [], "\n".join(str(e) for e in errors)


def test_embedded_runner_parses():
    assert syntax_errors(runner_text()) == []


def test_parse_check_catches_a_broken_script():
    assert syntax_errors("if ($x {\n  Get-Item\n") != []
