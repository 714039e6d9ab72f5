"""report.json validates against its own schema in every case: every error kind the code gives a
step, and merged shard reports (their transcript paths lead back into each shard's run dir).

Every report written anywhere in the suite is also checked as it is written (tests/conftest.py)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from test_report import RUN, RunScript, fleet_run

from wuremote.output.merge import load_run, merge_reports
from wuremote.output.report import build_report, write_report
from wuremote.store.rundir import RunDir

PACKAGE = Path(__file__).resolve().parents[1] / "wuremote"


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(resources.files("wuremote.output").joinpath("report_schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def error_kinds_in_the_code() -> set[str]:
    """Every TransportError kind raised anywhere, and the kinds the step runner gives of its own."""
    kinds = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        kinds |= set(re.findall(r'TransportError\(\s*"([a-z]+)"', text))
        kinds |= set(re.findall(r'error_kind="([a-z]+)"', text))
    return kinds


def test_the_code_gives_the_kinds_this_test_knows() -> None:
    assert {"auth", "config", "interrupted", "internal", "failed"} <= error_kinds_in_the_code()


@pytest.mark.parametrize("kind", sorted(error_kinds_in_the_code()))
def test_every_error_kind_of_a_step_validates(kind: str) -> None:
    run = RunScript(["web01"])
    run.host("web01")
    run.step("web01", "verify", None, error_kind=kind, messages=["it broke"])
    run.finish("web01", "failed", "it broke")
    validator().validate(json.loads(json.dumps(build_report(run.events))))


def test_a_merged_report_validates(tmp_path: Path) -> None:
    one = tmp_path / "state-1" / "runs" / RUN
    write_report(RunDir(tmp_path / "state-1", RUN), fleet_run())
    merged = merge_reports([(one, load_run(one))], tmp_path / "merged")
    paths = [s["transcript"] for h in merged["hosts"].values() for s in h["steps"] if s["transcript"]]
    assert paths and all(p.startswith("../state-1/runs/") for p in paths)
    validator().validate(merged)
    merged["hosts"]["web01"]["steps"][0]["transcript"] = "/etc/passwd"
    assert not validator().is_valid(merged)
