"""Recovery that holds: Ctrl-C then resume, a second kill, a restart journalled but never sent,
and the outcome of a resumed run, each against the lab with a real `wuremote` process (or a
Runner, where the moment is a journal point written by hand).

The lab lives in the test process; its clock is held where a test must find a host mid-step,
so no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import held_clock, wait_for
from test_interrupt_resume import events_recorded, run_id_of, start, wait_until

from wuremote import events as ev
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.progress import progress_of
from wuremote.engine.reboot import RebootSettings
from wuremote.engine.runner import Runner
from wuremote.lab.faults import FaultPlan
from wuremote.lab.host import HostState
from wuremote.lab.lab import Lab
from wuremote.lab.psrp import PSRPService
from wuremote.store.journal import Journal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
LAB_SCALE = 0.0005


def dism_running(state: HostState):  # noqa: ANN201 - a held_clock `when`
    """DISM's body runs on the host (its status file says so): hold the host's time there."""
    def now() -> bool:
        return any(path.endswith("\\dism\\status.json") and b'"running"' in data for path, data in state.files.items())
    return now


def dism_bodies(lab: Lab, name: str) -> int:
    return int(lab.call(lambda: lab.host(name).state.scripts_run.count("dism")))


@pytest.fixture
def dism_lab(tmp_path: Path):
    with Lab(scenario="component-store-corrupt", hosts=1, time_scale=LAB_SCALE) as lab:
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        env = {**os.environ, "WUREMOTE_PASSWORD": lab.endpoints[0].password}
        yield lab, inventory, env


def started_dism(rows) -> bool:  # noqa: ANN001
    return any(kind == "step-started" and step == "dism" for kind, _, step, _ in rows)


def repair_until_dism_is_held(clock, inventory: Path, state: Path, env: dict[str, str],  # noqa: ANN001
                              *extra: str):  # noqa: ANN201
    """A `wuremote repair` process, returned once DISM runs on the host and the test holds it there."""
    process = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state), *extra], env)
    wait_until(state, started_dism)
    wait_for(lambda: bool(clock.waits), what="DISM held mid-way on the host")
    return process


def outcomes(state: Path) -> dict[str, str]:
    with Journal(state) as journal:
        return {name: str(p.outcome) for name, p in progress_of(journal.events(run_id_of(state))).items()}


def test_ctrl_c_then_resume_collects_the_running_dism_and_finishes(dism_lab, tmp_path: Path) -> None:
    lab, inventory, env = dism_lab
    name = lab.endpoints[0].name
    host = lab.host(name)
    state = tmp_path / "state"
    with held_clock(lab, host, when=dism_running(host.state)) as clock:
        process = repair_until_dism_is_held(clock, inventory, state, env)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 130, out
        assert outcomes(state) == {name: "interrupted"}
    resumed = start(["resume", run_id_of(state), "--plain", "--state-dir", str(state)], env)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out
    assert outcomes(state) == {name: "repaired"}
    assert dism_bodies(lab, name) == 1  # re-attached to the DISM Ctrl-C left running, not started again


def test_a_second_kill_before_resume_reattaches_never_runs_dism_twice(dism_lab, tmp_path: Path) -> None:
    lab, inventory, env = dism_lab
    name = lab.endpoints[0].name
    host = lab.host(name)
    state = tmp_path / "state"
    with held_clock(lab, host, when=dism_running(host.state)) as clock:
        first = repair_until_dism_is_held(clock, inventory, state, env)
        first.kill()
        first.communicate(timeout=10)
        run_id = run_id_of(state)
        before = len(events_recorded(state))
        # The first resume is killed as soon as it has journalled a step of its own (its lock, or
        # an owed restore): before it could re-attach to DISM.
        second = start(["resume", run_id, "--plain", "--state-dir", str(state)], env)
        wait_until(state, lambda rows: any(kind == "step-started" for kind, *_ in rows[before:]))
        second.kill()
        second.communicate(timeout=10)
    third = start(["resume", run_id, "--plain", "--state-dir", str(state)], env)
    out, _ = third.communicate(timeout=120)
    assert third.returncode == 0, out
    assert outcomes(state) == {name: "repaired"}
    assert dism_bodies(lab, name) == 1


def test_a_restart_journalled_but_never_sent_is_not_waited_for(tmp_path: Path) -> None:
    """Killed between journalling reboot-started and sending the restart: resume reads the boot
    time, sees it unchanged with no reboot-requested, and goes on instead of waiting for a boot."""
    reboot = RebootSettings(poll_interval=0.1, shutdown_timeout=3, boot_timeout=3, readiness_timeout=3,
                            stability_window=0.1, probe_timeout=5)
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        hosts = demo_hosts(lab)
        options = demo_options(tmp_path)
        options.reboot = reboot
        runner: Runner

        def stop_after_the_baseline_diagnose(event: ev.Event) -> None:
            if isinstance(event, ev.StepFinished) and event.step == "diagnose":
                runner.cancel()

        runner = Runner(hosts, options, subscribers=[stop_after_the_baseline_diagnose])
        first = runner.run()
        name = hosts[0].name
        # The boot time as boot-info reports it (wuremote/lab/models/boot_info.py).
        boot = lab.call(lambda: lab.host(name).state.last_boot.astimezone(dt.timezone.utc).isoformat())
        with Journal(tmp_path) as journal:
            events = journal.events(first.run_id)
        # The journal point: reboot-started is the last thing written, then the controller died
        # (so neither host-finished nor run-finished follows it).
        killed_at = [e for e in events if not isinstance(e, (ev.HostFinished, ev.RunFinished))]
        killed_at.append(ev.RebootStarted(first.run_id, name, reason="a reboot is pending", boot_before=boot))
        progress = progress_of(killed_at)
        assert progress[name].reboot_in_flight is not None
        resumed = Runner(hosts, options, run_id=first.run_id, resume=progress).run()
        restarts = lab.call(lambda: lab.host(name).generation)
    assert resumed.outcomes[name] == "healthy", resumed.causes[name]
    assert restarts == 0  # nothing restarted it, and nothing waited for a restart that was never asked for


def kill_then_resume(lab: Lab, tmp_path: Path, inventory_text: str, moment) -> tuple[Path, str]:  # noqa: ANN001
    """Run the CLI, kill -9 it at `moment(rows)`, resume; the state dir and the resumed output."""
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(inventory_text, encoding="utf-8")
    env = {**os.environ, "WUREMOTE_PASSWORD": lab.endpoints[0].password}
    state = tmp_path / "state"
    process = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
    wait_until(state, moment)
    process.kill()
    process.communicate(timeout=10)
    resumed = start(["resume", run_id_of(state), "--plain", "--state-dir", str(state)], env)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out
    return state, out


def causes(state: Path) -> dict[str, str]:
    with Journal(state) as journal:
        return {name: p.cause for name, p in progress_of(journal.events(run_id_of(state))).items()}


def test_a_host_fixed_by_a_restart_before_the_kill_ends_repaired_by_it(tmp_path: Path) -> None:
    with Lab(scenario="servicing-in-progress", hosts=1, time_scale=LAB_SCALE) as lab:
        state, _ = kill_then_resume(lab, tmp_path, lab.inventory_toml(), lambda rows: any(
            kind == "reboot-finished" and '"ok": true' in data for kind, _, _, data in rows))
    assert list(outcomes(state).values()) == ["repaired"]
    assert list(causes(state).values())[0].startswith("repaired by restart")


def test_a_host_fixed_by_av_pause_before_the_kill_ends_repaired_by_it(tmp_path: Path) -> None:
    tool = "C:\\\\Program Files\\\\Contoso\\\\Endpoint\\\\avctl.exe"
    with Lab(scenario="av-interference", hosts=1, time_scale=LAB_SCALE) as lab:
        inventory = lab.inventory_toml().replace(
            "[vars]\n", "[vars]\nopt_in = [\"av-pause\"]\n"
            f'vendor_av = {{ pause_command = "{tool}", pause_arguments = ["pause"], '
            f'resume_command = "{tool}", resume_arguments = ["resume"] }}\n', 1)

        def verified_after_the_pause(rows) -> bool:  # noqa: ANN001
            paused = [i for i, (kind, _, step, data) in enumerate(rows)
                      if kind == "step-finished" and step == "av-pause" and '"exit_code": 0' in data]
            return bool(paused) and any(kind == "step-finished" and step == "verify" and '"exit_code": 0' in data
                                        for kind, _, step, data in rows[paused[0]:])

        state, _ = kill_then_resume(lab, tmp_path, inventory, verified_after_the_pause)
        realtime = lab.call(lambda: lab.host(lab.endpoints[0].name).state.antivirus.realtime_enabled)
    assert list(outcomes(state).values()) == ["repaired"]
    assert "av-pause" in list(causes(state).values())[0]
    assert realtime  # and the owed av-resume ran


def test_a_clean_boot_interrupted_after_it_worked_is_restored_not_run_again(tmp_path: Path) -> None:
    with Lab(scenario="third-party-service-conflict", hosts=1, time_scale=LAB_SCALE) as lab:
        inventory = lab.inventory_toml().replace("[vars]\n", "[vars]\nopt_in = [\"clean-boot\"]\n", 1)

        def clean_boot_worked(rows) -> bool:  # noqa: ANN001
            return any(kind == "step-finished" and step == "clean-boot" and '"exit_code": 3010' in data
                       for kind, _, step, data in rows)

        state, _ = kill_then_resume(lab, tmp_path, inventory, clean_boot_worked)
        boots = lab.call(lambda: lab.host(lab.endpoints[0].name).generation)
    rows = events_recorded(state)
    assert list(outcomes(state).values()) == ["repaired"]
    assert [step for kind, _, step, _ in rows if kind == "step-started" and step == "clean-boot"] == ["clean-boot"]
    assert boots <= 2  # clean-boot's restart and the restore's: as many as a run nobody stopped


def test_a_pool_is_journalled_before_anything_runs_in_it(tmp_path: Path) -> None:
    """A kill between the pool's Create and its first step's end left it open for hours (the
    25-pool quota); the id is journalled as soon as the host answers, so resume deletes it."""
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        ran_when_journalled: list[list[str]] = []

        def at_session_opened(event: ev.Event) -> None:  # the subscriber runs after the journal's commit
            if isinstance(event, ev.SessionOpened):
                ran_when_journalled.append(lab.call(lambda: list(lab.host(lab.endpoints[0].name).state.scripts_run)))

        Runner(demo_hosts(lab), demo_options(tmp_path / "first"), subscribers=[at_session_opened]).run()
        assert ran_when_journalled and ran_when_journalled[0] == []  # journalled before any script ran in it

        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        env = {**os.environ, "WUREMOTE_PASSWORD": lab.endpoints[0].password}
        state = tmp_path / "state"
        process = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
        wait_until(state, lambda rows: any(kind == "session-opened" for kind, *_ in rows))
        process.kill()
        process.communicate(timeout=10)
        left = lab.call(lambda: lab.open_sessions(lab.endpoints[0].name))
        resumed = start(["resume", run_id_of(state), "--plain", "--state-dir", str(state)], env)
        out, _ = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, out
        assert left <= 1 and lab.call(lambda: lab.open_sessions(lab.endpoints[0].name)) == 0


def test_a_kill_while_the_host_creates_the_pool_leaves_resume_its_id(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The last window of issue 14's orphan pools: killed after the host made the pool and before the
    controller had its answer.  The client chooses the pool's id, journalled before the Create goes out,
    so resume deletes it."""
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        name = lab.endpoints[0].name
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        env = {**os.environ, "WUREMOTE_PASSWORD": lab.endpoints[0].password}
        state = tmp_path / "state"
        controller: list[int] = []
        create = PSRPService.create

        def create_then_kill(service: PSRPService, request: Any, user: str) -> bytes:
            answer = create(service, request, user)  # the host has the pool now
            wait_for(lambda: bool(controller), what="the controller's pid")
            os.kill(controller[0], signal.SIGKILL)  # before its answer leaves the host
            return answer

        monkeypatch.setattr(PSRPService, "create", create_then_kill)
        process = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
        controller.append(process.pid)
        process.communicate(timeout=120)
        monkeypatch.undo()
        assert process.returncode == -signal.SIGKILL
        assert lab.call(lambda: lab.open_sessions(name)) == 1  # the pool the killed controller never heard of
        resumed = start(["resume", run_id_of(state), "--plain", "--state-dir", str(state)], env)
        out, _ = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, out
        assert lab.call(lambda: lab.open_sessions(name)) == 0, out


# --- signals ----------------------------------------------------------------------------------
def av_inventory(lab: Lab, tmp_path: Path) -> Path:
    tool = "C:\\\\Program Files\\\\Contoso\\\\Endpoint\\\\avctl.exe"
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(lab.inventory_toml().replace(
        "[vars]\n", "[vars]\nopt_in = [\"av-pause\"]\n"
        f'vendor_av = {{ pause_command = "{tool}", pause_arguments = ["pause"], '
        f'resume_command = "{tool}", resume_arguments = ["resume"] }}\n', 1), encoding="utf-8")
    return inventory


def paused_rows(rows) -> bool:  # noqa: ANN001
    return any(kind == "step-finished" and step == "av-pause" and '"exit_code": 0' in data for kind, _, step, data in rows)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_ctrl_c_with_the_restore_owed(tmp_path: Path, signum: int) -> None:
    with Lab(scenario="av-interference", hosts=1, time_scale=LAB_SCALE) as lab:
        inventory = av_inventory(lab, tmp_path)
        env = {**os.environ, "WUREMOTE_PASSWORD": lab.endpoints[0].password}
        state = tmp_path / "state"
        process = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
        wait_until(state, paused_rows)  # antivirus is paused on the host now: av-resume is owed
        process.send_signal(signum)
        out, _ = process.communicate(timeout=120)
        realtime = lab.call(lambda: lab.host(lab.endpoints[0].name).state.antivirus.realtime_enabled)
    assert process.returncode == 130, out
    assert realtime  # the owed av-resume ran before the controller left
    assert f"wuremote resume {run_id_of(state)}" in out
    assert (state / "runs" / run_id_of(state) / "report.json").is_file()


def test_a_stop_while_a_host_does_not_answer_ends_in_bounded_time_with_the_work_recorded(tmp_path: Path) -> None:
    """Ctrl-C while the host holds DISM and then stops answering: the controller does not wait
    for it past --stop-timeout; the report is written and the hint printed."""
    with Lab(scenario="component-store-corrupt", hosts=1, time_scale=LAB_SCALE) as lab:
        name = lab.endpoints[0].name
        host = lab.host(name)
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        env = {**os.environ, "WUREMOTE_PASSWORD": lab.endpoints[0].password}
        state = tmp_path / "state"
        with held_clock(lab, host, when=dism_running(host.state)) as clock:
            process = repair_until_dism_is_held(clock, inventory, state, env, "--stop-timeout", "2")
            faults = lab.faults(name)
            lab.call(lambda: setattr(faults, "plan", FaultPlan(slow_seconds=3600)))  # accepted, never answered
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=120)
            lab.call(lambda: setattr(faults, "plan", FaultPlan()))
    assert process.returncode == 130, out
    assert f"wuremote resume {run_id_of(state)}" in out
    assert (state / "runs" / run_id_of(state) / "report.json").is_file()


# --- the state dir ----------------------------------------------------------------------------
def _foreign(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")


def _newer(path: Path) -> None:
    import sqlite3

    with Journal(path.parent):
        pass
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.execute("PRAGMA journal_mode = DELETE")  # all in the one file, as a newer wuremote might leave it
    db.close()


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 100)


@pytest.mark.parametrize(("make", "said"), [(_foreign, "not a wuremote journal"), (_newer, "schema 99"),
                                            (_garbage, "not a readable journal")])
def test_a_state_dir_whose_journal_is_not_ours_is_one_line_exit_2_and_left_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], make, said: str) -> None:  # noqa: ANN001
    from wuremote.cli import main

    state = tmp_path / "state"
    state.mkdir()
    journal = state / "journal.sqlite3"
    make(journal)
    before = journal.read_bytes()
    monkeypatch.setenv("WUREMOTE_PASSWORD", "pw")
    assert main(["plan", "h1.example", "--user", "ops", "--plain", "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0] and str(journal) in err[0]
    assert journal.read_bytes() == before and sorted(p.name for p in state.iterdir()) == ["journal.sqlite3"]


def test_a_full_disk_while_antivirus_is_paused_still_resumes_it_and_says_why(tmp_path: Path) -> None:
    """The journal's file reaches its size limit (SQLITE_FULL, what a full disk gives) right after
    av-pause: no new work starts, the owed av-resume runs, the run ends non-zero naming the cause."""
    with Lab(scenario="av-interference", hosts=1, time_scale=LAB_SCALE) as lab:
        hosts = [h.__class__(**{**h.__dict__, "opt_in": ("av-pause",)}) for h in demo_hosts(lab)]
        runner: Runner

        def fill_the_disk(event: ev.Event) -> None:
            if isinstance(event, ev.StepFinished) and event.step == "av-pause" and event.exit_code == 0:
                journal = runner.journal
                with journal._lock:  # noqa: SLF001 - the test plays the disk
                    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]  # noqa: SLF001
                    journal._db.execute(f"PRAGMA max_page_count = {pages}")  # noqa: SLF001

        runner = Runner(hosts, demo_options(tmp_path), subscribers=[fill_the_disk])
        summary = runner.run()
        realtime = lab.call(lambda: lab.host(lab.endpoints[0].name).state.antivirus.realtime_enabled)
    assert realtime  # av-resume ran although nothing more could be journalled
    assert summary.journal_error and "full" in summary.journal_error
    assert summary.exit_code != 0
    assert summary.report_json.is_file()


def test_resume_is_refused_while_the_runs_controller_is_alive(dism_lab, tmp_path: Path) -> None:
    lab, inventory, env = dism_lab
    host = lab.host(lab.endpoints[0].name)
    state = tmp_path / "state"
    with held_clock(lab, host, when=dism_running(host.state)) as clock:
        first = repair_until_dism_is_held(clock, inventory, state, env)
        second = start(["resume", run_id_of(state), "--plain", "--state-dir", str(state)], env)
        out, _ = second.communicate(timeout=60)
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert second.returncode == 2, out
    assert f"pid {first.pid}" in out and "live controller" in out
    assert dism_bodies(lab, lab.endpoints[0].name) == 1


# --- every wait bounded -----------------------------------------------------------------------
def test_host_timeout_holds_during_a_long_step(tmp_path: Path) -> None:
    """--host-timeout used to be checked between steps only: a 60 s timeout took four minutes."""
    with Lab(scenario="component-store-corrupt", hosts=1, time_scale=LAB_SCALE) as lab:
        host = lab.host(lab.endpoints[0].name)
        options = demo_options(tmp_path)
        options.host_timeout = 3.0
        with held_clock(lab, host, when=dism_running(host.state)):  # DISM does not end while the test holds it
            summary = Runner(demo_hosts(lab), options).run()
    cause = summary.causes[lab.endpoints[0].name]
    assert summary.outcomes[lab.endpoints[0].name] == "failed"
    assert "host timeout (3 s) reached during dism" in cause and "left running on the host" in cause


def test_host_timeout_holds_during_a_restart(tmp_path: Path) -> None:
    from conftest import in_reboot

    with Lab(scenario="servicing-in-progress", hosts=1, time_scale=LAB_SCALE) as lab:
        host = lab.host(lab.endpoints[0].name)
        options = demo_options(tmp_path)
        options.host_timeout = 4.0
        with held_clock(lab, host, when=in_reboot(host)):  # the host does not come back while the test holds it
            summary = Runner(demo_hosts(lab), options).run()
    cause = summary.causes[lab.endpoints[0].name]
    assert summary.outcomes[lab.endpoints[0].name] == "failed"
    assert "host timeout (4 s) reached during the restart" in cause


def test_a_host_that_stops_answering_mid_step_ends_unreachable_in_bounded_time_and_says_so(tmp_path: Path) -> None:
    """The host goes silent while DISM runs: the operator reads "no answer since ..., retrying
    (attempt N)", and after --no-answer-timeout the host ends unreachable with DISM left for
    resume, instead of polling silently until DISM's own two-hour timeout."""
    with Lab(scenario="component-store-corrupt", hosts=1, time_scale=LAB_SCALE) as lab:
        name = lab.endpoints[0].name
        host = lab.host(name)
        listener = lab.listener(name)
        options = demo_options(tmp_path)
        options.no_answer_timeout = 3.0
        seen: list[ev.Event] = []

        def go_silent_once_dism_polls(event: ev.Event) -> None:
            seen.append(event)
            if isinstance(event, ev.StepProgress) and event.step == "dism" and listener.listening:
                lab.call(listener.stop)  # the port refuses from now on: the host is gone

        with held_clock(lab, host, when=dism_running(host.state)):
            summary = Runner(demo_hosts(lab), options, subscribers=[go_silent_once_dism_polls]).run()
    assert summary.outcomes[name] == "unreachable", summary.causes[name]
    assert "no answer since" in summary.causes[name] and "left running on the host" in summary.causes[name]
    said = [e.text for e in seen if isinstance(e, ev.HostMessage) and "no answer since" in e.text]
    assert said and "retrying (attempt 1)" in said[0]
