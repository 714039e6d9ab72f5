"""Ctrl-C and kill -9 of a real `wuremote` process mid-repair, then `wuremote resume`.

The lab lives in the test process; the controller is a separate process so it can be
interrupted (SIGINT) or killed (SIGKILL) at any moment.  Afterwards every owed restore has
run, the journal says where each host stopped, and `resume` finishes the job.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for

from wuremote.engine.progress import progress_of
from wuremote.lab.lab import Lab
from wuremote.store.journal import Journal

LAB_SCALE = 0.0005
# Each test runs real controller processes for 5-12 s; their own bounded waits (journal events,
# communicate()) add up past the suite's default timeout, so they report before it fires.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "wuremote.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def events_recorded(state: Path) -> list[tuple[str, str | None, str | None, str]]:
    path = state / "journal.sqlite3"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return list(db.execute("SELECT kind, host, step, data_json FROM events ORDER BY seq"))
    except sqlite3.OperationalError:
        return []


def wait_until(state: Path, predicate, timeout: float = 60.0) -> None:
    wait_for(lambda: predicate(events_recorded(state)), timeout=timeout, interval=0.02,
             what="the controller's journal never got there")


def paused(rows) -> bool:
    return any(kind == "step-finished" and step == "av-pause" and '"exit_code": 0' in data for kind, _, step, data in rows)


@pytest.fixture
def av_lab(tmp_path):
    with Lab(scenario="av-interference", hosts=2, time_scale=LAB_SCALE) as lab:
        inventory = tmp_path / "inventory.toml"
        tool = "C:\\\\Program Files\\\\Contoso\\\\Endpoint\\\\avctl.exe"
        inventory.write_text(lab.inventory_toml().replace(
            "[vars]\n", "[vars]\nopt_in = [\"av-pause\"]\n"
            f'vendor_av = {{ pause_command = "{tool}", pause_arguments = ["pause"], '
            f'resume_command = "{tool}", resume_arguments = ["resume"] }}\n', 1), encoding="utf-8")
        env = {**os.environ, "WUREMOTE_PASSWORD": lab.endpoints[0].password}
        yield lab, inventory, env


def realtime_on(lab: Lab) -> list[bool]:
    return [lab.call(lambda n=e.name: lab.host(n).state.antivirus.realtime_enabled) for e in lab.endpoints]


def run_id_of(state: Path) -> str:
    with Journal(state) as journal:
        return journal.runs()[0].run_id


def test_ctrl_c_runs_owed_restores_and_exits_130(av_lab, tmp_path) -> None:
    lab, inventory, env = av_lab
    state = tmp_path / "state"
    process = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
    wait_until(state, paused)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    assert f"wuremote resume {run_id_of(state)}" in out
    assert realtime_on(lab) == [True, True]
    with Journal(state) as journal:
        progress = progress_of(journal.events(run_id_of(state)))
    assert all(not p.owed for p in progress.values())
    assert {p.outcome for p in progress.values()} <= {"interrupted", "repaired"}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_kill_9_at_a_random_moment_then_resume_completes(av_lab, tmp_path, seed) -> None:
    lab, inventory, env = av_lab
    state = tmp_path / "state"
    process = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
    # A seeded moment: after the k-th journal event (the av-pause point is among them).
    moment = random.Random(seed).randint(3, 90)
    wait_until(state, lambda rows: len(rows) >= moment or paused(rows))
    process.kill()
    process.communicate(timeout=10)
    run_id = run_id_of(state)
    resumed = start(["resume", run_id, "--plain", "--state-dir", str(state)], env)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out
    assert realtime_on(lab) == [True, True]
    with Journal(state) as journal:
        progress = progress_of(journal.events(run_id))
    assert {p.outcome for p in progress.values()} == {"repaired"}
    assert all(not p.owed for p in progress.values())
    restarts = [row for row in events_recorded(state) if row[0] == "step-started" and row[2] == "restart"]
    assert not restarts  # no non-idempotent step ran twice (none ran at all here)


def test_resume_after_kill_while_paused_restores_first(av_lab, tmp_path) -> None:
    lab, inventory, env = av_lab
    state = tmp_path / "state"
    process = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
    wait_until(state, paused)
    process.kill()
    process.communicate(timeout=10)
    run_id = run_id_of(state)
    before = len(events_recorded(state))
    resumed = start(["resume", run_id, "--plain", "--state-dir", str(state)], env)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out
    after = events_recorded(state)[before:]
    paused_host = next(host for kind, host, step, data in events_recorded(state)[:before]
                       if kind == "step-finished" and step == "av-pause")
    steps = [step for kind, host, step, _ in after if kind == "step-started" and host == paused_host
             and step not in ("lock", "detached-start", "detached-poll", "detached-cleanup")]
    assert steps[0] == "av-resume", steps
    assert realtime_on(lab) == [True, True]


def open_pools(lab: Lab) -> int:
    """Runspace pools the lab's hosts hold open for the lab user (what a dead controller leaves)."""
    return sum(lab.call(lambda n=e.name: lab.open_sessions(n)) for e in lab.endpoints)


def test_resume_deletes_the_pools_the_killed_controller_left(av_lab, tmp_path) -> None:
    lab, inventory, env = av_lab
    state = tmp_path / "state"
    process = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
    # A pool's id is journalled before its Create goes out (so a kill while the host makes it leaves
    # resume the id): wait for both pools to exist on the hosts, with their ids journalled.
    wait_for(lambda: open_pools(lab) == 2 and sum(1 for r in events_recorded(state) if r[0] == "session-opened") >= 2,
             timeout=60.0, interval=0.02, what="both hosts holding a pool the journal names")
    process.kill()
    process.communicate(timeout=10)
    assert open_pools(lab) == 2
    resumed = start(["resume", run_id_of(state), "--plain", "--state-dir", str(state)], env)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out
    assert open_pools(lab) == 0
    deleted = [r for r in events_recorded(state) if r[0] == "session-closed" and '"orphan": true' in r[3]]
    assert len(deleted) == 2
