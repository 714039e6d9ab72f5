"""The run journal: what survives a new process, a kill -9 and sixteen writers at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from wuremote import events as ev
from wuremote.engine.progress import StepOutcome, progress_of
from wuremote.secret import Secret
from wuremote.store.journal import Journal, JournalError, UnknownRunError

RUN = "20261126-093700-ab12"


def started(run_id: str = RUN, hosts: tuple[str, ...] = ("web01",)) -> ev.RunStarted:
    return ev.RunStarted(run_id, command="repair", hosts=list(hosts),
                         inventory=[{"name": h, "address": h, "username": "ops"} for h in hosts],
                         options={"forks": 4, "max_fail_percent": 50}, version="0.1.0")


def step_started(host: str, step: str, attempt: int = 1, *, idempotent: bool = True,
                 detached: bool = False) -> ev.StepStarted:
    return ev.StepStarted(RUN, host, step, attempt=attempt, reason="plan", idempotent=idempotent, detached=detached)


def step_finished(host: str, step: str, exit_code: int | None, *, reboot_required: bool = False) -> ev.StepFinished:
    status = "ok" if exit_code in (0, 3010) else "failed"
    # As the runner sends it: no attempt (the open step-started of that step has it).
    return ev.StepFinished(RUN, host, step, exit_code=exit_code, status=status, duration=1.5,
                           reboot_required=reboot_required)


def test_events_and_run_survive_a_new_journal_instance(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        run_id = journal.new_run_id()
        journal.record(started(run_id))
        journal.record(ev.HostStarted(run_id, "web01", address="10.0.0.5", transport="psrp"))
    with Journal(tmp_path) as reopened:
        run = reopened.run(run_id)
        events = reopened.events(run_id)
        assert [r.run_id for r in reopened.runs()] == [run_id]
    assert run.command == "repair" and run.status == "running"
    assert run.options["forks"] == 4 and run.inventory[0]["username"] == "ops"
    assert [type(e) for e in events] == [ev.RunStarted, ev.HostStarted]
    assert events[1].host == "web01" and isinstance(events[1], ev.HostStarted) and events[1].address == "10.0.0.5"


def test_run_ids_sort_by_start_time(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        first = journal.new_run_id()
        assert len(first) == len(RUN) and first[:8].isdigit()
        journal.record(ev.RunStarted("20261125-000000-0000", time=1.0, command="check"))
        journal.record(ev.RunStarted("20261126-000000-0000", time=2.0, command="repair"))
        journal.record(ev.RunFinished("20261125-000000-0000", exit_code=0, interrupted=True))
        runs = journal.runs()
    assert [r.run_id for r in runs] == ["20261126-000000-0000", "20261125-000000-0000"]
    assert runs[1].status == "interrupted"


def test_progress_of_a_host_killed_mid_step_one_owing_av_resume_and_a_finished_one(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record(started(hosts=("mid", "paused", "done", "waiting")))
        journal.record(step_started("mid", "diagnose"))
        journal.record(step_finished("mid", "diagnose", 0))
        journal.record(step_started("mid", "dism", idempotent=False, detached=True))

        journal.record(step_started("paused", "av-pause"))
        journal.record(step_finished("paused", "av-pause", 0))
        journal.record(step_started("paused", "clean-boot"))
        journal.record(step_finished("paused", "clean-boot", 3010, reboot_required=True))
        journal.record(ev.RebootStarted(RUN, "paused", reason="clean-boot", boot_before="t0"))
        journal.record(ev.RebootFinished(RUN, "paused", ok=True, duration=40, boot_after="t1"))
        journal.record(step_started("paused", "clean-boot-restore"))
        journal.record(step_finished("paused", "clean-boot-restore", 0))
        journal.record(step_started("paused", "install-kb", detached=True))
        journal.record(step_finished("paused", "install-kb", 3010, reboot_required=True))

        journal.record(step_started("done", "verify"))
        journal.record(step_finished("done", "verify", 1))
        journal.record(step_started("done", "verify", attempt=2))
        journal.record(step_finished("done", "verify", 0))
        journal.record(ev.HostFinished(RUN, "done", outcome="healthy", cause="verify passed", steps_run=2))
        progress = progress_of(journal.events(RUN))

    assert list(progress) == ["mid", "paused", "done", "waiting"]
    mid = progress["mid"]
    assert mid.ok_steps == ["diagnose"] and mid.outcome is None
    assert mid.interrupted is not None and mid.interrupted.name == "dism"
    assert mid.interrupted.detached and not mid.interrupted.idempotent

    paused = progress["paused"]
    assert paused.owed == ["av-resume"]
    assert paused.reboots == 1 and paused.reboot_in_flight is None
    assert paused.interrupted is None

    done = progress["done"]
    assert done.outcome == "healthy" and done.cause == "verify passed" and done.interrupted is None
    assert done.finished == [StepOutcome("verify", 1, 1, "failed"), StepOutcome("verify", 2, 0, "ok")]
    assert done.ok_steps == ["verify"]

    assert progress["waiting"].finished == [] and progress["waiting"].outcome is None


def test_a_kill_during_av_pause_or_a_reboot_is_owed_a_restore_and_a_boot_check(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record(started(hosts=("a", "b", "c")))
        journal.record(step_started("a", "av-pause"))
        journal.record(step_started("b", "av-pause"))
        journal.record(step_finished("b", "av-pause", 1))  # tamper protection: nothing left paused
        journal.record(ev.RebootStarted(RUN, "c", reason="reset-components", boot_before="t0"))
        progress = progress_of(journal.events(RUN))
    assert progress["a"].owed == ["av-resume"]
    assert progress["b"].owed == []
    flight = progress["c"].reboot_in_flight
    assert flight is not None and (flight.reason, flight.boot_before) == ("reset-components", "t0")


def test_a_resume_appending_to_the_run_reopens_it_and_keeps_the_first_snapshot(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record(started())
        journal.record(ev.HostFinished(RUN, "web01", outcome="interrupted", cause="ctrl-c"))
        journal.record(ev.RunFinished(RUN, exit_code=130, interrupted=True))
        journal.record(ev.RunStarted(RUN, command="resume", hosts=["web01"]))
        journal.record(ev.HostStarted(RUN, "web01"))
        run = journal.run(RUN)
        progress = progress_of(journal.events(RUN))
    assert run.status == "running" and run.command == "repair" and run.inventory[0]["name"] == "web01"
    assert progress["web01"].outcome is None and progress["web01"].cause == ""


def test_sixteen_threads_recording_at_once_lose_and_reorder_nothing(tmp_path: Path) -> None:
    per_thread = 40
    with Journal(tmp_path) as journal:
        journal.record(started(hosts=tuple(f"h{i:02d}" for i in range(16))))

        def work(index: int) -> None:
            host = f"h{index:02d}"
            for n in range(per_thread):
                journal.record(step_started(host, "diagnose", attempt=n + 1))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        events = journal.events(RUN)
    steps = [e for e in events if isinstance(e, ev.StepStarted)]
    assert len(steps) == 16 * per_thread
    for index in range(16):
        attempts = [e.attempt for e in steps if e.host == f"h{index:02d}"]
        assert attempts == list(range(1, per_thread + 1))


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from wuremote import events as ev
    from wuremote.store.journal import Journal
    journal = Journal(Path(sys.argv[1]))
    run = sys.argv[2]
    journal.record(ev.RunStarted(run, command="repair", hosts=["web01"]))
    for n in range(1, 1000000):
        journal.record(ev.StepStarted(run, "web01", "dism", attempt=n, idempotent=False, detached=True))
        print(n, flush=True)
        if sys.argv[3] == "self" and n == 25:
            journal.record(ev.StepFinished(run, "web01", "dism", exit_code=0, status="ok"))
            journal.record(ev.StepStarted(run, "web01", "sfc", attempt=1, idempotent=False, detached=True))
            os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("killer", ["self", "parent"])
def test_a_kill_9_mid_run_leaves_every_recorded_event_and_a_consistent_progress(tmp_path: Path, killer: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path), RUN, killer],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acknowledged = 0
    for line in child.stdout:
        acknowledged = int(line)
        if killer == "parent" and acknowledged >= 30:
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    with Journal(tmp_path) as journal:
        events = journal.events(RUN)
        progress = progress_of(events)
        assert journal.run(RUN).status == "running"
    attempts = [e.attempt for e in events if isinstance(e, ev.StepStarted) and e.step == "dism"]
    assert attempts[:acknowledged] == list(range(1, acknowledged + 1))  # every acknowledged record is there
    interrupted = progress["web01"].interrupted
    assert interrupted is not None and interrupted.detached
    if killer == "self":
        assert progress["web01"].ok_steps == ["dism"] and interrupted.name == "sfc"
    else:
        assert interrupted.name == "dism" and interrupted.attempt == attempts[-1]


def test_unknown_run_id_names_it_and_the_journal(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record(started())
        with pytest.raises(UnknownRunError, match=r"'20990101-000000-dead'.*journal\.sqlite3"):
            journal.events("20990101-000000-dead")
        with pytest.raises(JournalError, match="record run-started first"):
            journal.record(ev.HostStarted("20990101-000000-dead", "web01"))


def test_a_secret_anywhere_in_an_event_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record(started())
        hidden = ev.StepFinished(RUN, "web01", "diagnose", exit_code=0, status="ok",
                                 facts={"auth": [{"password": Secret("hunter2")}]})
        with pytest.raises(JournalError, match=r"data\.facts\.auth\[0\]\.password holds a Secret") as raised:
            journal.record(hidden)
        assert "hunter2" not in str(raised.value)
        with pytest.raises(JournalError, match="Secret"):
            journal.record(ev.RunStarted("20261126-000000-0001", command="repair", options={"pw": Secret("x")}))
        assert [type(e) for e in journal.events(RUN)] == [ev.RunStarted]
        assert [r.run_id for r in journal.runs()] == [RUN]
    assert all(b"hunter2" not in path.read_bytes() for path in tmp_path.iterdir())


def test_an_unwritable_state_dir_says_which_and_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(JournalError, match=r"cannot open the journal .*file.*writable --state-dir"):
        Journal(blocker / "state")
