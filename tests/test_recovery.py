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

import pytest
from conftest import held_clock, wait_for
from test_interrupt_resume import events_recorded, run_id_of, start, wait_until

from wuremote import events as ev
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.progress import progress_of
from wuremote.engine.reboot import RebootSettings
from wuremote.engine.runner import Runner
from wuremote.lab.host import HostState
from wuremote.lab.lab import Lab
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


def outcomes(state: Path) -> dict[str, str]:
    with Journal(state) as journal:
        return {name: str(p.outcome) for name, p in progress_of(journal.events(run_id_of(state))).items()}


def test_ctrl_c_then_resume_collects_the_running_dism_and_finishes(dism_lab, tmp_path: Path) -> None:
    lab, inventory, env = dism_lab
    name = lab.endpoints[0].name
    host = lab.host(name)
    state = tmp_path / "state"
    with held_clock(lab, host, when=dism_running(host.state)) as clock:
        process = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
        wait_until(state, started_dism)
        wait_for(lambda: bool(clock.waits), what="DISM held mid-way on the host")
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
        first = start(["repair", "-i", str(inventory), "--plain", "--state-dir", str(state)], env)
        wait_until(state, started_dism)
        wait_for(lambda: bool(clock.waits), what="DISM held mid-way on the host")
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
