"""`wuremote report merge RUN_DIR...`: shard runs (CI matrix jobs) combined into one report.

Each shard wrote its own runs/<run-id>/ with report.json.  The merged report.json holds
every host once (a host in two shards is an error: the shards overlapped), counts summed,
the run's span from the first start to the last finish, and transcript paths rewritten to
stay valid from the merged report's folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..contract import RunExit
from .report import SCHEMA_VERSION


class MergeError(ValueError):
    """Shard runs that cannot be merged; the message names the run dir and the fix."""


def load_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MergeError(f"{path}: cannot read it ({exc.strerror}); give the runs/<run-id> folder of each shard") from None
    except json.JSONDecodeError as exc:
        raise MergeError(f"{path}:{exc.lineno}: not JSON ({exc.msg}); run `wuremote report RUN_ID --rerender` there") from None
    if not isinstance(report, dict) or report.get("schema_version") != SCHEMA_VERSION:
        raise MergeError(f"{path}: not a wuremote report.json of schema version {SCHEMA_VERSION}")
    return report


def merge_reports(runs: list[tuple[Path, dict[str, Any]]], out: Path) -> dict[str, Any]:
    """One report from several; transcript paths made relative to ``out``."""
    if not runs:
        raise MergeError("no run dirs to merge; give the runs/<run-id> folder of each shard")
    hosts: dict[str, Any] = {}
    where: dict[str, Path] = {}
    counts: dict[str, int] = {}
    for run_dir, report in runs:
        prefix = Path(os.path.relpath(run_dir.resolve(), out.resolve()))
        for name, host in report["hosts"].items():
            if name in hosts:
                raise MergeError(f"{run_dir}: host {name} is also in {where[name]}; shards must not overlap "
                                 "(use the same inventory and --shard K/N with the same N)")
            for step in host.get("steps", []):
                if step.get("transcript"):
                    step["transcript"] = (prefix / step["transcript"]).as_posix()
            hosts[name], where[name] = host, run_dir
        for outcome, count in (report["run"].get("counts") or {}).items():
            counts[outcome] = counts.get(outcome, 0) + count
    first = [r for _, r in runs]
    codes = [r["run"].get("exit_code") for r in first]
    interrupted = any(r["run"].get("interrupted") for r in first)
    exit_code = int(RunExit.INTERRUPTED if interrupted else (
        RunExit.NOT_ALL_WELL if any(c != RunExit.OK for c in codes) else RunExit.OK))
    run = dict(first[0]["run"])
    run.update({
        "id": "merged-" + "+".join(r["run"]["id"] for r in first),
        "command": "+".join(sorted({str(r["run"].get("command")) for r in first})),
        "started": min(str(r["run"].get("started")) for r in first),
        "finished": max(str(r["run"].get("finished")) for r in first) if all(r["run"].get("finished") for r in first) else None,
        "exit_code": exit_code,
        "interrupted": interrupted,
        "counts": counts,
    })
    return {**first[0], "run": run, "hosts": hosts}
