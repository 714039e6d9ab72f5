"""Kill a real `wuremote repair` at a journal point (and its first resume too, for a double
kill), resume to the end, and compare with an uninterrupted run of the same lab seed.

Shared by tests/test_kill_resume_property.py (a CI-sized sample) and bench/kill_resume.py
(every journal point); the figures go in the README's "Long steps, Ctrl-C, kill -9 and resume".
The lab is in this process; the controller is a child process killed with SIGKILL.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from wuremote.engine.progress import progress_of
from wuremote.lab.lab import Lab
from wuremote.store.journal import Journal

# One host per way a run can be caught mid-way: a pause owed (av-pause), a clean boot and its
# restarts, a long detached step (DISM), a restart rung (pending reboot).
MIX = """
[[hosts]]
scenario = "av-interference"
[[hosts]]
scenario = "third-party-service-conflict"
[[hosts]]
scenario = "component-store-corrupt"
[[hosts]]
scenario = "servicing-in-progress"
"""
TIME_SCALE = 0.0005
SEED = 7
_TOOL = "C:\\\\Program Files\\\\Contoso\\\\Endpoint\\\\avctl.exe"
_OPT_INS = ('opt_in = ["av-pause", "clean-boot"]\n'
            f'vendor_av = {{ pause_command = "{_TOOL}", pause_arguments = ["pause"], '
            f'resume_command = "{_TOOL}", resume_arguments = ["resume"] }}\n')
LONG_STEPS = ("dism", "sfc", "install-kb")  # non-idempotent detached steps: never run twice for one need


@dataclass
class Ending:
    """How one run (interrupted and resumed, or not) left the fleet."""

    outcomes: dict[str, str]  # scenario -> outcome
    restarts: dict[str, int]  # scenario -> boots the host went through
    detached_bodies: dict[str, int]  # scenario -> detached step bodies the host ran
    orphan_sessions: int  # pools/shells left open on the hosts
    owed: dict[str, list[str]]  # scenario -> restores the journal still owes
    paused: list[str]  # scenarios whose antivirus or services are left paused/disabled
    events: int = 0  # journal events of the run


@dataclass
class Trial:
    kills: list[int]  # journal points the controller was killed at (the second one counted from the resume's start)
    ending: Ending
    exit_codes: list[int] = field(default_factory=list)


def _env(lab: Lab) -> dict[str, str]:
    return {**os.environ, "WUREMOTE_PASSWORD": lab.endpoints[0].password}


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "wuremote.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _rows(state: Path) -> int:
    path = state / "journal.sqlite3"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _kill_at(process: subprocess.Popen[str], state: Path, point: int, timeout: float = 120.0) -> bool:
    """SIGKILL the controller once the journal holds `point` events; False if it ended first."""
    deadline = time.monotonic() + timeout
    while _rows(state) < point:
        if process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise AssertionError(f"the controller never reached journal point {point}")
        time.sleep(0.005)
    process.kill()
    process.communicate(timeout=30)
    return True


def _ending(lab: Lab, state: Path) -> Ending:
    with Journal(state) as journal:
        run_id = journal.runs()[0].run_id
        events = journal.events(run_id)
    progress = progress_of(events)
    by_name = {e.name: e.scenario for e in lab.endpoints}

    def on_host(name: str) -> tuple[int, int, int, bool]:
        host = lab.host(name)
        state_ = host.state
        bodies = sum(state_.scripts_run.count(step) for step in LONG_STEPS)
        # The fail-safe records (failsafe/av.json, failsafe/clean-boot.json) go only when restored.
        left_paused = (not state_.antivirus.realtime_enabled) or bool(state_.failsafe)
        return host.generation, bodies, lab.open_sessions(name), left_paused

    facts = {name: lab.call(lambda n=name: on_host(n)) for name in by_name}
    return Ending(
        outcomes={by_name[n]: str(p.outcome) for n, p in progress.items()},
        restarts={by_name[n]: f[0] for n, f in facts.items()},
        detached_bodies={by_name[n]: f[1] for n, f in facts.items()},
        orphan_sessions=sum(f[2] for f in facts.values()),
        owed={by_name[n]: list(p.owed) for n, p in progress.items() if p.owed},
        paused=[by_name[n] for n, f in facts.items() if f[3]],
        events=len(events),
    )


def run_trial(kills: list[int], workdir: Path | None = None) -> Trial:
    """A fresh lab of MIX (same seed every time); kill at each point in `kills` (none: the
    uninterrupted run), then resume until the run ends."""
    root = Path(workdir or tempfile.mkdtemp(prefix="wuremote-kill-"))
    with Lab(scenario=_mix_file(root), time_scale=TIME_SCALE, seed=SEED) as lab:
        inventory = root / "inventory.toml"
        inventory.write_text(lab.inventory_toml().replace("[vars]\n", "[vars]\n" + _OPT_INS, 1), encoding="utf-8")
        state = root / "state"
        env = _env(lab)
        trial = Trial(kills=list(kills), ending=Ending({}, {}, {}, 0, {}, []))
        argv = ["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)]
        process = _start(argv, env)
        for index, point in enumerate(kills):
            base = _rows(state) if index else 0
            if not _kill_at(process, state, base + point):
                break  # it finished before that point: the rest is an uninterrupted run
            with Journal(state) as journal:
                run_id = journal.runs()[0].run_id
            process = _start(["resume", run_id, "--plain", "--state-dir", str(state)], env)
        out, _ = process.communicate(timeout=300)
        trial.exit_codes.append(process.returncode)
        if process.returncode not in (0, 1):
            raise AssertionError(f"the last run ended with exit {process.returncode}:\n{out[-3000:]}")
        trial.ending = _ending(lab, state)
    return trial


def _mix_file(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "mix.toml"
    path.write_text(MIX, encoding="utf-8")
    return path


def differences(trial: Ending, baseline: Ending) -> list[str]:
    """What a resumed run did worse than the uninterrupted one (the README's figures)."""
    found = []
    for scenario, outcome in baseline.outcomes.items():
        if trial.outcomes.get(scenario) != outcome:
            found.append(f"{scenario}: ended {trial.outcomes.get(scenario)}, uninterrupted {outcome}")
        extra = trial.restarts.get(scenario, 0) - baseline.restarts.get(scenario, 0)
        if extra > 0:
            found.append(f"{scenario}: {extra} extra restart(s)")
        again = trial.detached_bodies.get(scenario, 0) - baseline.detached_bodies.get(scenario, 0)
        if again > 0:
            found.append(f"{scenario}: {again} detached step(s) run again")
    if trial.orphan_sessions:
        found.append(f"{trial.orphan_sessions} session(s) left open")
    for scenario, owed in trial.owed.items():
        found.append(f"{scenario}: owes {', '.join(owed)}")
    for scenario in trial.paused:
        found.append(f"{scenario}: left paused or disabled")
    return found
