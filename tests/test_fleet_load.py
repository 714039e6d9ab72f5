"""A fleet on a busy controller: requests follow what happens on the hosts, stay within the
controller's request slots, and a controller that falls behind never fails a host that is fine.

All against the lab (real HTTPS and PSRP); no figure here depends on how fast the machine is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from conftest import MovableClock, wait_for

from wuremote import events as ev
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner
from wuremote.events import Event
from wuremote.lab.lab import Lab

LAB_SCALE = 0.005  # a 20-minute DISM lasts 6 s


def _polls(received: list[Any], step: str) -> list[dict[str, Any]]:
    """The detached-poll calls the lab answered for one detached step (detached-start carries a Payload)."""
    return [k.params for k in received if k.params.get("Step") == step and "TranscriptOffset" in k.params]


def test_a_long_step_costs_a_poll_per_change_not_per_interval(tmp_path, received) -> None:
    """DISM's ten progress marks cost about ten polls: each poll waits on the host for the next one.

    Polled from the controller every 50 ms, as before, the same DISM cost a poll per interval
    (over a hundred here)."""
    seen: list[Event] = []
    with Lab(scenario="component-store-corrupt", hosts=1, time_scale=LAB_SCALE) as lab:
        base = demo_options(tmp_path)
        options = replace(base, time_scale=LAB_SCALE, poll_interval=0.05,
                          transport=replace(base.transport, operation_timeout=20, read_timeout=30))
        summary = Runner(demo_hosts(lab), options, subscribers=[seen.append]).run()
    host = lab.endpoints[0].name
    assert summary.outcomes[host] == "repaired", summary.causes[host]
    changes = {e.percent for e in seen if isinstance(e, ev.StepProgress) and e.step == "dism"}
    polls = _polls(received, "dism")
    assert len(changes) >= 5
    # One poll per change seen, one that finds it finished, one for the first wait: a small constant.
    assert len(polls) <= len(changes) + 3, (len(polls), sorted(changes))
    assert all(p["WaitSeconds"] > 0 for p in polls[:-1])


def test_requests_in_flight_never_exceed_the_controllers_limit(tmp_path) -> None:
    """Twelve hosts worked on at once, each answer a little slow (so requests overlap in the lab),
    two request slots: the lab never answers more than two requests at once, and every host
    still ends as it should.  With a thread per host sending at will, all twelve overlap."""
    scenario = tmp_path / "slow.toml"
    scenario.write_text('[[hosts]]\nscenario = "healthy"\nname = "slow"\ncount = 12\n'
                        "[hosts.faults]\nslow_seconds = 0.1\n", encoding="utf-8")
    with Lab(scenario=scenario, time_scale=LAB_SCALE) as lab:
        base = demo_options(tmp_path, command="check")
        options = replace(base, forks=12, transport=replace(base.transport, max_requests=2))
        summary = Runner(demo_hosts(lab), options).run()
        peak = lab.call(lambda: lab.in_flight.peak)
    assert set(summary.outcomes.values()) == {"checked"}, summary.causes
    assert 1 <= peak <= 2


def test_a_controller_that_falls_behind_still_ends_each_host_as_it_should(tmp_path, monkeypatch) -> None:
    """The controller falls behind twice by more than a step's timeout: right after the pool opens
    (before lock, a 5 s step here, is sent), and while DISM runs (the host finishes it meanwhile).
    The host was never slow: it ends repaired, as its scenario says, not with "did not finish
    within" or "still running after its timeout"."""
    from wuremote.engine import detached, steps
    from wuremote.transport import common

    clock = MovableClock()
    for module in (common, detached, steps):
        monkeypatch.setattr(module, "time", clock)
    behind: list[str] = []

    def falls_behind(event: Event) -> None:
        if isinstance(event, ev.SessionOpened) and "session" not in behind:
            behind.append("session")
            clock.skipped += 60.0  # lock's timeout is 5 s
        elif isinstance(event, ev.StepProgress) and event.step == "dism" and "dism" not in behind:
            behind.append("dism")
            # Held until the host has finished DISM, and for longer than DISM's timeout by its clock.
            model = lab.host(lab.endpoints[0].name)
            wait_for(lambda: lab.call(lambda: model.state.component_store == "healthy"), what="DISM to finish")
            clock.skipped += 400.0  # DISM's is 7200 s x 0.04 = 288 s; --host-timeout is an hour

    with Lab(scenario="component-store-corrupt", hosts=1, time_scale=LAB_SCALE) as lab:
        options = replace(demo_options(tmp_path), host_timeout=3600.0)
        summary = Runner(demo_hosts(lab), options, subscribers=[falls_behind]).run()
    host = lab.endpoints[0].name
    assert behind == ["session", "dism"]
    assert summary.outcomes[host] == "repaired", summary.causes[host]


def test_a_call_that_waited_before_the_host_ran_it_is_no_clock_skew(tmp_path, monkeypatch) -> None:
    """Diagnose's ControllerUtc is stamped when the call is made, not when the host runs it: a call
    queued for a request slot on a busy controller, or chained behind a rung, made a host in sync
    look minutes ahead, and sync-time ran on a healthy host (1 of 1,000 with a CPU hog beside the
    fleet). Here every stamp is ten minutes old, as if each call had waited that long."""
    import datetime as dt

    from wuremote.engine import walk

    def stale() -> str:
        return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    monkeypatch.setattr(walk, "iso_now", stale)
    seen: list[Event] = []
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        summary = Runner(demo_hosts(lab), demo_options(tmp_path), subscribers=[seen.append]).run()
    host = lab.endpoints[0].name
    assert summary.outcomes[host] == "healthy", summary.causes[host]
    assert not [e for e in seen if isinstance(e, ev.StepStarted) and e.step == "sync-time"]
