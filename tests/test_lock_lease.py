"""The host lock as a lease (issues 13 item 12 and 14 items 10-11), end to end over both transports.

The lease is measured on the host's performance counter in the boot it was renewed in, so
sync-time stepping the clock by hours neither ends it nor prolongs a dead one; it names the
controller instance, so the same run resumed from another machine is told who holds the host,
and a resume from the same controller reclaims it.  The lab models the counter and the volatile
registry key that tells boots apart (wuremote/lab/host.py: Host.tick_ms, volatile_registry).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_lab_quirks import run_direct

from wuremote import events as ev
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner, RunSummary
from wuremote.events import Event
from wuremote.lab.host import Host
from wuremote.lab.lab import Lab
from wuremote.store.lock import controller_identity

LAB_SCALE = 0.002
TRANSPORTS = ("psrp", "winrm")
HOURS = 3600.0
OTHER = "5eed0fca11ed@other-controller"


def repair(lab: Lab, state_dir: Path, transport: str, run_id: str | None = None) -> tuple[RunSummary, list[Event]]:
    seen: list[Event] = []
    summary = Runner(demo_hosts(lab, transport), demo_options(state_dir), subscribers=[seen.append],
                     run_id=run_id).run()
    return summary, seen


def take(lab: Lab, transport: str, run_id: str, controller: str, minutes: int = 60) -> None:
    code, facts, messages = run_direct(lab, transport, "lock", RunId=run_id, Action="take", Controller=controller,
                                       ExpiresMinutes=minutes)
    assert code == 0, messages


def host_of(lab: Lab) -> Host:
    return lab.host(lab.endpoints[0].name)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_clock_stepped_hours_forward_does_not_end_a_live_lease(tmp_path, transport) -> None:
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        host = host_of(lab)
        take(lab, transport, "20261129-080000-aaaa", OTHER)
        lab.call(lambda: setattr(host.state, "clock_skew_seconds", host.state.clock_skew_seconds + 5 * HOURS))
        summary, _ = repair(lab, tmp_path / "s", transport)
        sent = lab.call(lambda: list(host.state.scripts_run))
    cause = summary.causes[host.name]
    assert summary.outcomes[host.name] == "skipped", cause
    assert "run 20261129-080000-aaaa from controller 5eed0fca11ed@other-controller holds the host lock" in cause
    assert "lease ends 60 min after its last renewal" in cause
    assert "verify" not in sent  # the host was left to its holder


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_clock_stepped_back_does_not_prolong_a_lease_that_ran_out(tmp_path, transport) -> None:
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        host = host_of(lab)
        take(lab, transport, "20261129-080000-aaaa", OTHER)

        def an_hour_passes_and_the_clock_steps_back(h: Host = host) -> None:
            h.state.uptime_extra_seconds += 61 * 60
            h.state.clock_skew_seconds -= 5 * HOURS

        lab.call(an_hour_passes_and_the_clock_steps_back)
        summary, _ = repair(lab, tmp_path / "s", transport)
        left = lab.call(lambda: host.state.lock)
    # taken over and worked (sync-time sets the stepped clock right), then released
    assert summary.outcomes[host.name] in ("healthy", "repaired"), summary.causes[host.name]
    assert left is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_lease_renewed_before_a_restart_runs_on_in_the_new_boot(tmp_path, transport) -> None:
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        host = host_of(lab)
        take(lab, transport, "20261129-080000-aaaa", OTHER)

        def restart_and_step_the_clock(h: Host = host) -> None:
            h.boot()  # the counter starts again from zero, the volatile boot id is gone
            h.state.clock_skew_seconds += 5 * HOURS

        lab.call(restart_and_step_the_clock)
        held, _ = repair(lab, tmp_path / "first", transport)
        lab.call(lambda: setattr(host.state, "uptime_extra_seconds", 61 * 60))  # up longer than the lease
        free, _ = repair(lab, tmp_path / "second", transport)
    assert held.outcomes[host.name] == "skipped", held.causes[host.name]
    assert free.outcomes[host.name] in ("healthy", "repaired"), free.causes[host.name]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_same_run_from_another_controller_is_told_who_holds_the_host(tmp_path, transport) -> None:
    run_id = "20261129-090000-bbbb"
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        host = host_of(lab)
        take(lab, transport, run_id, OTHER)  # a copy of this run, resumed on another machine
        summary, _ = repair(lab, tmp_path / "s", transport, run_id=run_id)
        sent = lab.call(lambda: list(host.state.scripts_run))
        left = lab.call(lambda: dict(host.state.lock or {}))
    cause = summary.causes[host.name]
    assert summary.outcomes[host.name] == "skipped", cause
    assert f"run {run_id} from controller {OTHER} holds the host lock" in cause
    assert "verify" not in sent
    assert left["controller"] == OTHER  # its lock is left to it, not released by us


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_resume_from_the_same_controller_reclaims_its_lock(tmp_path, transport) -> None:
    run_id = "20261129-090000-cccc"
    state_dir = tmp_path / "s"
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        host = host_of(lab)
        take(lab, transport, run_id, controller_identity(state_dir))  # left by this controller before a kill
        summary, _ = repair(lab, state_dir, transport, run_id=run_id)
        left = lab.call(lambda: host.state.lock)
    assert summary.outcomes[host.name] == "healthy", summary.causes[host.name]
    assert left is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_lease_is_renewed_as_each_rung_begins_and_outlives_the_host_timeout(tmp_path, transport) -> None:
    with Lab(scenario="corrupt-download-cache", hosts=1, time_scale=LAB_SCALE) as lab:
        host = host_of(lab)
        summary, seen = repair(lab, tmp_path / "s", transport)
    assert summary.outcomes[host.name] == "repaired", summary.causes[host.name]
    locks = [e for e in seen if isinstance(e, ev.StepFinished) and e.step == "lock"]
    renewals = [e.facts["holder"] for e in locks if e.facts.get("action") == "renew"]
    assert renewals, [e.facts.get("action") for e in locks]
    assert [h["renewals"] for h in renewals] == list(range(1, len(renewals) + 1))
    host_timeout_minutes = demo_options(tmp_path).host_timeout / 60
    assert all(h["lease_minutes"] > host_timeout_minutes for h in renewals)
    assert len({h["controller"] for h in renewals}) == 1


def test_a_controller_keeps_one_identity_per_state_dir_and_another_dir_is_another(tmp_path, monkeypatch) -> None:
    import re
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "ops laptop\u202e;rm")  # whatever the machine is called
    first = controller_identity(tmp_path / "a")
    assert controller_identity(tmp_path / "a") == first  # a resume from the same state dir is the same controller
    assert controller_identity(tmp_path / "b") != first  # another state dir is another controller
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}", first), first  # what lock.ps1's -Controller accepts
    assert first.endswith("@ops-laptop--rm")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_renewal_refused_between_rungs_stops_the_host_before_the_next_rung_runs(tmp_path, transport) -> None:
    """Another controller took the host between two rungs: the next rung's renewal is refused (in the
    rung's own pipeline over PSRP, on its own over WinRS), and that rung never runs."""
    with Lab(scenario="corrupt-download-cache", hosts=1, time_scale=LAB_SCALE) as lab:
        host = host_of(lab)
        seen: list[Event] = []
        ran_before: list[str] = []

        def steal(event: Event) -> None:
            seen.append(event)
            if (isinstance(event, ev.StepFinished) and event.step.startswith("troubleshooter") and not ran_before):
                ran_before.extend(lab.call(lambda: list(host.state.scripts_run)))
                lab.call(lambda: setattr(host.state, "lock", None))  # its lease ended, say, and another took it
                take(lab, transport, "20261129-100000-dddd", OTHER)

        summary = Runner(demo_hosts(lab, transport), demo_options(tmp_path / "s"), subscribers=[steal]).run()
        ran = lab.call(lambda: list(host.state.scripts_run))
    cause = summary.causes[host.name]
    assert ran_before, [e.step for e in seen if isinstance(e, ev.StepFinished)]
    assert summary.outcomes[host.name] == "failed", cause
    assert "the host lock was taken by another controller while this run worked the host" in cause
    after = ran[len(ran_before):]
    assert "reset-components" not in after, after  # the rung the renewal led never ran
    refused = [e for e in seen if isinstance(e, ev.StepFinished) and e.step == "lock" and e.exit_code == 4]
    assert refused  # the refused renewal is in the journal with its own result
