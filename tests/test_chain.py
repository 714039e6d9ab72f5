"""A rung and the diagnose after it travel in one PSRP pipeline (issue 17 item 3): _psrp_chain.ps1 runs
them one after another, Complete-WuStep ends each without ending the pipeline, and each keeps its own
result, transcript and events.  Counted on the lab's listener, not timed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_settings

from wuremote import events as ev
from wuremote.contract.scripts import get_script
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner
from wuremote.inventory import HostConfig
from wuremote.lab.lab import Endpoint, Lab
from wuremote.secret import Secret
from wuremote.transport import open_transport

RUNG_TARGET = 5  # Command, Receive(s), Signal for the rung and its diagnose together


class Requests:
    """The lab's request count for each host as each step starts and finishes."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.events: list[tuple[Any, int]] = []

    def __call__(self, event: Any) -> None:
        if isinstance(event, (ev.StepStarted, ev.StepFinished)):
            self.events.append((event, self.lab.requests_served(event.host)))


@pytest.mark.parametrize("scenario", ["corrupt-download-cache", "av-interference"])
def test_a_rung_and_the_diagnose_after_it_cost_one_request_sequence(tmp_path: Path, scenario: str) -> None:
    with Lab(scenario=scenario, hosts=1, time_scale=0.002) as lab:
        seen = Requests(lab)
        summary = Runner(demo_hosts(lab), demo_options(tmp_path), subscribers=[seen]).run()
    host = next(iter(summary.outcomes))
    assert summary.outcomes[host] == "repaired", summary.causes
    started = {}
    rungs = []
    # A later rung's lease renewal travels in its pipeline too; its events come after the rung's end.
    events = [(event, served) for event, served in seen.events if event.step != "lock"]
    for index, (event, served) in enumerate(events):
        if isinstance(event, ev.StepStarted):
            started[event.step] = served
            continue
        script = get_script(event.step.partition(":")[0])
        if script.meta.detached or event.step in ("lock", "diagnose", "verify", "av-resume", "clean-boot-restore"):
            continue  # a detached rung is polled on its own; the others here are not rungs
        after = events[index + 1:index + 3]
        # The diagnose still has its own StepStarted and StepFinished, with its facts and transcript.
        assert [(type(e).__name__, e.step) for e, _ in after] == [("StepStarted", "diagnose"), ("StepFinished", "diagnose")]
        finished = after[1][0]
        assert finished.status == "ok" and finished.facts and finished.transcript
        rungs.append((event.step, after[1][1] - started[event.step]))
    assert rungs and all(cost <= RUNG_TARGET for _, cost in rungs), repr(rungs)


def test_a_later_rungs_lease_renewal_travels_in_its_pipeline(tmp_path: Path) -> None:
    """Each rung after the first renews the host lock first: in the rung's own pipeline over PSRP, so a
    rung with its renewal and its diagnose still costs one request sequence, counted from the end of the
    step before it; the renewal keeps its own events (the lease's facts), written after the rung's end
    as the diagnose's are, so the journal never has two steps open at once (what resume reads)."""
    with Lab(scenario="corrupt-download-cache", hosts=1, time_scale=0.002) as lab:
        seen = Requests(lab)
        summary = Runner(demo_hosts(lab), demo_options(tmp_path), subscribers=[seen]).run()
    host = next(iter(summary.outcomes))
    assert summary.outcomes[host] == "repaired", summary.causes
    renewals = [e for e, _ in seen.events if isinstance(e, ev.StepFinished) and e.step == "lock"
                and e.facts.get("action") == "renew"]
    assert renewals and all(e.status == "ok" for e in renewals)
    open_step = None
    for event, _ in seen.events:
        if isinstance(event, ev.StepStarted):
            assert open_step is None, f"{event.step} started while {open_step} was open"
            open_step = event.step
        elif isinstance(event, ev.StepFinished):
            assert open_step == event.step, (open_step, event.step)
            open_step = None
    last_end, rungs, rung, begun, costs = 0, 0, "", None, []
    for event, served in seen.events:
        if isinstance(event, ev.StepFinished) and not any(event is renewal for renewal in renewals):
            if event.step == "diagnose" and begun is not None:
                costs.append((rung, served - begun))
                begun = None
            last_end = served
        elif isinstance(event, ev.StepStarted) and event.step not in ("lock", "diagnose", "verify") \
                and not get_script(event.step.partition(":")[0]).meta.detached:
            rungs += 1
            rung = event.step
            begun = last_end if rungs > 1 else None  # the first rung's lease came with the take
    assert costs and all(cost <= RUNG_TARGET for _, cost in costs), repr(costs)


@pytest.fixture(scope="module")
def chlab() -> Iterator[Lab]:
    with Lab(hosts=1, scenario="healthy", time_scale=0.001) as running:
        yield running


def psrp(endpoint: Endpoint) -> Any:
    return open_transport(HostConfig(name=endpoint.name, address=endpoint.address, port=endpoint.port,
                                     scheme=endpoint.scheme, transport="psrp", auth="basic",
                                     username=endpoint.username, password=Secret(endpoint.password),
                                     ca_file=endpoint.ca_file), fast_settings())


def test_a_chain_keeps_each_steps_result_and_stops_after_a_step_that_did_not_succeed(chlab: Lab) -> None:
    endpoint = chlab.endpoints[0]
    client = psrp(endpoint)
    take = (get_script("lock"), {"RunId": "chain-a", "Action": "take"})
    boot = (get_script("boot-info"), {"RunId": "chain-a"})
    try:
        both = client.run_chain([take, boot], timeout=30)
        held = client.run_chain([(get_script("lock"), {"RunId": "chain-b", "Action": "take"}), boot], timeout=30)
        client.run_step(get_script("lock"), {"RunId": "chain-a", "Action": "release"}, timeout=30)
    finally:
        client.close()
    assert [(r.step, r.exit_code) for r in both] == [("lock", 0), ("boot-info", 0)]
    assert both[1].facts["last_boot_utc"] and both[0].result is not both[1].result
    # Another run holds the lock: lock exits 4 (refused) and boot-info after it never runs.
    assert [(r.step, r.exit_code) for r in held] == [("lock", 4)]
    assert held[0].facts.get("holder")


def test_the_lock_the_boot_time_and_the_baseline_diagnose_travel_in_one_pipeline(tmp_path: Path) -> None:
    with Lab(scenario="healthy", hosts=1, time_scale=0.002) as lab:
        seen = Requests(lab)
        summary = Runner(demo_hosts(lab), demo_options(tmp_path), subscribers=[seen]).run()
    assert list(summary.outcomes.values()) == ["healthy"], summary.causes
    steps = [(type(event).__name__, event.step, served) for event, served in seen.events]
    assert [(kind, step) for kind, step, _ in steps[:4]] == [
        ("StepStarted", "lock"), ("StepFinished", "lock"), ("StepStarted", "diagnose"), ("StepFinished", "diagnose")]
    # Opening the pool (Create and its Receives), then one Command, its Receives and one Signal for all
    # three; one by one it was 13 requests (6 + 3 + 4).
    assert steps[3][2] - steps[0][2] <= 8, steps[:4]
    baseline = seen.events[3][0]
    assert baseline.status == "ok" and baseline.facts and baseline.transcript


class Everything(Requests):
    """Every event, with the lab's request count for its host when it came."""

    def __call__(self, event: Any) -> None:
        if isinstance(event, (ev.StepStarted, ev.StepFinished, ev.RebootStarted, ev.RebootFinished, ev.HostFinished)):
            self.events.append((event, self.lab.requests_served(event.host)))


def _end_of_host(seen: Everything) -> tuple[list[tuple[str, str]], int]:
    """The events after the last step before the host's end (its logs, the lock's release), and the requests
    from that step's end to the release's."""
    kinds = [(type(event).__name__, getattr(event, "step", None) or "") for event, _ in seen.events]
    release = max(i for i, kind in enumerate(kinds) if kind == ("StepFinished", "lock"))
    last = max(i for i, (kind, step) in enumerate(kinds[:release])
               if kind in ("StepFinished", "RebootFinished") and step not in ("collect-logs", "lock"))
    return kinds[last + 1:], seen.events[release][1] - seen.events[last][1]


@pytest.mark.parametrize(("scenario", "outcome", "logged"), [
    ("healthy", "healthy", False), ("component-store-needs-source", "needs-operator", True)])
def test_the_last_pending_check_the_logs_and_the_lock_release_travel_in_one_pipeline(
        tmp_path: Path, scenario: str, outcome: str, logged: bool) -> None:
    with Lab(scenario=scenario, hosts=1, time_scale=0.002) as lab:
        seen = Everything(lab)
        summary = Runner(demo_hosts(lab), demo_options(tmp_path), subscribers=[seen]).run()
        host = next(iter(lab.hosts))
        held = lab.call(lambda: lab.host(host).state.lock)
    assert list(summary.outcomes.values()) == [outcome], summary.causes
    after, requests = _end_of_host(seen)
    steps = [step for kind, step in after if kind == "StepStarted"]
    # Logs are collected while the lock is held, then the lock is released: one Command, its Receive(s)
    # and one Signal for boot-info, collect-logs and the release (RUNG_TARGET, as a rung and its diagnose);
    # one by one it was 6-8 requests (9-12 with the logs).
    assert steps == (["collect-logs", "lock"] if logged else ["lock"]), after
    assert requests <= RUNG_TARGET, (requests, after)
    assert held is None
    if logged:
        kept = [event for event, _ in seen.events if isinstance(event, ev.StepFinished) and event.step == "collect-logs"]
        assert kept[0].status == "ok" and kept[0].transcript


class PendingAfterVerify(Everything):
    """Sets a pending restart on the host as its (only) verify ends: the last pending check finds it."""

    def __call__(self, event: Any) -> None:
        super().__call__(event)
        if isinstance(event, ev.StepFinished) and event.step == "verify":
            self.lab.call(lambda: self.lab.host(event.host).state.pending_reboot.add("wu-reboot-required"))


def test_a_restart_pending_at_the_end_is_made_before_the_lock_is_released(tmp_path: Path) -> None:
    with Lab(scenario="healthy", hosts=1, time_scale=0.002) as lab:
        seen = PendingAfterVerify(lab)
        summary = Runner(demo_hosts(lab), demo_options(tmp_path), subscribers=[seen]).run()
        host = next(iter(lab.hosts))
        held = lab.call(lambda: lab.host(host).state.lock)
    assert list(summary.outcomes.values()) == ["healthy"], summary.causes
    kinds = [(type(event).__name__, getattr(event, "step", None) or "") for event, _ in seen.events]
    verify = kinds.index(("StepFinished", "verify"))
    # boot-info found the restart pending and stopped its pipeline: the host restarts holding the lock,
    # then the lock is released.
    assert kinds[verify + 1:verify + 5] == [("RebootStarted", ""), ("RebootFinished", ""),
                                            ("StepStarted", "lock"), ("StepFinished", "lock")], kinds
    assert held is None
